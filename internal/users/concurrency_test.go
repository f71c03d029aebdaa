package users

import (
	"bytes"
	"context"
	"fmt"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// maxWriteLatency is how long a single write may take while readers run.
// Writes hold the lock for milliseconds; this is generous.
const maxWriteLatency = 2 * time.Second

// readerLoop calls w.Current until stop is closed and reports the first few
// errors, the number of calls and whether Gen ever went backwards.
type readerLoop struct {
	w      *Watcher
	calls  atomic.Int64
	mu     sync.Mutex
	errs   []error
	nerrs  int
	lastGn uint64
}

func (r *readerLoop) run(ctx context.Context, stop <-chan struct{}, wg *sync.WaitGroup) {
	defer wg.Done()
	for {
		select {
		case <-stop:
			return
		default:
		}
		s, err := r.w.Current(ctx)
		r.calls.Add(1)
		r.mu.Lock()
		if err != nil {
			r.nerrs++
			if len(r.errs) < 5 {
				r.errs = append(r.errs, err)
			}
		}
		if s == nil {
			r.nerrs++
			if len(r.errs) < 5 {
				r.errs = append(r.errs, fmt.Errorf("nil snapshot"))
			}
		} else {
			if s.Gen < r.lastGn {
				r.nerrs++
				if len(r.errs) < 5 {
					r.errs = append(r.errs, fmt.Errorf("Gen went backwards: %d -> %d", r.lastGn, s.Gen))
				}
			}
			r.lastGn = s.Gen
		}
		r.mu.Unlock()
	}
}

// checkMatchesList asserts that the watcher's current snapshot equals List.
func checkMatchesList(t *testing.T, w *Watcher, path string) {
	t.Helper()
	s := mustCurrent(t, w)
	us := mustList(t, path)
	if s.Len() != len(us) {
		t.Errorf("snapshot has %d users, List %d", s.Len(), len(us))
	}
	for _, u := range us {
		got, ok := s.Lookup(u.Name)
		if !ok {
			t.Errorf("snapshot lacks %q", u.Name)
			continue
		}
		if got.Admin != u.Admin || !bytes.Equal(got.Hash, u.Hash) || !got.Created.Equal(u.Created) || !got.Updated.Equal(u.Updated) {
			t.Errorf("snapshot %q = %+v, List %+v", u.Name, got, u)
		}
	}
}

// TestConcurrentReadersAndWriter runs watchers in tight loops while a writer
// makes 30 changes, each with its own open of the database, as separate
// processes would.
func TestConcurrentReadersAndWriter(t *testing.T) {
	ctx := context.Background()
	path := testDB(t)
	hashes := [][]byte{testHash(t, "one"), testHash(t, "two"), testHash(t, "three")}
	for _, n := range []string{"alice", "bob", "carol"} {
		mustPut(t, path, n, hashes[0], false)
	}

	shared := mustWatcher(t, path)
	own := mustWatcher(t, path)
	readers := []*readerLoop{{w: shared}, {w: shared}, {w: shared}, {w: own}}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for _, r := range readers {
		wg.Add(1)
		go r.run(ctx, stop, &wg)
	}

	var writeErrs []error
	var slowest time.Duration
	names := []string{"alice", "bob", "carol"}
	for i := 0; i < 30; i++ {
		name := names[i%len(names)]
		start := time.Now()
		var err error
		if i%2 == 0 {
			_, err = Put(ctx, path, name, hashes[i%len(hashes)], i%5 == 0)
		} else {
			_, err = Toggle(ctx, path, names[(i/2)%len(names)])
		}
		d := time.Since(start)
		if d > slowest {
			slowest = d
		}
		if err != nil {
			writeErrs = append(writeErrs, fmt.Errorf("op %d: %w", i, err))
		}
		if d > maxWriteLatency {
			t.Errorf("op %d took %v with readers looping, want < %v", i, d, maxWriteLatency)
		}
	}
	close(stop)
	wg.Wait()
	t.Logf("slowest write %v", slowest)

	for _, err := range writeErrs {
		t.Errorf("writer: %v", err)
	}
	for i, r := range readers {
		if r.nerrs > 0 {
			t.Errorf("reader %d: %d errors in %d calls, first: %v", i, r.nerrs, r.calls.Load(), r.errs)
		}
		if r.calls.Load() == 0 {
			t.Errorf("reader %d never ran", i)
		}
	}
	checkMatchesList(t, shared, path)
	checkMatchesList(t, own, path)
}

// TestConcurrentFirstCreate starts the readers before the database exists,
// so that they race with the writer that creates it.
func TestConcurrentFirstCreate(t *testing.T) {
	ctx := context.Background()
	h := testHash(t, "pw")
	for round := 0; round < 30; round++ {
		path := filepath.Join(t.TempDir(), "auth", FileName)
		w := mustWatcher(t, path)
		readers := []*readerLoop{{w: w}, {w: w}, {w: mustWatcher(t, path)}}
		stop := make(chan struct{})
		var wg sync.WaitGroup
		for _, r := range readers {
			wg.Add(1)
			go r.run(ctx, stop, &wg)
		}
		time.Sleep(time.Millisecond)
		start := time.Now()
		_, err := Put(ctx, path, "alice", h, false)
		d := time.Since(start)
		if d > maxWriteLatency {
			t.Errorf("round %d: first Put took %v", round, d)
		}
		if err != nil {
			t.Errorf("round %d: Put: %v", round, err)
		}
		// Let the readers observe the new file.
		time.Sleep(2 * time.Millisecond)
		close(stop)
		wg.Wait()
		for i, r := range readers {
			if r.nerrs > 0 {
				t.Fatalf("round %d reader %d: %d errors in %d calls (first Put took %v), first: %v", round, i, r.nerrs, r.calls.Load(), d, r.errs)
			}
		}
		checkMatchesList(t, w, path)
		checkMatchesList(t, readers[2].w, path)
	}
}

// TestWriterNotStarvedByFailingReloads: while a record is corrupt every
// Current call retries the reload, i.e. opens the file. The repair (Remove by
// manage-user) must still get the lock promptly.
func TestWriterNotStarvedByFailingReloads(t *testing.T) {
	ctx := context.Background()
	path := testDB(t)
	writeCorrupt(t, path, "mallory")

	// Three sidecar processes, each with its own watcher serving requests
	// concurrently. NewWatcher would fail on the corrupt file, so start
	// them as if they had loaded the store before it went bad.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var readers []*readerLoop
	for i := 0; i < 3; i++ {
		w := &Watcher{path: path, now: time.Now}
		w.cur.Store(&watched{snap: &Snapshot{users: map[string]User{}}})
		readers = append(readers, &readerLoop{w: w}, &readerLoop{w: w})
	}
	for _, r := range readers {
		wg.Add(1)
		go r.run(ctx, stop, &wg)
	}
	time.Sleep(20 * time.Millisecond)

	start := time.Now()
	err := Remove(ctx, path, "mallory")
	d := time.Since(start)
	close(stop)
	wg.Wait()
	var calls int64
	for _, r := range readers {
		calls += r.calls.Load()
	}
	t.Logf("Remove took %v; readers made %d calls", d, calls)
	if err != nil {
		t.Errorf("Remove while readers retry: %v (after %v)", err, d)
	}
	if d > maxWriteLatency {
		t.Errorf("Remove took %v while readers retried a failing reload, want < %v", d, maxWriteLatency)
	}
	if err == nil {
		checkMatchesList(t, readers[0].w, path)
	}
}
