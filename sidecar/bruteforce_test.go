package sidecar

import (
	"context"
	"net"
	"net/http"
	"strings"
	"testing"
)

// clientFrom is an HTTP client whose connections come from the loopback
// address src (Linux routes all of 127.0.0.0/8 to lo).
func clientFrom(src string) *http.Client {
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
	return &http.Client{Transport: &http.Transport{
		DialContext:       func(ctx context.Context, n, a string) (net.Conn, error) { return d.DialContext(ctx, n, a) },
		DisableKeepAlives: true,
	}}
}

func getAs(t *testing.T, c *http.Client, url, user, pass string) *http.Response {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	req.SetBasicAuth(user, pass)
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp
}

func TestBruteForceThrottled(t *testing.T) {
	s := newStack(t, func(c *Config) { c.Throttle = ThrottleOptions{} }) // defaults
	url := s.sidecarURL + "/v2/"
	attacker := clientFrom("127.0.0.1")
	var throttled, unauthorized int
	const burst = 30
	for range burst {
		switch resp := getAs(t, attacker, url, userName, "guess"); resp.StatusCode {
		case http.StatusTooManyRequests:
			throttled++
			if resp.Header.Get("Retry-After") == "" {
				t.Fatal("429 without Retry-After")
			}
		case http.StatusUnauthorized:
			unauthorized++
		default:
			t.Fatalf("wrong password: %d", resp.StatusCode)
		}
	}
	if throttled == 0 || unauthorized > 6 {
		t.Fatalf("%d wrong passwords: %d checked (401), %d throttled (429): want at most 6 checked", burst, unauthorized, throttled)
	}
	// The same user with the right password from another address is
	// not locked out.
	if resp := getAs(t, clientFrom("127.0.0.2"), url, userName, userPassword); resp.StatusCode != http.StatusOK {
		t.Fatalf("correct login from another address: %d", resp.StatusCode)
	}
	// The throttled address stays throttled, even with the right password
	// (it has not proven it before).
	if resp := getAs(t, attacker, url, userName, userPassword); resp.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("throttled address, correct password: %d", resp.StatusCode)
	}
	// bcrypt ran only for the attempts that were let through.
	if runs := s.server.auth.BcryptRuns(); runs > int64(unauthorized)+2 {
		t.Fatalf("bcrypt ran %d times for %d checked attempts", runs, unauthorized)
	}
	if !strings.Contains(s.sidecarURL, "127.0.0.1") {
		t.Fatal("stack not on loopback")
	}
}
