package sidecar

import (
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// throttleClock is a fake clock safe for concurrent use.
type throttleClock struct{ ns atomic.Int64 }

func newThrottleClock() *throttleClock {
	c := &throttleClock{}
	c.ns.Store(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).UnixNano())
	return c
}

func (c *throttleClock) Now() time.Time          { return time.Unix(0, c.ns.Load()) }
func (c *throttleClock) Advance(d time.Duration) { c.ns.Add(int64(d)) }

func newTestThrottle(t testing.TB, opts ThrottleOptions) (*Throttle, *throttleClock) {
	t.Helper()
	c := newThrottleClock()
	opts.Now = c.Now
	return NewThrottle(opts), c
}

// checkThrottleInvariants verifies the map and the recency list agree, the
// list is sorted by last failure and the bound holds.
func checkThrottleInvariants(t testing.TB, tr *Throttle) {
	t.Helper()
	tr.mu.Lock()
	defer tr.mu.Unlock()
	n := 0
	var prev time.Time
	for e := tr.lru.next; e != &tr.lru; e = e.next {
		n++
		if tr.entries[e.key] != e {
			t.Fatalf("list entry %v is not in the map", e.key)
		}
		if e.next.prev != e {
			t.Fatalf("broken list links at %v", e.key)
		}
		if e.fails <= 0 {
			t.Fatalf("entry %v has %d failures", e.key, e.fails)
		}
		if n > 1 && e.last.After(prev) {
			t.Fatalf("list not sorted by recency: %v after %v", e.last, prev)
		}
		prev = e.last
	}
	if n != len(tr.entries) {
		t.Fatalf("list holds %d entries, map %d", n, len(tr.entries))
	}
	if n > tr.opts.MaxEntries {
		t.Fatalf("%d entries, bound is %d", n, tr.opts.MaxEntries)
	}
}

// throttleStep is one step of a scripted scenario.
type throttleStep struct {
	op         string // fail, ok, refused, success, after, len
	addr, user string
	n          int           // fail: how many times; len: expected Len
	d          time.Duration // after: clock advance; refused: expected Retry-After
}

func tFail(addr, user string, n int) throttleStep {
	return throttleStep{op: "fail", addr: addr, user: user, n: n}
}
func tOK(addr, user string) throttleStep { return throttleStep{op: "ok", addr: addr, user: user} }
func tRefused(addr, user string, d time.Duration) throttleStep {
	return throttleStep{op: "refused", addr: addr, user: user, d: d}
}
func tSuccess(addr, user string) throttleStep {
	return throttleStep{op: "success", addr: addr, user: user}
}
func tAfter(d time.Duration) throttleStep { return throttleStep{op: "after", d: d} }
func tLen(n int) throttleStep             { return throttleStep{op: "len", n: n} }

func runThrottleSteps(t *testing.T, tr *Throttle, c *throttleClock, steps []throttleStep) {
	t.Helper()
	for i, s := range steps {
		switch s.op {
		case "fail":
			for range s.n {
				tr.Failure(s.addr, s.user)
			}
		case "ok", "refused":
			wait, ok := tr.Check(s.addr, s.user)
			if want := s.op == "ok"; ok != want || wait != s.d {
				t.Fatalf("step %d: Check(%q, %q) = %v, %v; want %v, %v", i, s.addr, s.user, wait, ok, s.d, want)
			}
		case "success":
			tr.Success(s.addr, s.user)
		case "after":
			c.Advance(s.d)
		case "len":
			if got := tr.Len(); got != s.n {
				t.Fatalf("step %d: Len() = %d, want %d", i, got, s.n)
			}
		default:
			t.Fatalf("step %d: unknown op %q", i, s.op)
		}
		checkThrottleInvariants(t, tr)
	}
}

const (
	addrA = "192.0.2.1:5000"
	addrC = "198.51.100.7:6000"
)

func TestThrottleScenarios(t *testing.T) {
	// UserFailures is out of reach here: these are about the address rule.
	opts := ThrottleOptions{FreeFailures: 5, UserFailures: 1000, BaseDelay: time.Second, MaxDelay: 8 * time.Second}
	tests := []struct {
		name  string
		steps []throttleStep
	}{
		{"free failures then 429", []throttleStep{
			tOK(addrA, "alice"), tFail(addrA, "alice", 4), tOK(addrA, "alice"),
			tFail(addrA, "alice", 1), tRefused(addrA, "alice", time.Second),
		}},
		{"backoff doubles up to the cap", []throttleStep{
			tFail(addrA, "alice", 5), tRefused(addrA, "alice", time.Second),
			tAfter(time.Second), tOK(addrA, "alice"), tFail(addrA, "alice", 1),
			tRefused(addrA, "alice", 2*time.Second),
			tAfter(2 * time.Second), tOK(addrA, "alice"), tFail(addrA, "alice", 1),
			tRefused(addrA, "alice", 4*time.Second),
			tAfter(4 * time.Second), tOK(addrA, "alice"), tFail(addrA, "alice", 1),
			tRefused(addrA, "alice", 8*time.Second),
			tAfter(8 * time.Second), tOK(addrA, "alice"), tFail(addrA, "alice", 1),
			tRefused(addrA, "alice", 8*time.Second),
			tFail(addrA, "alice", 100), tRefused(addrA, "alice", 8*time.Second),
		}},
		{"refusals do not lengthen the wait", []throttleStep{
			tFail(addrA, "alice", 5), tAfter(400 * time.Millisecond),
			tRefused(addrA, "alice", 600*time.Millisecond), tRefused(addrA, "alice", 600*time.Millisecond),
			tAfter(600 * time.Millisecond), tOK(addrA, "alice"),
		}},
		{"one attempt per backoff", []throttleStep{
			tFail(addrA, "alice", 6), tAfter(2 * time.Second),
			tOK(addrA, "alice"), tRefused(addrA, "alice", 2*time.Second), tRefused(addrA, "bob", 2*time.Second),
			// The admitted attempt's outcome never came: another backoff.
			tAfter(2 * time.Second), tOK(addrA, "alice"),
		}},
		{"the whole address is throttled, whatever the name", []throttleStep{
			tFail(addrA, "alice", 2), tFail(addrA, "bob", 2), tFail(addrA, "carol", 1),
			tRefused(addrA, "dave", time.Second), tRefused(addrA, "", time.Second),
		}},
		{"other addresses are unaffected", []throttleStep{
			tFail(addrA, "alice", 50), tOK(addrC, "alice"), tOK(addrC, "bob"), tOK("192.0.2.2", "alice"),
		}},
		{"decay after the window", []throttleStep{
			tFail(addrA, "alice", 8), tLen(3), tAfter(15*time.Minute - time.Nanosecond), tLen(3),
			tAfter(time.Nanosecond), tLen(0),
			// Counting starts afresh: four more are free.
			tOK(addrA, "alice"), tFail(addrA, "alice", 4), tOK(addrA, "alice"),
			tFail(addrA, "alice", 1), tRefused(addrA, "alice", time.Second),
		}},
		{"the window counts from the last failure", []throttleStep{
			tFail(addrA, "alice", 8), tAfter(14 * time.Minute), tFail(addrA, "alice", 1),
			tAfter(14 * time.Minute), tFail(addrA, "alice", 1), tRefused(addrA, "alice", 8*time.Second),
		}},
		{"success resets", []throttleStep{
			tFail(addrA, "alice", 6), tRefused(addrA, "alice", 2*time.Second), tAfter(2 * time.Second),
			tOK(addrA, "alice"), tSuccess(addrA, "alice"), tLen(0), tOK(addrA, "alice"),
			tFail(addrA, "alice", 4), tOK(addrA, "alice"), tFail(addrA, "alice", 1),
			tRefused(addrA, "alice", time.Second),
		}},
		{"success on another port of the same client resets", []throttleStep{
			tFail(addrA, "alice", 6), tSuccess("192.0.2.1:7000", "alice"), tOK(addrA, "alice"),
		}},
		{"success does not forgive failures against other names", []throttleStep{
			tFail(addrA, "alice", 6), tSuccess(addrA, "mallory"), tRefused(addrA, "alice", 2*time.Second),
			tRefused(addrA, "mallory", 2*time.Second),
		}},
		{"success forgives only its own failures", []throttleStep{
			tFail(addrA, "alice", 3), tFail(addrA, "bob", 3), tRefused(addrA, "bob", 2*time.Second),
			tSuccess(addrA, "alice"), tOK(addrA, "bob"),
			tFail(addrA, "bob", 1), tOK(addrA, "bob"), tFail(addrA, "bob", 1), tRefused(addrA, "bob", time.Second),
		}},
		{"success without failures is a no-op", []throttleStep{
			tSuccess(addrA, "alice"), tLen(0), tOK(addrA, "alice"),
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tr, c := newTestThrottle(t, opts)
			runThrottleSteps(t, tr, c, tt.steps)
		})
	}
}

// attack makes n attempts at user from addr, each a Failure when Check
// admits it, the clock moving step between them.
func attack(tr *Throttle, c *throttleClock, addr, user string, n int, step time.Duration) (admitted int) {
	for range n {
		if _, ok := tr.Check(addr, user); ok {
			tr.Failure(addr, user)
			admitted++
		}
		c.Advance(step)
	}
	return admitted
}

func TestThrottleDistributedGuessing(t *testing.T) {
	tests := []struct {
		name         string
		userFailures int
		wantBRefused bool
	}{
		{"user pressure on", 0, true},
		// Without the per-user rule, three failures per address stay under
		// the free allowance: distributed guessing would go unnoticed.
		{"user pressure out of reach", 1 << 30, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tr, c := newTestThrottle(t, ThrottleOptions{UserFailures: tt.userFailures})
			// One address hammers alice for ten minutes.
			if got := attack(tr, c, addrA, "alice", 6000, 100*time.Millisecond); got > 20 {
				t.Errorf("address A got %d password checks in 10 minutes", got)
			}
			if _, ok := tr.Check(addrA, "alice"); ok {
				t.Error("hammering address is admitted")
			}
			// Fifty more addresses try a few passwords each, at once.
			for i := range 50 {
				attack(tr, c, fmt.Sprintf("203.0.113.%d:4000", i+1), "alice", 3, 0)
			}
			refused := 0
			for i := range 50 {
				if wait, ok := tr.Check(fmt.Sprintf("203.0.113.%d:4001", i+1), "alice"); !ok {
					refused++
					if wait <= 0 {
						t.Errorf("refused with Retry-After %v", wait)
					}
				}
			}
			if want := map[bool]int{true: 50, false: 0}[tt.wantBRefused]; refused != want {
				t.Errorf("%d of 50 guessing addresses refused, want %d", refused, want)
			}
			// The real alice, from an address of her own, gets in.
			if wait, ok := tr.Check(addrC, "alice"); !ok {
				t.Fatalf("correct login from a fresh address refused (Retry-After %v)", wait)
			}
			tr.Success(addrC, "alice")
			if _, ok := tr.Check(addrC, "alice"); !ok {
				t.Fatal("fresh address refused after its success")
			}
			// If she mistypes while her name is under attack, she gets one
			// free failure, then short waits; other fresh addresses are fine.
			tr.Failure(addrC, "alice")
			wait, ok := tr.Check(addrC, "alice")
			if tt.wantBRefused && (ok || wait != time.Second) {
				t.Errorf("mistype under attack: Check = %v, %v; want 1s, refused", wait, ok)
			}
			if !tt.wantBRefused && !ok {
				t.Errorf("mistype without pressure refused (%v)", wait)
			}
			if _, ok := tr.Check("[2001:db8::1]:443", "alice"); !ok {
				t.Error("another fresh address refused")
			}
			// Other names are not under attack: B addresses keep their
			// free allowance for them.
			if _, ok := tr.Check("203.0.113.1:4000", "bob"); !ok {
				t.Error("address with 3 failures refused for a name not under attack")
			}
			checkThrottleInvariants(t, tr)
		})
	}
}

func TestThrottleMemoryBound(t *testing.T) {
	tests := []struct {
		name    string
		addr    func(i int) string
		user    func(i int) string
		wantLen int // after the flood; 0: exactly MaxEntries
	}{
		{"ipv4, one user", func(i int) string { return fmt.Sprintf("10.%d.%d.%d:1234", i>>16&255, i>>8&255, i&255) },
			func(int) string { return "alice" }, 0},
		{"ipv6 /64s, many users", func(i int) string { return fmt.Sprintf("[2001:db8:%x:%x::1]:443", i>>16, i&0xffff) },
			func(i int) string { return fmt.Sprintf("user%d", i) }, 0},
		{"names, long", func(i int) string { return fmt.Sprintf("%s-%d", strings.Repeat("x", 1000), i) },
			func(i int) string { return strings.Repeat("u", 1000) }, 0},
		// Hopping inside one /64 is one client: addr, user and pair.
		{"one ipv6 /64", func(i int) string { return fmt.Sprintf("[2001:db8:1:2:%x:%x::]:443", i>>16, i&0xffff) },
			func(int) string { return "alice" }, 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tr, c := newTestThrottle(t, ThrottleOptions{})
			const max = 10_000
			for i := range 100_000 {
				tr.Failure(tt.addr(i), tt.user(i))
				if i%16 == 0 {
					c.Advance(time.Millisecond)
				}
				if n := tr.Len(); n > max {
					t.Fatalf("after %d failures: Len() = %d > %d", i+1, n, max)
				}
			}
			want := tt.wantLen
			if want == 0 {
				want = max
			}
			if n := tr.Len(); n != want {
				t.Errorf("Len() = %d, want %d", n, want)
			}
			checkThrottleInvariants(t, tr)
		})
	}
}

func TestThrottleEvictsLeastRecent(t *testing.T) {
	tr, c := newTestThrottle(t, ThrottleOptions{MaxEntries: 6})
	tr.Failure("192.0.2.1", "alice") // 3 records: address, user, pair
	for range 5 {
		c.Advance(time.Second)
		tr.Failure("192.0.2.2", "bob")
	}
	c.Advance(time.Second)
	tr.Failure("192.0.2.1", "alice") // touched again: now more recent than bob's
	c.Advance(time.Second)
	tr.Failure("192.0.2.3", "carol") // evicts bob's three records
	if n := tr.Len(); n != 6 {
		t.Fatalf("Len() = %d, want 6", n)
	}
	if _, ok := tr.Check("192.0.2.2", "bob"); !ok {
		t.Error("evicted record still refuses")
	}
	for range 4 {
		tr.Failure("192.0.2.1", "alice")
	}
	if _, ok := tr.Check("192.0.2.1", "alice"); ok {
		t.Error("recently touched record was evicted")
	}
	checkThrottleInvariants(t, tr)
}

func TestThrottleOptionsDefaults(t *testing.T) {
	tr := NewThrottle(ThrottleOptions{MaxDelay: time.Hour, Window: 10 * time.Minute, MaxEntries: 1})
	o := tr.opts
	if o.FreeFailures != 5 || o.UserFailures != 20 || o.BaseDelay != time.Second ||
		o.MaxDelay != 10*time.Minute || o.MaxEntries != 3 || o.Now == nil {
		t.Fatalf("defaults = %+v", o)
	}
	if d := tr.delay(1 << 40); d != 10*time.Minute {
		t.Fatalf("delay(huge) = %v", d)
	}
}

func TestThrottleAddrNormalisation(t *testing.T) {
	tests := []struct{ in, want string }{
		{"192.0.2.1", "192.0.2.1"},
		{"192.0.2.1:5000", "192.0.2.1"},
		{"192.0.2.1:", "192.0.2.1"},
		{"[192.0.2.1]:80", "192.0.2.1"},
		{"::ffff:192.0.2.1", "192.0.2.1"},
		{"[::ffff:192.0.2.1]:443", "192.0.2.1"},
		{"2001:db8::1", "2001:db8::/64"},
		{"2001:db8::2", "2001:db8::/64"},
		{"[2001:db8::2]:443", "2001:db8::/64"},
		{"[2001:db8::2]", "2001:db8::/64"},
		{"2001:db8:0:0:ffff:ffff:ffff:ffff", "2001:db8::/64"},
		{"2001:db8:0:1::1", "2001:db8:0:1::/64"},
		{"2001:db9::1", "2001:db9::/64"},
		{"fe80::1%eth0", "fe80::/64"},
		{"[fe80::1%eth0]:22", "fe80::/64"},
		{"::1", "::/64"},
		{"example.com:443", "example.com"},
		{"[example.com]:443", "example.com"},
		{"_hidden", "_hidden"},
		{"unknown", "unknown"},
		{"@", "@"},
		{"", ""},
		{"[::1", "[::1"},
		{"[::1]x", "[::1]x"},
		{"1.2.3.4.5", "1.2.3.4.5"},
	}
	for _, tt := range tests {
		if got := throttleAddrString(tt.in); got != tt.want {
			t.Errorf("throttleAddrString(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestThrottleIPv6SharesSlash64(t *testing.T) {
	tests := []struct {
		other  string
		shared bool
	}{
		{"2001:db8::2", true},
		{"[2001:db8::ffff]:443", true},
		{"2001:db8::1", true},
		{"2001:db9::1", false},
		{"2001:db8:0:1::1", false},
		{"192.0.2.1", false},
	}
	for _, tt := range tests {
		tr, _ := newTestThrottle(t, ThrottleOptions{})
		for range 5 {
			tr.Failure("2001:db8::1", "alice")
		}
		_, ok := tr.Check(tt.other, "alice")
		if ok == tt.shared {
			t.Errorf("after 5 failures from 2001:db8::1, Check(%q) ok = %v, want %v", tt.other, ok, !tt.shared)
		}
	}
}

func TestThrottleConcurrent(t *testing.T) {
	tr, c := newTestThrottle(t, ThrottleOptions{MaxEntries: 30, FreeFailures: 3, UserFailures: 10})
	addrs := []string{"192.0.2.1:1", "192.0.2.2:2", "[2001:db8::1]:3", "[2001:db8::2]:4", "2001:db9::1", "unix", ""}
	for i := range 20 {
		addrs = append(addrs, fmt.Sprintf("198.51.100.%d", i))
	}
	names := []string{"alice", "bob", "carol", "", "admin"}
	var wg sync.WaitGroup
	for g := range 16 {
		wg.Go(func() {
			r := rand.New(rand.NewPCG(uint64(g), 1))
			for range 5000 {
				addr, user := addrs[r.IntN(len(addrs))], names[r.IntN(len(names))]
				switch r.IntN(10) {
				case 0:
					tr.Success(addr, user)
				case 1, 2, 3:
					tr.Failure(addr, user)
				case 4:
					c.Advance(time.Duration(r.IntN(3000)) * time.Millisecond)
				case 5:
					if n := tr.Len(); n > 30 {
						t.Errorf("Len() = %d > 30", n)
					}
				default:
					if wait, ok := tr.Check(addr, user); !ok && wait <= 0 {
						t.Errorf("refused with Retry-After %v", wait)
					}
				}
			}
		})
	}
	wg.Wait()
	checkThrottleInvariants(t, tr)
}

func TestThrottleRetryAfter(t *testing.T) {
	tests := []struct {
		d    time.Duration
		want string
	}{
		{0, "1"}, {-time.Second, "1"}, {time.Nanosecond, "1"}, {time.Second, "1"},
		{time.Second + time.Millisecond, "2"}, {5 * time.Minute, "300"}, {1<<63 - 1, "9223372037"},
	}
	for _, tt := range tests {
		if got := retryAfterSeconds(tt.d); got != tt.want {
			t.Errorf("retryAfterSeconds(%v) = %q, want %q", tt.d, got, tt.want)
		}
	}
	e := errThrottled(1500 * time.Millisecond)
	if e.status != http.StatusTooManyRequests || e.code != codeTooMany || e.header.Get("Retry-After") != "2" {
		t.Fatalf("errThrottled = %+v", e)
	}
}

func TestThrottleCheckDoesNotAllocate(t *testing.T) {
	tr, _ := newTestThrottle(t, ThrottleOptions{})
	for range 10 {
		tr.Failure("192.0.2.1:1", "alice")
		tr.Failure("[2001:db8::1]:1", "alice")
	}
	for _, addr := range []string{"192.0.2.1:1", "192.0.2.9", "[2001:db8::1]:1", "2001:db8::7"} {
		if n := testing.AllocsPerRun(100, func() { tr.Check(addr, "alice") }); n != 0 {
			t.Errorf("Check(%q) allocates %v times", addr, n)
		}
	}
}

func FuzzThrottleAddr(f *testing.F) {
	for _, s := range []string{
		"192.0.2.1", "192.0.2.1:80", "2001:db8::1", "[2001:db8::1]:443", "fe80::1%eth0",
		"[fe80::1%eth0]:1", "::ffff:1.2.3.4", "::", "1::", "example.com:80", "[", "[]", "[]:", "@", "",
	} {
		f.Add(s, uint64(0x0123456789abcdef))
	}
	tr := NewThrottle(ThrottleOptions{})
	f.Fuzz(func(t *testing.T, s string, low uint64) {
		out := throttleAddrString(s)
		if len(out) > len(s)+4 {
			t.Fatalf("throttleAddrString(%q) = %q: longer than input + 4", s, out)
		}
		ip, host := throttleAddr(s)
		if !ip.IsValid() && !strings.Contains(s, host) {
			t.Fatalf("throttleAddr(%q) host %q is not part of the input", s, host)
		}
		if ip.Is4In6() || ip.Zone() != "" {
			t.Fatalf("throttleAddr(%q) = %v: not normalised", s, ip)
		}
		if ip.Is6() && ip != netip.PrefixFrom(ip, 64).Masked().Addr() {
			t.Fatalf("throttleAddr(%q) = %v: not a /64", s, ip)
		}
		a, err := netip.ParseAddr(s)
		if err != nil {
			return
		}
		if !ip.IsValid() {
			t.Fatalf("throttleAddr(%q) found no IP", s)
		}
		key, _ := tr.keys(s, "u")
		if a.Is4() || a.Is4In6() {
			if got := throttleAddrString(a.Unmap().String() + ":80"); got != out {
				t.Fatalf("%q with a port → %q, want %q", s, got, out)
			}
			return
		}
		// Another address in the same /64, in every spelling: same key.
		b := a.As16()
		for i := range 8 {
			b[8+i] = byte(low >> (8 * i))
		}
		sib := netip.AddrFrom16(b)
		for _, in := range []string{sib.String(), "[" + sib.String() + "]:443", "[" + sib.StringExpanded() + "]"} {
			if got := throttleAddrString(in); got != out {
				t.Fatalf("%q and %q are in one /64, but map to %q and %q", s, in, out, got)
			}
			if k, _ := tr.keys(in, "u"); k != key {
				t.Fatalf("%q and %q are in one /64, but have different keys", s, in)
			}
		}
		// A neighbouring /64: a different key.
		b[7] ^= 1
		other := netip.AddrFrom16(b).String()
		if got := throttleAddrString(other); got == out {
			t.Fatalf("%q and %q are in different /64s, but both map to %q", s, other, out)
		}
		if k, _ := tr.keys(other, "u"); k == key {
			t.Fatalf("%q and %q are in different /64s, but share a key", s, other)
		}
	})
}

func BenchmarkThrottleCheck(b *testing.B) {
	// A full throttle (MaxEntries records) with some throttled clients.
	tr := NewThrottle(ThrottleOptions{})
	for i := range 20_000 {
		tr.Failure(fmt.Sprintf("10.0.%d.%d:1234", i>>8&255, i&255), fmt.Sprintf("user%d", i%100))
	}
	for range 10 {
		tr.Failure("192.0.2.1:5000", "alice")
		tr.Failure("[2001:db8::1]:5000", "alice")
	}
	cases := []struct{ name, addr string }{
		{"fresh-ipv4", "198.51.100.7:6000"},
		{"throttled-ipv4", "192.0.2.1:5001"},
		{"fresh-ipv6", "[2001:db9::1]:443"},
		{"throttled-ipv6", "[2001:db8::2]:443"},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				tr.Check(c.addr, "alice")
			}
		})
	}
	b.Run("parallel", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				tr.Check("198.51.100.7:6000", "alice")
			}
		})
	})
}
