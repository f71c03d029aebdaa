package users

import (
	"context"
	"os"
	"sync"
	"sync/atomic"

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

// Watcher keeps the users in memory and re-reads the file, with a short
// read-only transaction, whenever a stat shows it changed. A stat costs about
// a microsecond, so it runs on every request and a change made by
// manage-user is in force on the very next one.
type Watcher struct {
	path string
	mu   sync.Mutex // serialises reloads
	cur  atomic.Pointer[watched]
}

type watched struct {
	snap *Snapshot
	info os.FileInfo // nil when the file did not exist
}

// NewWatcher returns a watcher of the database at path and loads it once.
func NewWatcher(ctx context.Context, path string) (*Watcher, error) {
	w := &Watcher{path: path}
	w.cur.Store(&watched{snap: &Snapshot{users: map[string]User{}}})
	if _, err := w.Current(ctx); err != nil {
		return nil, err
	}
	return w, nil
}

// Path is the database file being watched.
func (w *Watcher) Path() string { return w.path }

// Current returns the up-to-date snapshot. When the file changed but cannot
// be read, it returns the previous snapshot together with the error, and
// tries again on the next call. A file locked by a writer has, by
// definition, not committed its change yet, so the previous snapshot is
// still the truth.
func (w *Watcher) Current(ctx context.Context) (*Snapshot, error) {
	cur := w.cur.Load()
	info, err := fileid.Stat(w.path)
	if err != nil {
		return cur.snap, err
	}
	if fileid.Same(cur.info, info) {
		return cur.snap, nil
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	cur = w.cur.Load()
	if fileid.Same(cur.info, info) {
		return cur.snap, nil
	}
	m := map[string]User{}
	if info != nil {
		if m, err = readAll(ctx, w.path); err != nil {
			return cur.snap, err
		}
	}
	next := &watched{snap: &Snapshot{users: m, Gen: cur.snap.Gen + 1}, info: info}
	w.cur.Store(next)
	return next.snap, nil
}

