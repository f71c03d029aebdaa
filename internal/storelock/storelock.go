// Package storelock is the lock that keeps `mreg gc` and `mreg registry`
// apart on filesystem storage. It is an OS file lock (flock) on a file in
// the storage root, not a marker file: the kernel drops it when the holder
// exits, so a crash (even kill -9) never leaves a stale lock behind.
package storelock

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// FileName is the lock file inside the storage root.
const FileName = ".mreg.lock"

// ErrHeld reports that another process holds the lock.
var ErrHeld = errors.New("storage is locked by another mreg process")

// Lock is a held lock; Release gives it up.
type Lock struct{ f *os.File }

// Acquire takes the exclusive lock for root without waiting. It returns
// ErrHeld when a live registry or GC already holds it. The file records the
// holder's role and pid for the error message of whoever comes next.
func Acquire(root, holder string) (*Lock, error) {
	if err := os.MkdirAll(root, 0o755); err != nil {
		return nil, fmt.Errorf("create storage root: %w", err)
	}
	path := filepath.Join(root, FileName)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("open lock file: %w", err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		who, _ := os.ReadFile(path)
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, fmt.Errorf("%w (%s, held by %s)", ErrHeld, path, bytesOr(who, "unknown"))
		}
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	_ = f.Truncate(0)
	_, _ = f.WriteAt([]byte(fmt.Sprintf("%s pid %d", holder, os.Getpid())), 0)
	return &Lock{f: f}, nil
}

// Release drops the lock.
func (l *Lock) Release() error {
	if l == nil || l.f == nil {
		return nil
	}
	err := l.f.Close() // closing the descriptor drops the flock
	l.f = nil
	return err
}

func bytesOr(b []byte, def string) string {
	if len(b) == 0 {
		return def
	}
	return string(b)
}
