package sidecar

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/crypto/bcrypt"
	"golang.org/x/sync/singleflight"

	"github.com/mreg-dev/mreg/internal/users"
)

// Identity is who a request was authenticated as.
type Identity struct {
	Name  string
	Admin bool
	// Bearer: authenticated by an access token, whose grants are Scopes.
	Bearer bool
	Scopes []Scope
}

// Anonymous reports whether no user was authenticated.
func (id Identity) Anonymous() bool { return id.Name == "" }

// AuthenticatorOptions tune the credential checks.
type AuthenticatorOptions struct {
	// CacheTTL is how long a verified credential is remembered (the cache
	// is dropped earlier whenever the user store changes).
	CacheTTL time.Duration
	// MaxCacheEntries bounds the cache's memory.
	MaxCacheEntries int
	// Concurrency bounds bcrypt comparisons running at once, so a burst of
	// wrong passwords cannot take every core.
	Concurrency int
	// MaxWaiting bounds the logins queued behind those; more get 429.
	MaxWaiting int
	// Logger receives store reload warnings.
	Logger *slog.Logger
	// DummyCost is the cost of the hash unknown users are compared against;
	// it should match the store's cost so unknown users take as long.
	DummyCost int
}

func (o *AuthenticatorOptions) defaults() {
	if o.CacheTTL <= 0 {
		o.CacheTTL = 5 * time.Minute
	}
	if o.MaxCacheEntries <= 0 {
		o.MaxCacheEntries = 4096
	}
	if o.Concurrency <= 0 {
		o.Concurrency = 1
	}
	if o.MaxWaiting <= 0 {
		o.MaxWaiting = 64
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.DummyCost == 0 {
		o.DummyCost = users.DefaultCost
	}
}

type cacheKey [sha256.Size]byte

// Authenticator verifies Basic credentials against the user store. bcrypt
// runs once per credential: the verdict is remembered under an HMAC of user
// and password (keyed with a per-process secret, so the cache never holds
// anything a password could be recovered from offline), until the store
// changes or the TTL passes. Failures are not cached: every wrong password
// pays for its bcrypt, which is what makes guessing slow.
type Authenticator struct {
	store *users.Watcher
	opts  AuthenticatorOptions
	key   []byte
	dummy []byte
	now   func() time.Time

	sem     chan struct{}
	waiting chan struct{}
	flight  singleflight.Group
	runs    atomic.Int64 // bcrypt comparisons done
	hits    atomic.Int64 // credentials verified from the cache

	mu    sync.Mutex
	gen   uint64
	cache map[cacheKey]time.Time // verified credential → expiry
}

// NewAuthenticator returns an authenticator over store.
func NewAuthenticator(store *users.Watcher, opts AuthenticatorOptions) (*Authenticator, error) {
	opts.defaults()
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		return nil, fmt.Errorf("cache key: %w", err)
	}
	// The dummy password is random, so no input can match it.
	dummy, err := bcrypt.GenerateFromPassword([]byte(rand.Text()), opts.DummyCost)
	if err != nil {
		return nil, fmt.Errorf("dummy hash: %w", err)
	}
	return &Authenticator{
		store: store, opts: opts, key: key, dummy: dummy, now: time.Now,
		sem:     make(chan struct{}, opts.Concurrency),
		waiting: make(chan struct{}, opts.Concurrency+opts.MaxWaiting),
		cache:   make(map[cacheKey]time.Time),
	}, nil
}

// Store returns the user store the authenticator reads.
func (a *Authenticator) Store() *users.Watcher { return a.store }

// Basic checks name and password. It returns ErrBadCredentials for unknown
// users and wrong passwords alike, ErrBusy when too many checks are queued.
func (a *Authenticator) Basic(ctx context.Context, name, password string) (Identity, error) {
	snap, err := a.store.Current(ctx)
	if err != nil {
		// The previous snapshot is still valid (see users.Watcher.Current).
		a.opts.Logger.WarnContext(ctx, "user store reload failed, using previous state", "err", err)
	}
	u, known := snap.Lookup(name)
	k := a.cacheKey(name, password)
	if known && a.cached(snap.Gen, k) {
		a.hits.Add(1)
		return Identity{Name: u.Name, Admin: u.Admin}, nil
	}
	hash := a.dummy
	if known {
		hash = u.Hash
	}
	// Concurrent requests with the same credential (a pull fans out to
	// many layer requests) share one bcrypt run.
	v, err, _ := a.flight.Do(string(k[:]), func() (any, error) {
		return a.compare(ctx, hash, password)
	})
	if err != nil {
		return Identity{}, err
	}
	if ok := v.(bool); !ok || !known {
		return Identity{}, ErrBadCredentials
	}
	a.remember(snap.Gen, k)
	return Identity{Name: u.Name, Admin: u.Admin}, nil
}

func (a *Authenticator) cacheKey(name, password string) cacheKey {
	m := hmac.New(sha256.New, a.key)
	m.Write([]byte(name))
	m.Write([]byte{0})
	m.Write([]byte(password))
	var k cacheKey
	m.Sum(k[:0])
	return k
}

// cached reports whether k was verified under store generation gen and has
// not expired. A newer generation drops the whole cache.
func (a *Authenticator) cached(gen uint64, k cacheKey) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	if gen != a.gen {
		a.gen = gen
		clear(a.cache)
		return false
	}
	exp, ok := a.cache[k]
	if !ok {
		return false
	}
	if !a.now().Before(exp) {
		delete(a.cache, k)
		return false
	}
	return true
}

func (a *Authenticator) remember(gen uint64, k cacheKey) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if gen != a.gen {
		// The store changed while bcrypt ran; the verdict may be stale.
		return
	}
	if len(a.cache) >= a.opts.MaxCacheEntries {
		clear(a.cache)
	}
	a.cache[k] = a.now().Add(a.opts.CacheTTL)
}

// compare runs one bcrypt comparison within the concurrency bound.
func (a *Authenticator) compare(ctx context.Context, hash []byte, password string) (bool, error) {
	select {
	case a.waiting <- struct{}{}:
	default:
		return false, ErrBusy
	}
	defer func() { <-a.waiting }()
	select {
	case a.sem <- struct{}{}:
	case <-ctx.Done():
		return false, ctx.Err()
	}
	defer func() { <-a.sem }()
	a.runs.Add(1)
	return bcrypt.CompareHashAndPassword(hash, []byte(password)) == nil, nil
}

// CacheLen is the number of remembered credentials (for tests and metrics).
func (a *Authenticator) CacheLen() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.cache)
}

// BcryptRuns is the number of bcrypt comparisons done so far.
func (a *Authenticator) BcryptRuns() int64 { return a.runs.Load() }
