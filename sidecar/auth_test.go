package sidecar

import (
	"context"
	"errors"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/mreg-dev/mreg/internal/users"
)

func newTestAuth(t *testing.T, opts AuthenticatorOptions) (*Authenticator, string) {
	t.Helper()
	dir := t.TempDir()
	addUser(t, dir, userName, userPassword, false)
	addUser(t, dir, adminName, adminPassword, true)
	w, err := users.NewWatcher(context.Background(), filepath.Join(dir, users.FileName))
	if err != nil {
		t.Fatal(err)
	}
	if opts.DummyCost == 0 {
		opts.DummyCost = testCost
	}
	a, err := NewAuthenticator(w, opts)
	if err != nil {
		t.Fatal(err)
	}
	return a, dir
}

func TestAuthenticatorCachesVerifiedCredential(t *testing.T) {
	a, _ := newTestAuth(t, AuthenticatorOptions{})
	ctx := context.Background()
	for i := range 20 {
		id, err := a.Basic(ctx, userName, userPassword)
		if err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		if id.Name != userName || id.Admin {
			t.Fatalf("identity = %+v", id)
		}
	}
	if got := a.BcryptRuns(); got != 1 {
		t.Fatalf("bcrypt ran %d times for one credential, want 1", got)
	}
	// A different password of the same user is a different credential,
	// and failures are never cached.
	for range 3 {
		if _, err := a.Basic(ctx, userName, "wrong"); !errors.Is(err, ErrBadCredentials) {
			t.Fatalf("wrong password: %v", err)
		}
	}
	if got := a.BcryptRuns(); got != 4 {
		t.Fatalf("bcrypt runs = %d, want 4 (wrong passwords pay every time)", got)
	}
}

func TestAuthenticatorUnknownUserRunsBcrypt(t *testing.T) {
	a, _ := newTestAuth(t, AuthenticatorOptions{})
	if _, err := a.Basic(context.Background(), "mallory", "x"); !errors.Is(err, ErrBadCredentials) {
		t.Fatalf("unknown user: %v", err)
	}
	// Unknown users are compared against the dummy hash so that they cost
	// the same time as known ones.
	if got := a.BcryptRuns(); got != 1 {
		t.Fatalf("bcrypt runs = %d for unknown user, want 1", got)
	}
}

func TestAuthenticatorUnknownUserTiming(t *testing.T) {
	if testing.Short() {
		t.Skip("timing comparison")
	}
	// At the production cost the dummy compare must be as slow as a real
	// one: compare medians of a few runs each.
	dir := t.TempDir()
	hash, err := users.HashPassword([]byte("pw"), 10)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := users.Put(context.Background(), filepath.Join(dir, users.FileName), "bob", hash, false); err != nil {
		t.Fatal(err)
	}
	w, err := users.NewWatcher(context.Background(), filepath.Join(dir, users.FileName))
	if err != nil {
		t.Fatal(err)
	}
	a, err := NewAuthenticator(w, AuthenticatorOptions{DummyCost: 10})
	if err != nil {
		t.Fatal(err)
	}
	measure := func(user string) time.Duration {
		var best time.Duration
		for i := range 3 {
			start := time.Now()
			_, _ = a.Basic(context.Background(), user, "wrong")
			if d := time.Since(start); i == 0 || d < best {
				best = d
			}
		}
		return best
	}
	known, unknown := measure("bob"), measure("nobody")
	ratio := float64(unknown) / float64(known)
	if ratio < 0.5 || ratio > 2 {
		t.Fatalf("unknown user took %v, known user %v (ratio %.2f): timing reveals which users exist", unknown, known, ratio)
	}
}

func TestAuthenticatorCacheDroppedOnStoreChange(t *testing.T) {
	a, dir := newTestAuth(t, AuthenticatorOptions{})
	ctx := context.Background()
	db := filepath.Join(dir, users.FileName)
	if _, err := a.Basic(ctx, adminName, adminPassword); err != nil {
		t.Fatal(err)
	}
	// Demote: the very next request sees the new role.
	if _, err := users.Toggle(ctx, db, adminName); err != nil {
		t.Fatal(err)
	}
	id, err := a.Basic(ctx, adminName, adminPassword)
	if err != nil || id.Admin {
		t.Fatalf("after toggle: %+v, %v", id, err)
	}
	// New password: the old one stops working at once.
	addUser(t, dir, adminName, "new-password", false)
	if _, err := a.Basic(ctx, adminName, adminPassword); !errors.Is(err, ErrBadCredentials) {
		t.Fatalf("old password after change: %v", err)
	}
	if _, err := a.Basic(ctx, adminName, "new-password"); err != nil {
		t.Fatalf("new password: %v", err)
	}
	// Removal: the cached credential is gone with it.
	if err := users.Remove(ctx, db, adminName); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Basic(ctx, adminName, "new-password"); !errors.Is(err, ErrBadCredentials) {
		t.Fatalf("removed user: %v", err)
	}
}

func TestAuthenticatorTTL(t *testing.T) {
	a, _ := newTestAuth(t, AuthenticatorOptions{CacheTTL: time.Minute})
	now := time.Now()
	a.now = func() time.Time { return now }
	ctx := context.Background()
	for range 2 {
		if _, err := a.Basic(ctx, userName, userPassword); err != nil {
			t.Fatal(err)
		}
	}
	now = now.Add(2 * time.Minute)
	if _, err := a.Basic(ctx, userName, userPassword); err != nil {
		t.Fatal(err)
	}
	if got := a.BcryptRuns(); got != 2 {
		t.Fatalf("bcrypt runs = %d, want 2 (one before and one after expiry)", got)
	}
}

func TestAuthenticatorConcurrentSameCredentialOneBcrypt(t *testing.T) {
	a, _ := newTestAuth(t, AuthenticatorOptions{})
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for range 16 {
		wg.Go(func() {
			_, err := a.Basic(context.Background(), userName, userPassword)
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	// singleflight plus the cache: at most a couple of runs, never 16.
	if got := a.BcryptRuns(); got > 2 {
		t.Fatalf("bcrypt ran %d times for 16 concurrent identical logins", got)
	}
}

func TestAuthenticatorBusy(t *testing.T) {
	a, _ := newTestAuth(t, AuthenticatorOptions{Concurrency: 1, MaxWaiting: 1, DummyCost: 12})
	var wg sync.WaitGroup
	busy := make(chan struct{}, 8)
	for i := range 8 {
		wg.Go(func() {
			// Distinct wrong passwords: no sharing, no caching.
			_, err := a.Basic(context.Background(), "mallory", "guess"+string(rune('a'+i)))
			if errors.Is(err, ErrBusy) {
				busy <- struct{}{}
			}
		})
	}
	wg.Wait()
	if len(busy) == 0 {
		t.Fatal("8 concurrent slow logins with room for 2: none was turned away")
	}
}
