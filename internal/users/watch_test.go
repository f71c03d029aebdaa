package users

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

func mustWatcher(t testing.TB, path string) *Watcher {
	t.Helper()
	w, err := NewWatcher(context.Background(), path)
	if err != nil {
		t.Fatalf("NewWatcher: %v", err)
	}
	return w
}

func mustCurrent(t testing.TB, w *Watcher) *Snapshot {
	t.Helper()
	s, err := w.Current(context.Background())
	if err != nil {
		t.Fatalf("Current: %v", err)
	}
	if s == nil {
		t.Fatalf("Current returned a nil snapshot")
	}
	return s
}

func TestWatcherMissingFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "auth", FileName)
	w := mustWatcher(t, path)
	if w.Path() != path {
		t.Errorf("Path = %q", w.Path())
	}
	s := mustCurrent(t, w)
	if s.Len() != 0 {
		t.Errorf("Len = %d on a missing file", s.Len())
	}
	if _, ok := s.Lookup("alice"); ok {
		t.Errorf("Lookup found a user in a missing file")
	}
	if s2 := mustCurrent(t, w); s2 != s || s2.Gen != s.Gen {
		t.Errorf("unchanged missing file produced a new snapshot (gen %d -> %d)", s.Gen, s2.Gen)
	}
	if _, err := os.Stat(filepath.Dir(path)); !os.IsNotExist(err) {
		t.Errorf("watcher created the auth directory")
	}

	// The file appears.
	mustPut(t, path, "alice", testHash(t, "pw"), false)
	s3 := mustCurrent(t, w)
	if s3.Gen <= s.Gen {
		t.Errorf("Gen did not increase when the file appeared: %d -> %d", s.Gen, s3.Gen)
	}
	if _, ok := s3.Lookup("alice"); !ok || s3.Len() != 1 {
		t.Errorf("new file not loaded: len %d", s3.Len())
	}
}

func TestWatcherUnchangedKeepsSnapshot(t *testing.T) {
	path := testDB(t)
	mustPut(t, path, "alice", testHash(t, "pw"), false)
	w := mustWatcher(t, path)
	s := mustCurrent(t, w)
	for i := 0; i < 100; i++ {
		if s2 := mustCurrent(t, w); s2 != s {
			t.Fatalf("call %d: new snapshot (gen %d -> %d) without a change", i, s.Gen, s2.Gen)
		}
	}
	// Reads and failed writes do not change the file, so do not reload.
	mustList(t, path)
	if _, err := Toggle(context.Background(), path, "nobody"); err == nil {
		t.Fatal("Toggle of unknown user succeeded")
	}
	if s2 := mustCurrent(t, w); s2 != s {
		t.Errorf("List/failed Toggle caused a reload (gen %d -> %d)", s.Gen, s2.Gen)
	}
}

func TestWatcherSnapshotIsImmutable(t *testing.T) {
	path := testDB(t)
	h := testHash(t, "pw")
	mustPut(t, path, "alice", h, false)
	w := mustWatcher(t, path)
	old := mustCurrent(t, w)
	if _, err := Toggle(context.Background(), path, "alice"); err != nil {
		t.Fatal(err)
	}
	mustPut(t, path, "bob", h, false)
	now := mustCurrent(t, w)
	if u, _ := old.Lookup("alice"); u.Admin {
		t.Errorf("old snapshot changed: alice is admin")
	}
	if _, ok := old.Lookup("bob"); ok || old.Len() != 1 {
		t.Errorf("old snapshot changed: bob visible")
	}
	if u, _ := now.Lookup("alice"); !u.Admin {
		t.Errorf("new snapshot: alice not admin")
	}
}

// TestWatcherSeesEveryChangeImmediately makes many changes back to back, each
// followed by one Current call, which must already reflect it. Toggles do not
// change the file size, so this checks that change detection has no
// timestamp-granularity hole.
func TestWatcherSeesEveryChangeImmediately(t *testing.T) {
	ctx := context.Background()
	path := testDB(t)
	h1, h2 := testHash(t, "one"), testHash(t, "two")
	mustPut(t, path, "alice", h1, false)
	w := mustWatcher(t, path)
	prev := mustCurrent(t, w)

	step := func(i int, what string, check func(s *Snapshot) error) {
		t.Helper()
		s := mustCurrent(t, w)
		if s.Gen <= prev.Gen {
			t.Fatalf("step %d (%s): Gen %d -> %d, change not seen", i, what, prev.Gen, s.Gen)
		}
		if err := check(s); err != nil {
			t.Fatalf("step %d (%s): %v", i, what, err)
		}
		prev = s
	}

	// 50 toggles.
	for i := 0; i < 50; i++ {
		admin, err := Toggle(ctx, path, "alice")
		if err != nil {
			t.Fatal(err)
		}
		step(i, "toggle", func(s *Snapshot) error {
			u, ok := s.Lookup("alice")
			if !ok || u.Admin != admin {
				return fmt.Errorf("alice admin = %v (found %v), want %v", u.Admin, ok, admin)
			}
			return nil
		})
	}

	// 30 password changes of the same length.
	for i := 0; i < 30; i++ {
		h := h1
		if i%2 == 0 {
			h = h2
		}
		mustPut(t, path, "alice", h, false)
		step(i, "put", func(s *Snapshot) error {
			if u, _ := s.Lookup("alice"); !bytes.Equal(u.Hash, h) {
				return fmt.Errorf("stale hash")
			}
			return nil
		})
	}

	// 20 create/remove cycles.
	for i := 0; i < 20; i++ {
		mustPut(t, path, "bob", h1, false)
		step(i, "create", func(s *Snapshot) error {
			if _, ok := s.Lookup("bob"); !ok || s.Len() != 2 {
				return fmt.Errorf("bob missing, len %d", s.Len())
			}
			return nil
		})
		if err := Remove(ctx, path, "bob"); err != nil {
			t.Fatal(err)
		}
		step(i, "remove", func(s *Snapshot) error {
			if _, ok := s.Lookup("bob"); ok || s.Len() != 1 {
				return fmt.Errorf("bob still present, len %d", s.Len())
			}
			return nil
		})
	}
}

// TestWatcherSameTickChange simulates a filesystem with coarse timestamps
// (one clock tick, 1-10 ms, on kernels and filesystems without fine-grained
// or "multigrain" timestamps): a change committed in the same tick as the
// previous one leaves size, inode and mtime as they were.
func TestWatcherSameTickChange(t *testing.T) {
	ctx := context.Background()
	path := testDB(t)
	mustPut(t, path, "alice", testHash(t, "pw"), false)
	w := mustWatcher(t, path)
	before, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	s0 := mustCurrent(t, w)

	if _, err := Toggle(ctx, path, "alice"); err != nil {
		t.Fatal(err)
	}
	after, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if after.Size() != before.Size() {
		t.Skipf("toggle changed the file size (%d -> %d); scenario not reproducible", before.Size(), after.Size())
	}
	// Same tick: the write leaves the mtime unchanged.
	if err := os.Chtimes(path, time.Time{}, before.ModTime()); err != nil {
		t.Fatal(err)
	}

	s := mustCurrent(t, w)
	if u, _ := s.Lookup("alice"); !u.Admin || s.Gen == s0.Gen {
		t.Errorf("a toggle committed within one mtime tick of the last load is invisible: alice admin=%v, gen %d -> %d", u.Admin, s0.Gen, s.Gen)
	}
}

func TestWatcherFileDeleted(t *testing.T) {
	path := testDB(t)
	mustPut(t, path, "alice", testHash(t, "pw"), true)
	w := mustWatcher(t, path)
	s := mustCurrent(t, w)
	if s.Len() != 1 {
		t.Fatalf("Len = %d", s.Len())
	}
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	s2 := mustCurrent(t, w)
	if s2.Len() != 0 {
		t.Errorf("deleted file: Len = %d, want 0", s2.Len())
	}
	if _, ok := s2.Lookup("alice"); ok {
		t.Errorf("deleted file: alice still found")
	}
	if s2.Gen <= s.Gen {
		t.Errorf("deleted file: Gen %d -> %d, want an increase", s.Gen, s2.Gen)
	}
	if s3 := mustCurrent(t, w); s3 != s2 {
		t.Errorf("still-missing file produced a new snapshot")
	}

	// Re-created.
	mustPut(t, path, "bob", testHash(t, "pw"), false)
	s4 := mustCurrent(t, w)
	if s4.Gen <= s2.Gen || s4.Len() != 1 {
		t.Errorf("re-created file: gen %d -> %d, len %d", s2.Gen, s4.Gen, s4.Len())
	}
	if _, ok := s4.Lookup("bob"); !ok {
		t.Errorf("re-created file: bob not found")
	}
}

func TestWatcherFileReplaced(t *testing.T) {
	// Replacing the file (rename over it, as a restore or a Kubernetes
	// secret/configmap swap would) is a change even with equal size and mtime.
	dir := t.TempDir()
	path := filepath.Join(dir, FileName)
	other := filepath.Join(dir, "other.db")
	h := testHash(t, "pw")
	mustPut(t, path, "alice", h, false)
	mustPut(t, other, "alice", h, true)
	w := mustWatcher(t, path)
	s := mustCurrent(t, w)
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(other, time.Time{}, fi.ModTime()); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(other, path); err != nil {
		t.Fatal(err)
	}
	s2 := mustCurrent(t, w)
	if u, _ := s2.Lookup("alice"); !u.Admin || s2.Gen <= s.Gen {
		t.Errorf("replaced file not reloaded: admin=%v gen %d -> %d", u.Admin, s.Gen, s2.Gen)
	}
}

func TestWatcherKeepsSnapshotOnError(t *testing.T) {
	ctx := context.Background()
	path := testDB(t)
	mustPut(t, path, "bob", testHash(t, "pw"), false)
	w := mustWatcher(t, path)
	s := mustCurrent(t, w)

	writeCorrupt(t, path, "mallory")
	got, err := w.Current(ctx)
	if err == nil {
		t.Fatalf("Current after corruption: no error")
	}
	if got != s {
		t.Errorf("Current after corruption did not return the previous snapshot")
	}

	// A cancelled context while a reload is due.
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if got, err := w.Current(cctx); err == nil || got != s {
		t.Errorf("cancelled Current: snapshot changed=%v err=%v", got != s, err)
	}

	// Once repaired, the next call loads it.
	if err := Remove(ctx, path, "mallory"); err != nil {
		t.Fatal(err)
	}
	s2 := mustCurrent(t, w)
	if s2.Gen <= s.Gen || s2.Len() != 2 {
		t.Errorf("after repair: gen %d -> %d, len %d", s.Gen, s2.Gen, s2.Len())
	}
}

// TestWatcherEmptyFile: a zero-length users.db is what a reader sees between a
// writer creating the file and initialising it (or after a writer died in
// between). It holds no users and must not be an error.
func TestWatcherEmptyFile(t *testing.T) {
	path := testDB(t)
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if us, err := List(context.Background(), path); err != nil || len(us) != 0 {
		t.Errorf("List on an empty file = %v, %v; want no users, no error", us, err)
	}
	w, err := NewWatcher(context.Background(), path)
	if err != nil {
		t.Fatalf("NewWatcher on an empty file: %v", err)
	}
	if s := mustCurrent(t, w); s.Len() != 0 {
		t.Errorf("Len = %d", s.Len())
	}
	// A writer can still initialise it.
	mustPut(t, path, "alice", testHash(t, "pw"), false)
	if s := mustCurrent(t, w); s.Len() != 1 {
		t.Errorf("after Put: Len = %d", s.Len())
	}
}

// TestWatcherCurrentHonoursContextWhileLocked: a writer holding the lock (a
// stuck or suspended manage-user) must not stall requests beyond their own
// deadline. The previous snapshot is still the truth (see Current's doc).
func TestWatcherCurrentHonoursContextWhileLocked(t *testing.T) {
	path := testDB(t)
	mustPut(t, path, "alice", testHash(t, "pw"), false)
	w := mustWatcher(t, path)
	s0 := mustCurrent(t, w)

	// "Another process" opens the database read-write and writes, but
	// keeps the lock.
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	err = db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketUsers).Put([]byte("zz"), []byte(`{}`))
	})
	if err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	s, err := w.Current(ctx)
	d := time.Since(start)
	if s != s0 {
		t.Errorf("Current while locked did not return the previous snapshot")
	}
	if err == nil {
		t.Errorf("Current while locked: no error")
	}
	if d > time.Second {
		t.Errorf("Current with a 200ms deadline blocked %v on a locked file (err %v)", d, err)
	}
}
