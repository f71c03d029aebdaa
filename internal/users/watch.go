package users

import (
	"bytes"
	"context"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mreg-dev/mreg/internal/fileid"
)

// Snapshot is an immutable view of the user store at one moment.
type Snapshot struct {
	users map[string]User
	// Gen increases with every reload; caches keyed on it are dropped
	// whenever the store changes.
	Gen uint64
}

// Lookup returns the user called name.
func (s *Snapshot) Lookup(name string) (User, bool) {
	u, ok := s.users[name]
	return u, ok
}

// Len is the number of users.
func (s *Snapshot) Len() int { return len(s.users) }

// Names returns the user names, sorted.
func (s *Snapshot) Names() []string {
	out := make([]string, 0, len(s.users))
	for n := range s.users {
		out = append(out, n)
	}
	slices.Sort(out)
	return out
}

const (
	// racyWindow: a file modified this recently when it was read may be
	// modified again within the same timestamp tick (coarse file system
	// clocks tick every 1–10 ms) without its stat changing. Such a
	// snapshot is re-read until the modification is older than this; the
	// same problem and remedy as git's "racily clean" index entries.
	racyWindow = 100 * time.Millisecond
	// retryAfter: after a failed reload of an unchanged file, wait this
	// long before trying again, so that failing readers do not crowd out
	// the writer that would repair the file.
	retryAfter = time.Second
	// readLockWait bounds how long a reload waits for a writer's lock.
	// Writers hold it for milliseconds (they hash before opening).
	readLockWait = time.Second
)

// Watcher keeps the users in memory and re-reads the file, with a short
// read-only transaction, whenever a stat shows it changed. A stat costs about
// a microsecond, so it runs on every request and a change made by
// manage-user is in force on the very next one.
type Watcher struct {
	path     string
	now      func() time.Time
	mu       sync.Mutex // serialises reloads
	cur      atomic.Pointer[watched]
	onChange func(before, after *Snapshot)
}

// OnChange registers fn to be called, under the reload lock, whenever a
// reload finds the users changed. Set it before concurrent use.
func (w *Watcher) OnChange(fn func(before, after *Snapshot)) { w.onChange = fn }

type watched struct {
	snap *Snapshot
	info os.FileInfo // nil when the file did not exist
	// racy: the file was modified within racyWindow of being read.
	racy bool
	// failed: the reload of info failed at failedAt with err.
	failedInfo os.FileInfo
	failedAt   time.Time
	err        error
}

// NewWatcher returns a watcher of the database at path and loads it once.
func NewWatcher(ctx context.Context, path string) (*Watcher, error) {
	w := &Watcher{path: path, now: time.Now}
	w.cur.Store(&watched{snap: &Snapshot{users: map[string]User{}}})
	if _, err := w.Current(ctx); err != nil {
		return nil, err
	}
	return w, nil
}

// Path is the database file being watched.
func (w *Watcher) Path() string { return w.path }

// Current returns the up-to-date snapshot. When the file changed but cannot
// be read, it returns the previous snapshot together with the error and
// tries again when the file changes or after a second. A file locked by a
// writer has, by definition, not committed its change yet, so the previous
// snapshot is still the truth.
func (w *Watcher) Current(ctx context.Context) (*Snapshot, error) {
	info, err := fileid.Stat(w.path)
	if err != nil {
		return w.cur.Load().snap, err
	}
	if snap, done, err := w.unchanged(info); done {
		return snap, err
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if snap, done, err := w.unchanged(info); done {
		return snap, err
	}
	cur := w.cur.Load()
	readAt := w.now()
	m := map[string]User{}
	if info != nil && info.Size() > 0 {
		// A zero-length file is one a writer has just created and not
		// yet initialised: no users yet.
		if m, err = readAll(ctx, w.path, readLockWait); err != nil {
			failed := *cur
			failed.failedInfo, failed.failedAt, failed.err = info, readAt, err
			w.cur.Store(&failed)
			return cur.snap, err
		}
	}
	racy := info != nil && readAt.Sub(info.ModTime()) < racyWindow
	snap := cur.snap
	if !sameUsers(snap.users, m) {
		snap = &Snapshot{users: m, Gen: cur.snap.Gen + 1}
	}
	next := &watched{snap: snap, info: info, racy: racy}
	w.cur.Store(next)
	if snap != cur.snap && w.onChange != nil {
		w.onChange(cur.snap, snap)
	}
	return next.snap, nil
}

// sameUsers reports whether two reads hold the same users, so a re-read
// that found nothing new keeps the snapshot (and the credential cache).
func sameUsers(a, b map[string]User) bool {
	if len(a) != len(b) {
		return false
	}
	for name, u := range a {
		v, ok := b[name]
		if !ok || u.Admin != v.Admin || !bytes.Equal(u.Hash, v.Hash) || !u.Updated.Equal(v.Updated) {
			return false
		}
	}
	return true
}

// unchanged reports (done=true) when the current snapshot can be returned
// without a reload: the file is as it was read and not racily so, or it is
// as it was when a reload last failed, less than retryAfter ago.
func (w *Watcher) unchanged(info os.FileInfo) (*Snapshot, bool, error) {
	cur := w.cur.Load()
	if fileid.Same(cur.info, info) && !cur.racy {
		return cur.snap, true, nil
	}
	if cur.err != nil && fileid.Same(cur.failedInfo, info) && w.now().Sub(cur.failedAt) < retryAfter {
		return cur.snap, true, cur.err
	}
	return nil, false, nil
}
