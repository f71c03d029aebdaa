package users

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"time"

	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"
)

var bucketUsers = []byte("users")

// lockTimeout bounds the wait for the other process's file lock. Writers
// hash passwords before they open the file, so locks are held for
// milliseconds; a longer wait means something is stuck.
const lockTimeout = 5 * time.Second

// open opens the database at path, waiting at most wait for the lock.
func open(path string, readOnly bool, wait time.Duration) (*bolt.DB, error) {
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: wait, ReadOnly: readOnly})
	if errors.Is(err, bolterrors.ErrTimeout) {
		return nil, fmt.Errorf("%w: %s", ErrBusy, path)
	}
	if err != nil {
		return nil, fmt.Errorf("open user database: %w", err)
	}
	return db, nil
}

// update runs fn in one read-write transaction on the database at path,
// creating the file (0600) and its directory (0700) when missing.
func update(ctx context.Context, path string, fn func(b *bolt.Bucket) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("create auth directory: %w", err)
	}
	db, err := open(path, false, lockTimeout)
	if err != nil {
		return err
	}
	defer db.Close()
	// The file holds password hashes: keep it private even if it was
	// created or copied with a wider mode.
	if err := os.Chmod(path, 0o600); err != nil {
		return fmt.Errorf("chmod user database: %w", err)
	}
	return db.Update(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucketIfNotExists(bucketUsers)
		if err != nil {
			return fmt.Errorf("create users bucket: %w", err)
		}
		return fn(b)
	})
}

func decode(name, v []byte) (User, error) {
	var u User
	if err := json.Unmarshal(v, &u); err != nil {
		return User{}, fmt.Errorf("%w: user %q: %v", ErrCorrupt, name, err)
	}
	u.Name = string(name)
	return u, nil
}

func put(b *bolt.Bucket, u User) error {
	v, err := json.Marshal(u)
	if err != nil {
		return fmt.Errorf("encode user: %w", err)
	}
	return b.Put([]byte(u.Name), v)
}

// Put creates user name with the given hash, or changes the hash of an
// existing user. With admin set the user becomes an admin; otherwise a new
// user is a plain user and an existing one keeps its role.
func Put(ctx context.Context, path, name string, hash []byte, admin bool) (created bool, err error) {
	if err := ValidateName(name); err != nil {
		return false, err
	}
	if len(hash) == 0 {
		return false, ErrEmptyPassword
	}
	now := time.Now().UTC()
	err = update(ctx, path, func(b *bolt.Bucket) error {
		u := User{Name: name, Created: now}
		if v := b.Get([]byte(name)); v != nil {
			old, err := decode([]byte(name), v)
			if err != nil {
				return err
			}
			u = old
		} else {
			created = true
		}
		u.Hash, u.Updated = hash, now
		u.Admin = u.Admin || admin
		return put(b, u)
	})
	return created, err
}

// Toggle flips user name between admin and user and returns the new role.
func Toggle(ctx context.Context, path, name string) (admin bool, err error) {
	if err := mustExist(path, name); err != nil {
		return false, err
	}
	err = update(ctx, path, func(b *bolt.Bucket) error {
		v := b.Get([]byte(name))
		if v == nil {
			return fmt.Errorf("%w: %q", ErrNotFound, printable(name))
		}
		u, err := decode([]byte(name), v)
		if err != nil {
			return err
		}
		u.Admin = !u.Admin
		u.Updated = time.Now().UTC()
		admin = u.Admin
		return put(b, u)
	})
	return admin, err
}

// Remove deletes user name.
func Remove(ctx context.Context, path, name string) error {
	if err := mustExist(path, name); err != nil {
		return err
	}
	return update(ctx, path, func(b *bolt.Bucket) error {
		if b.Get([]byte(name)) == nil {
			return fmt.Errorf("%w: %q", ErrNotFound, printable(name))
		}
		return b.Delete([]byte(name))
	})
}

// mustExist keeps Toggle and Remove from creating an empty database (and
// its directory) when pointed at the wrong --auth-dir.
func mustExist(path, name string) error {
	if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("%w: %q (no user database at %s)", ErrNotFound, printable(name), path)
	}
	return nil
}

// List returns all users sorted by name. A missing database has no users.
func List(ctx context.Context, path string) ([]User, error) {
	m, err := readAll(ctx, path, lockTimeout)
	if err != nil {
		return nil, err
	}
	out := make([]User, 0, len(m))
	for _, u := range m {
		out = append(out, u)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// readAll reads every user in one short read-only transaction, waiting at
// most wait (and no longer than ctx allows) for a writer's lock. A missing
// or empty (just created, not yet initialised) file has no users.
func readAll(ctx context.Context, path string, wait time.Duration) (map[string]User, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	info, err := os.Stat(path)
	if errors.Is(err, fs.ErrNotExist) || (err == nil && info.Size() == 0) {
		return map[string]User{}, nil
	}
	if dl, ok := ctx.Deadline(); ok {
		wait = min(wait, time.Until(dl))
		if wait <= 0 {
			return nil, context.DeadlineExceeded
		}
	}
	db, err := open(path, true, wait)
	if err != nil {
		return nil, err
	}
	defer db.Close()
	m := make(map[string]User)
	err = db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketUsers)
		if b == nil {
			return nil
		}
		return b.ForEach(func(k, v []byte) error {
			u, err := decode(k, v)
			if err != nil {
				return err
			}
			m[u.Name] = u
			return nil
		})
	})
	if err != nil {
		return nil, err
	}
	return m, nil
}
