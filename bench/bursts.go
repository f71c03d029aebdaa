package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// burstResult is a burst of requests with wrong passwords against the
// plain sidecar's Basic column.
type burstResult struct {
	ID        string         `json:"id"`
	Label     string         `json:"label"`
	Addresses int            `json:"source_addresses"`
	Sent      int            `json:"sent"`
	Status    map[string]int `json:"status"` // "401", "429", …, "canceled" (cut off by the time bound)
	Seconds   float64        `json:"seconds"`
	Answered  float64        `json:"answered_per_s"`
	CPU       float64        `json:"sidecar_cpu_seconds"`
	Cores     float64        `json:"cores"`
	// CPUPer401 is sidecar CPU per refused password check (bcrypt + logs).
	CPUPer401ms float64 `json:"cpu_ms_per_401"`
}

// Source addresses: one for the throttled burst, many for the spread one.
// Linux routes all of 127.0.0.0/8 to lo.
const (
	throttledSource = "127.0.0.201"
	spreadFirst     = 2   // 127.0.0.2 …
	spreadCount     = 199 // … 127.0.0.200
)

// burstThrottled: up to cfg.burstN wrong passwords at concurrency 16 from
// one address. After 5 failures the throttle answers 429 without bcrypt.
func (b *bench) burstThrottled(ctx context.Context) (burstResult, error) {
	local := &net.TCPAddr{IP: net.ParseIP(throttledSource)}
	d := &net.Dialer{Timeout: 5 * time.Second, LocalAddr: local}
	tr := newTransport(nil, d.DialContext)
	defer tr.CloseIdleConnections()
	r := burstResult{ID: "wrong_password_one_address", Label: "wrong password, 1 address", Addresses: 1}
	return r, b.burst(ctx, &r, tr, b.cfg.burstN)
}

// burstSpread: wrong passwords, every request from a new loopback address
// (and a new connection), so the throttle never steps in and every request
// costs a bcrypt comparison; what bounds the CPU is the sidecar's bcrypt
// concurrency limit.
func (b *bench) burstSpread(ctx context.Context) (burstResult, error) {
	var next atomic.Int64
	d := &net.Dialer{Timeout: 5 * time.Second}
	dial := func(ctx context.Context, network, addr string) (net.Conn, error) {
		i := next.Add(1) - 1
		dd := *d
		dd.LocalAddr = &net.TCPAddr{IP: net.IPv4(127, 0, 0, byte(spreadFirst+i%spreadCount))}
		return dd.DialContext(ctx, network, addr)
	}
	tr := newTransport(nil, dial)
	tr.DisableKeepAlives = true
	defer tr.CloseIdleConnections()
	n := min(b.cfg.burstN, spreadCount)
	r := burstResult{ID: "wrong_password_many_addresses", Label: fmt.Sprintf("wrong password, %d addresses", n), Addresses: n}
	return r, b.burst(ctx, &r, tr, n)
}

// burst sends n HEAD requests for the fixture manifest as bench-user with a
// different wrong password each (so no two share a bcrypt run), 16 at a
// time, for at most cfg.burstMax; requests still running then are
// cancelled. The sidecar's CPU is measured from the first request until it
// has gone quiet after the last.
func (b *bench) burst(ctx context.Context, r *burstResult, tr *http.Transport, n int) error {
	c := b.cols[colBasic]
	side := c.server
	hc := &http.Client{Transport: tr}
	u := c.base + "/v2/" + manifestRepo + "/manifests/" + manifestTag
	bctx, cancel := context.WithTimeout(ctx, b.cfg.burstMax)
	defer cancel()

	var mu sync.Mutex
	r.Status = map[string]int{}
	count := func(k string) { mu.Lock(); r.Status[k]++; mu.Unlock() }
	var nextReq atomic.Int64
	var firstErr error
	var errOnce sync.Once

	cpu0, err := cpuTime(side.pid())
	if err != nil {
		return err
	}
	start := time.Now()
	var wg sync.WaitGroup
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for bctx.Err() == nil {
				i := nextReq.Add(1) - 1
				if i >= int64(n) {
					return
				}
				req, err := http.NewRequestWithContext(bctx, http.MethodHead, u, nil)
				if err != nil {
					errOnce.Do(func() { firstErr = err })
					return
				}
				req.SetBasicAuth(userName, "wrong-"+strconv.FormatInt(i, 10))
				resp, err := hc.Do(req)
				switch {
				case err != nil && bctx.Err() != nil:
					count("canceled")
				case err != nil:
					errOnce.Do(func() { firstErr = err })
					return
				default:
					resp.Body.Close()
					count(strconv.Itoa(resp.StatusCode))
				}
			}
		}()
	}
	wg.Wait()
	end := time.Now()
	// A bcrypt comparison already running when its request was cancelled
	// still runs to the end: wait until the sidecar's CPU time stops
	// moving (at most 2 s) and count it.
	last, _ := cpuTime(side.pid())
	for quiet, t0 := 0, time.Now(); quiet < 3 && time.Since(t0) < 2*time.Second; {
		time.Sleep(50 * time.Millisecond)
		cur, _ := cpuTime(side.pid())
		if cur != last {
			last, end, quiet = cur, time.Now(), 0
		} else {
			quiet++
		}
	}
	if firstErr != nil {
		return fmt.Errorf("burst: %w", firstErr)
	}
	wall := end.Sub(start)
	for k, v := range r.Status {
		r.Sent += v
		if k != "401" && k != "429" && k != "canceled" {
			return fmt.Errorf("burst: %d answers with status %s, want 401 or 429", v, k)
		}
	}
	if r.Status["401"] == 0 {
		return errors.New("burst: no 401 at all")
	}
	r.Seconds = wall.Seconds()
	r.Answered = float64(r.Sent-r.Status["canceled"]) / wall.Seconds()
	r.CPU = (last - cpu0).Seconds()
	r.Cores = r.CPU / wall.Seconds()
	r.CPUPer401ms = r.CPU * 1000 / float64(r.Status["401"])
	return nil
}
