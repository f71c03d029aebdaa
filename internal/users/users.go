// Package users is mreg's user store: user names, bcrypt hashes and roles in
// a bbolt file (users.db, mode 0600).
//
// Two kinds of processes use the file at once: the sidecar, which only reads
// and must never hold the file open for long (a bbolt read-write open takes
// an exclusive lock), and manage-user, run through `kubectl exec`, which
// writes one change per invocation in a single transaction. The write side
// is in store.go, the sidecar's read side in watch.go.
package users

import (
	"errors"
	"fmt"
	"time"
	"unicode/utf8"

	"golang.org/x/crypto/bcrypt"
)

// Sentinel errors of this package.
var (
	// ErrNotFound: no user of that name.
	ErrNotFound = errors.New("no such user")
	// ErrInvalidName: the name is not a sensible identifier (see ValidateName).
	ErrInvalidName = errors.New("invalid user name")
	// ErrEmptyPassword: passwords must not be empty.
	ErrEmptyPassword = errors.New("empty password")
	// ErrPasswordTooLong: bcrypt only looks at the first 72 bytes, so longer
	// passwords are refused rather than silently truncated.
	ErrPasswordTooLong = errors.New("password longer than 72 bytes")
	// ErrBusy: another process held the database lock for too long.
	ErrBusy = errors.New("user database is locked by another process")
	// ErrCorrupt: the database holds a record mreg cannot read.
	ErrCorrupt = errors.New("user database record is corrupt")
)

// DefaultCost is the bcrypt cost for new hashes (≈0.1 s of CPU here).
const DefaultCost = 12

// FileName is the name of the database inside the auth directory.
const FileName = "users.db"

// MaxNameLen bounds user names.
const MaxNameLen = 64

// User is one account.
type User struct {
	Name    string    `json:"name"`
	Admin   bool      `json:"admin"`
	Hash    []byte    `json:"hash"`
	Created time.Time `json:"created"`
	Updated time.Time `json:"updated"`
}

// Role is "admin" or "user".
func (u User) Role() string {
	if u.Admin {
		return "admin"
	}
	return "user"
}

// ValidateName accepts 1 to 64 characters of ASCII letters, digits and
// ". _ - @", starting with a letter or digit. That keeps names safe in Basic
// auth (no colon), in logs and in shell scripts.
func ValidateName(name string) error {
	if name == "" {
		return fmt.Errorf("%w: name is empty", ErrInvalidName)
	}
	if len(name) > MaxNameLen {
		return fmt.Errorf("%w: longer than %d characters", ErrInvalidName, MaxNameLen)
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case i > 0 && (c == '.' || c == '_' || c == '-' || c == '@'):
		default:
			return fmt.Errorf("%w: %q: use letters, digits and . _ - @, starting with a letter or digit", ErrInvalidName, printable(name))
		}
	}
	return nil
}

// printable makes a rejected name safe to echo in an error message.
func printable(s string) string {
	if !utf8.ValidString(s) {
		return fmt.Sprintf("%x", s)
	}
	return s
}

// HashPassword checks pw and returns its bcrypt hash at the given cost.
func HashPassword(pw []byte, cost int) ([]byte, error) {
	if len(pw) == 0 {
		return nil, ErrEmptyPassword
	}
	if len(pw) > 72 {
		return nil, ErrPasswordTooLong
	}
	if cost < bcrypt.MinCost || cost > bcrypt.MaxCost {
		return nil, fmt.Errorf("bcrypt cost %d out of range %d..%d", cost, bcrypt.MinCost, bcrypt.MaxCost)
	}
	h, err := bcrypt.GenerateFromPassword(pw, cost)
	if err != nil {
		return nil, fmt.Errorf("hash password: %w", err)
	}
	return h, nil
}
