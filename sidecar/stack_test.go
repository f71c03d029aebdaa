package sidecar

import (
	"context"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"

	"github.com/mreg-dev/mreg/internal/registry"
	"github.com/mreg-dev/mreg/internal/users"
)

// Test users; cost 4 keeps bcrypt cheap in tests.
const (
	testCost      = 4
	userName      = "alice"
	userPassword  = "alice-secret"
	adminName     = "root"
	adminPassword = "root-secret"
)

// stack is a real embedded registry on a loopback socket, with the sidecar
// in front of it on another.
type stack struct {
	registryURL string
	sidecarURL  string
	authDir     string
	upstreamHit atomic.Int64 // requests that reached the registry
	server      *Server
}

func testLogger(t testing.TB) *slog.Logger {
	if os.Getenv("MREG_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

// startRegistry serves a Distribution registry with filesystem storage in a
// temporary directory, counting the requests it receives.
func startRegistry(t testing.TB, hits *atomic.Int64) string {
	t.Helper()
	cfg, err := registry.LoadConfig(registry.Options{Addr: "127.0.0.1:0", Root: t.TempDir(), LogLevel: "error"})
	if err != nil {
		t.Fatal(err)
	}
	srv, err := registry.New(context.Background(), cfg, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	h := srv.Handler()
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if hits != nil {
			hits.Add(1)
		}
		h.ServeHTTP(w, r)
	}))
	t.Cleanup(ts.Close)
	return ts.URL
}

// addUser writes a user to the store in authDir.
func addUser(t testing.TB, authDir, name, password string, admin bool) {
	t.Helper()
	hash, err := users.HashPassword([]byte(password), testCost)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := users.Put(context.Background(), filepath.Join(authDir, users.FileName), name, hash, admin); err != nil {
		t.Fatal(err)
	}
}

type stackOpt func(*Config)

func withAnonymousRead(c *Config) { c.AnonymousRead = true }

func newStack(t testing.TB, opts ...stackOpt) *stack {
	t.Helper()
	s := &stack{authDir: t.TempDir()}
	s.registryURL = startRegistry(t, &s.upstreamHit)
	addUser(t, s.authDir, userName, userPassword, false)
	addUser(t, s.authDir, adminName, adminPassword, true)
	cfg := Config{
		Upstream: s.registryURL,
		AuthDir:  s.authDir,
		Logger:   testLogger(t),
		Auth:     AuthenticatorOptions{DummyCost: testCost},
		// The matrix tests send many wrong passwords from one address;
		// TestBruteForce turns the throttle back on.
		Throttle: ThrottleOptions{FreeFailures: 1 << 30, UserFailures: 1 << 30},
	}
	for _, o := range opts {
		o(&cfg)
	}
	ctx, cancel := context.WithCancel(context.Background())
	srv, err := New(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	s.server = srv
	s.sidecarURL = "http://" + ln.Addr().String()
	return s
}
