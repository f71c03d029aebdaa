package sidecar

import (
	"encoding/binary"
	"hash/maphash"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"
)

// ThrottleOptions tune brute-force protection. Zero (or negative) fields
// take the defaults.
type ThrottleOptions struct {
	// FreeFailures is how many failed logins an address may have before
	// its further attempts are spaced out (default 5).
	FreeFailures int
	// UserFailures is how many failed logins against one user name, from
	// all addresses together, put that name under attack (default 20).
	// While it is, an address that has failures of its own gets only one
	// free failure instead of FreeFailures; an address without failures is
	// not affected at all.
	UserFailures int
	// BaseDelay is the first backoff (default 1s); every further failure
	// doubles it, up to MaxDelay (default 5m, at most Window).
	BaseDelay, MaxDelay time.Duration
	// Window is how long a record is kept after its last failure (default
	// 15m); then it is forgotten, so an honest user who mistyped recovers.
	Window time.Duration
	// MaxEntries bounds the records held (default 10,000, at least 3).
	// When full, the least recently failed record is dropped; since every
	// record expires Window after its last failure, expired ones go first.
	MaxEntries int
	// Now is the clock (default time.Now); tests replace it.
	Now func() time.Time
}

func (o *ThrottleOptions) defaults() {
	if o.FreeFailures <= 0 {
		o.FreeFailures = 5
	}
	if o.UserFailures <= 0 {
		o.UserFailures = 20
	}
	if o.BaseDelay <= 0 {
		o.BaseDelay = time.Second
	}
	if o.MaxDelay <= 0 {
		o.MaxDelay = 5 * time.Minute
	}
	if o.Window <= 0 {
		o.Window = 15 * time.Minute
	}
	// A record is forgotten Window after its last failure, so a longer
	// backoff could never be served; and it is never shorter than the first.
	o.MaxDelay = max(min(o.MaxDelay, o.Window), o.BaseDelay)
	if o.MaxEntries <= 0 {
		o.MaxEntries = 10_000
	}
	// A failure touches three records; they must fit together.
	o.MaxEntries = max(o.MaxEntries, 3)
	if o.Now == nil {
		o.Now = time.Now
	}
}

// Throttle slows down password guessing. It decides whether a password
// check may run at all; it never sees passwords. The caller asks Check
// before verifying a password (cached credentials need not ask) and
// reports the outcome with Failure or Success.
//
// It keeps three kinds of record, each a failure count and the time of the
// last failure: per client address, per user name, and per (address, user)
// pair. Records are forgotten Window after their last failure.
//
//   - Address: the first FreeFailures failures are free. From then on the
//     address must wait BaseDelay·2^(failures−FreeFailures), capped at
//     MaxDelay, after its last failure; earlier attempts are refused, and
//     Check returns the remaining wait for Retry-After. Refusals cost
//     nothing and do not lengthen the wait. When the wait is over, Check
//     admits one attempt and refuses the others until that one fails
//     (doubling the wait) or succeeds, so a burst from a throttled address
//     gets one password check per backoff, not one each.
//   - User name: counts failures from all addresses, which is what
//     distributed guessing shows up in. It never refuses anyone by itself,
//     since an attacker could then lock the real user out. Instead, while a
//     name has UserFailures failures, an address with failures of its own
//     has a free allowance of one (instead of FreeFailures) for that name.
//     An address without failures is always admitted: a correct login from
//     elsewhere is never locked out.
//   - Pair: Success subtracts the pair's failures from the address and user
//     counts and drops the pair, so a user who mistyped and then got it
//     right starts afresh. A success does not forgive failures against
//     other names: a valid account cannot reset its address's backoff
//     between guesses at someone else's password.
//
// Addresses are keyed by client: IPv4 as is, IPv6 by its /64 (what one
// subscriber usually holds), with any port and brackets stripped; input
// that is no IP address is used as given. Keys are seeded 64-bit hashes,
// so a record has a fixed size whatever the input, and user names are not
// kept. At most MaxEntries records are held (see ThrottleOptions).
//
// Within the free allowance, concurrent attempts are not serialised: an
// honest client fans out requests before its credential is cached. A burst
// of wrong passwords from a fresh address is bounded by the Authenticator's
// bcrypt queue, and its failures all count once it has been checked.
//
// All methods are safe for concurrent use and O(1) (amortised).
type Throttle struct {
	opts ThrottleOptions
	seed maphash.Seed

	mu      sync.Mutex
	entries map[throttleKey]*throttleEntry
	// lru links the entries by last failure: lru.next is the most recent,
	// lru.prev the least. Records are only ever moved to the front with
	// last = now, so the list stays sorted and the oldest expire first.
	lru throttleEntry
}

type throttleKind uint8

const (
	throttleIP   throttleKind = iota + 1 // client IP (IPv6: /64)
	throttleHost                         // client address that is no IP
	throttleUser                         // user name
	throttlePair                         // (client, user name)
)

type throttleKey struct {
	kind throttleKind
	hash uint64
}

type throttleEntry struct {
	key        throttleKey
	fails      int       // failures within the window
	last       time.Time // last failure, or admitted attempt after a backoff
	prev, next *throttleEntry
}

// NewThrottle returns an empty throttle.
func NewThrottle(opts ThrottleOptions) *Throttle {
	opts.defaults()
	t := &Throttle{
		opts:    opts,
		seed:    maphash.MakeSeed(),
		entries: make(map[throttleKey]*throttleEntry),
	}
	t.lru.next, t.lru.prev = &t.lru, &t.lru
	return t
}

// Check is called before a password is verified. When the attempt must be
// refused (answered 429), it returns ok=false and how long the client
// should wait (for Retry-After, see retryAfterSeconds).
func (t *Throttle) Check(addr, user string) (retryAfter time.Duration, ok bool) {
	ak, uk := t.keys(addr, user)
	t.mu.Lock()
	defer t.mu.Unlock()
	now := t.opts.Now()
	a := t.lookup(ak, now)
	if a == nil {
		return 0, true
	}
	allow := t.opts.FreeFailures
	if u := t.lookup(uk, now); u != nil && u.fails >= t.opts.UserFailures {
		allow = 1
	}
	if a.fails < allow {
		return 0, true
	}
	if wait := a.last.Add(t.delay(a.fails - allow)).Sub(now); wait > 0 {
		return wait, false
	}
	// The backoff is over: admit this attempt, and make others wait until
	// its outcome is reported (or, if it never is, for another backoff).
	t.touch(a, now)
	return 0, true
}

// Failure records a failed password check: wrong password or unknown user
// (not a busy queue or a client that went away).
func (t *Throttle) Failure(addr, user string) {
	ak, uk := t.keys(addr, user)
	pk := t.pairKey(ak, uk)
	t.mu.Lock()
	defer t.mu.Unlock()
	now := t.opts.Now()
	for _, k := range [...]throttleKey{ak, uk, pk} {
		e := t.lookup(k, now)
		if e == nil {
			e = t.insert(k, now)
		}
		e.fails++
		t.touch(e, now)
	}
}

// Success records a successful password check: the failures of this
// (address, user) pair are forgiven, other failures of the address stay.
func (t *Throttle) Success(addr, user string) {
	ak, uk := t.keys(addr, user)
	pk := t.pairKey(ak, uk)
	t.mu.Lock()
	defer t.mu.Unlock()
	now := t.opts.Now()
	p := t.lookup(pk, now)
	if p == nil {
		return
	}
	n := p.fails
	t.remove(p)
	for _, k := range [...]throttleKey{ak, uk} {
		if e := t.lookup(k, now); e != nil {
			if e.fails -= n; e.fails <= 0 {
				t.remove(e)
			}
		}
	}
}

// Len is the number of records held (addresses, user names and pairs), for
// tests and metrics.
func (t *Throttle) Len() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.prune(t.opts.Now())
	return len(t.entries)
}

// delay is the backoff after n failures beyond the free allowance.
func (t *Throttle) delay(n int) time.Duration {
	d := t.opts.BaseDelay
	for ; n > 0; n-- {
		if d > t.opts.MaxDelay/2 {
			return t.opts.MaxDelay
		}
		d *= 2
	}
	return min(d, t.opts.MaxDelay)
}

// keys returns the address and user records' keys.
func (t *Throttle) keys(addr, user string) (a, u throttleKey) {
	ip, host := throttleAddr(addr)
	if ip.IsValid() {
		b := ip.As16()
		a = throttleKey{throttleIP, maphash.Bytes(t.seed, b[:])}
	} else {
		a = throttleKey{throttleHost, maphash.String(t.seed, host)}
	}
	return a, throttleKey{throttleUser, maphash.String(t.seed, user)}
}

// pairKey returns the key of the (address, user) record.
func (t *Throttle) pairKey(a, u throttleKey) throttleKey {
	var b [17]byte
	b[0] = byte(a.kind)
	binary.LittleEndian.PutUint64(b[1:9], a.hash)
	binary.LittleEndian.PutUint64(b[9:17], u.hash)
	return throttleKey{throttlePair, maphash.Bytes(t.seed, b[:])}
}

// lookup returns k's record, or nil when there is none or it expired.
func (t *Throttle) lookup(k throttleKey, now time.Time) *throttleEntry {
	e := t.entries[k]
	if e != nil && t.expired(e, now) {
		t.remove(e)
		return nil
	}
	return e
}

func (t *Throttle) expired(e *throttleEntry, now time.Time) bool {
	return now.Sub(e.last) >= t.opts.Window
}

// insert adds an empty record for k, first dropping expired records and,
// if still full, the least recent one. The caller touches it.
func (t *Throttle) insert(k throttleKey, now time.Time) *throttleEntry {
	t.prune(now)
	var e *throttleEntry
	if len(t.entries) >= t.opts.MaxEntries {
		e = t.lru.prev
		t.remove(e)
		*e = throttleEntry{}
	} else {
		e = new(throttleEntry)
	}
	e.key = k
	t.entries[k] = e
	e.prev, e.next = &t.lru, t.lru.next
	e.prev.next, e.next.prev = e, e
	return e
}

// prune drops expired records, oldest first.
func (t *Throttle) prune(now time.Time) {
	for e := t.lru.prev; e != &t.lru && t.expired(e, now); e = t.lru.prev {
		t.remove(e)
	}
}

func (t *Throttle) remove(e *throttleEntry) {
	e.prev.next, e.next.prev = e.next, e.prev
	e.prev, e.next = nil, nil
	delete(t.entries, e.key)
}

// touch sets e's time to now and moves it to the front.
func (t *Throttle) touch(e *throttleEntry, now time.Time) {
	e.last = now
	if t.lru.next == e {
		return
	}
	e.prev.next, e.next.prev = e.next, e.prev
	e.prev, e.next = &t.lru, t.lru.next
	e.prev.next, e.next.prev = e, e
}

// throttleAddr identifies the client behind addr, which may be "host",
// "host:port", "[host]" or "[host]:port". An IP address comes back as ip:
// IPv4 (also IPv4-mapped IPv6) as is, IPv6 cut to its /64 without zone, so
// hopping through the 2^64 addresses of one subscriber earns no fresh
// records. Anything else (a unix socket, an obfuscated Forwarded
// identifier) comes back as host, without brackets and port. It does not
// allocate for IP input.
func throttleAddr(addr string) (ip netip.Addr, host string) {
	host = addr
	if strings.HasPrefix(addr, "[") {
		if end := strings.IndexByte(addr, ']'); end > 0 {
			if rest := addr[end+1:]; rest == "" || rest[0] == ':' {
				host = addr[1:end]
			}
		}
	} else if strings.Count(addr, ":") == 1 {
		// IPv4 or a name with a port; bare IPv6 has at least two colons.
		host, _, _ = strings.Cut(addr, ":")
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return netip.Addr{}, host
	}
	ip = ip.Unmap().WithZone("")
	if ip.Is6() {
		p, _ := ip.Prefix(64)
		ip = p.Addr()
	}
	return ip, ""
}

// throttleAddrString is throttleAddr as text ("2001:db8::/64"), for logs
// and tests.
func throttleAddrString(addr string) string {
	ip, host := throttleAddr(addr)
	switch {
	case !ip.IsValid():
		return host
	case ip.Is6():
		return ip.String() + "/64"
	default:
		return ip.String()
	}
}

// retryAfterSeconds formats a wait for the Retry-After header: whole
// seconds, rounded up, at least 1.
func retryAfterSeconds(d time.Duration) string {
	s := d / time.Second
	if d%time.Second != 0 {
		s++
	}
	return strconv.FormatInt(int64(max(s, 1)), 10)
}

// errThrottled answers an attempt Throttle refused.
// It belongs in errors.go, next to errTooMany.
func errThrottled(retryAfter time.Duration) *regError {
	return &regError{
		status: http.StatusTooManyRequests, code: codeTooMany, message: "too many failed logins, retry later",
		header: http.Header{"Retry-After": {retryAfterSeconds(retryAfter)}},
	}
}
