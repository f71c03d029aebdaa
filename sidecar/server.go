// Package sidecar is mreg's public front: TLS, authentication against the
// user store, authorization by role and method, and a streaming reverse
// proxy to the registry on the pod's loopback. The registry never sees
// credentials or the TLS key; the sidecar never touches image data.
//
// The request chain is assembled in one place, Server.Handler.
package sidecar

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"path/filepath"
	"time"

	"github.com/mreg-dev/mreg/internal/users"
)

// Config is the sidecar's configuration.
type Config struct {
	// Addr is the public listen address.
	Addr string
	// Upstream is the registry's URL (the pod's loopback).
	Upstream string
	// AuthDir holds users.db, tls.crt and tls.key.
	AuthDir string
	// CertFile and KeyFile override AuthDir/tls.crt and AuthDir/tls.key,
	// e.g. for a mounted kubernetes.io/tls Secret.
	CertFile, KeyFile string
	// Realm is the Basic realm in challenges.
	Realm string
	// AnonymousRead lets clients without credentials pull and list.
	AnonymousRead bool
	// AuthMode is AuthToken (challenge with Bearer, the default) or
	// AuthBasic. Both accept Basic credentials and tokens on every request.
	AuthMode string
	// Token configures the token endpoint and tokens.
	Token TokenOptions
	// ExternalURL, when set, is the URL clients use to reach the sidecar
	// (behind a reverse proxy): realm and Location headers point there.
	ExternalURL string
	// TrustedProxies are the addresses whose Forwarded / X-Forwarded-*
	// headers are believed.
	TrustedProxies []netip.Prefix
	// Auth tunes credential checking and caching.
	Auth AuthenticatorOptions
	// Throttle tunes the brute-force protection.
	Throttle ThrottleOptions
	// Logger receives structured logs.
	Logger *slog.Logger
}

// Auth modes.
const (
	AuthToken = "token"
	AuthBasic = "basic"
)

// Server is the sidecar.
type Server struct {
	cfg         Config
	log         *slog.Logger
	auth        *Authenticator
	tokens      *tokens
	externalURL *url.URL
	proxy       http.Handler
	reads       *readProxy
	certs       *certSource
	metrics     *metrics
	throttle    *Throttle
}

// New validates cfg and prepares the server; it reads the user store once.
func New(ctx context.Context, cfg Config) (*Server, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Realm == "" {
		cfg.Realm = "mreg"
	}
	switch cfg.AuthMode {
	case "":
		cfg.AuthMode = AuthToken
	case AuthToken, AuthBasic:
	default:
		return nil, fmt.Errorf("%w: auth mode %q: want token or basic", ErrConfig, cfg.AuthMode)
	}
	var ext *url.URL
	if cfg.ExternalURL != "" {
		u, err := url.Parse(cfg.ExternalURL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return nil, fmt.Errorf("%w: external URL %q is not an http(s) URL", ErrConfig, cfg.ExternalURL)
		}
		ext = u
	}
	if cfg.AuthDir == "" {
		return nil, fmt.Errorf("%w: auth directory is empty", ErrConfig)
	}
	up, err := url.Parse(cfg.Upstream)
	if err != nil || (up.Scheme != "http" && up.Scheme != "https") || up.Host == "" {
		return nil, fmt.Errorf("%w: upstream %q is not an http(s) URL", ErrConfig, cfg.Upstream)
	}
	store, err := users.NewWatcher(ctx, filepath.Join(cfg.AuthDir, users.FileName))
	if err != nil {
		return nil, fmt.Errorf("read user store: %w", err)
	}
	if cfg.CertFile == "" {
		cfg.CertFile = filepath.Join(cfg.AuthDir, "tls.crt")
	}
	if cfg.KeyFile == "" {
		cfg.KeyFile = filepath.Join(cfg.AuthDir, "tls.key")
	}
	cfg.Auth.Logger = cfg.Logger
	auth, err := NewAuthenticator(store, cfg.Auth)
	if err != nil {
		return nil, err
	}
	toks, err := newTokens(cfg.AuthDir, cfg.Token)
	if err != nil {
		return nil, err
	}
	srv := &Server{
		cfg:         cfg,
		log:         cfg.Logger,
		auth:        auth,
		tokens:      toks,
		externalURL: ext,
		proxy:       newProxy(up, newTransport(), cfg.Logger),
		reads:       newReadProxy(up, cfg.Logger),
		certs: &certSource{
			certFile: cfg.CertFile,
			keyFile:  cfg.KeyFile,
			log:      cfg.Logger,
		},
		metrics:  newMetrics(auth),
		throttle: NewThrottle(cfg.Throttle),
	}
	store.OnChange(func(before, after *users.Snapshot) { srv.auditUserChanges(context.Background(), before, after) })
	return srv, nil
}

// Handler is the whole request chain, outermost first: the token
// endpoint, then every registry request through authentication and
// authorization to the proxy.
func (s *Server) Handler() http.Handler {
	registry := chain(http.HandlerFunc(s.forward),
		s.methods,
		s.authenticate,
		s.authorize,
	)
	return chain(route(tokenPath, http.HandlerFunc(s.serveToken), registry),
		s.withOrigin,
		s.accessLog,
	)
}

// route sends requests for path to h and everything else to rest.
func route(path string, h, rest http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == path {
			h.ServeHTTP(w, r)
			return
		}
		rest.ServeHTTP(w, r)
	})
}

// chain wraps h so that the first middleware listed runs first.
func chain(h http.Handler, mw ...func(http.Handler) http.Handler) http.Handler {
	for i := len(mw) - 1; i >= 0; i-- {
		h = mw[i](h)
	}
	return h
}

// ListenAndServe listens on cfg.Addr and serves until ctx is cancelled.
func (s *Server) ListenAndServe(ctx context.Context) error {
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", s.cfg.Addr)
	if err != nil {
		return fmt.Errorf("sidecar listen: %w", err)
	}
	return s.Serve(ctx, ln)
}

// Serve serves on ln, HTTPS or HTTP per connection depending on whether a
// certificate is present, until ctx is cancelled. Timeouts guard against
// idle and slow-header clients but never cut a long transfer: there is no
// read or write deadline on bodies.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	if snap, err := s.auth.Store().Current(ctx); err == nil && snap.Len() == 0 {
		s.log.WarnContext(ctx, "user store is empty: every request gets 401; create an admin with `manage-user add --admin NAME`",
			"path", s.auth.Store().Path())
	}
	hs := &http.Server{
		Handler:           s.Handler(),
		ReadHeaderTimeout: 30 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
		BaseContext:       func(net.Listener) context.Context { return context.WithoutCancel(ctx) },
	}
	sl := &switchListener{Listener: ln, src: s.certs, cfg: s.certs.tlsConfig(), log: s.log}
	if cert, err := s.certs.refresh(); err != nil {
		s.log.ErrorContext(ctx, "tls files unusable", "err", err)
	} else {
		s.log.InfoContext(ctx, "sidecar listening", "addr", ln.Addr().String(), "tls", cert != nil,
			"upstream", s.cfg.Upstream, "auth", s.cfg.AuthMode, "anonymous_read", s.cfg.AnonymousRead)
	}
	errc := make(chan error, 1)
	go func() { errc <- hs.Serve(sl) }()
	go s.watchUsers(ctx)
	select {
	case err := <-errc:
		return fmt.Errorf("sidecar serve: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 20*time.Second)
	defer cancel()
	if err := hs.Shutdown(sctx); err != nil {
		return fmt.Errorf("sidecar shutdown: %w", err)
	}
	return nil
}

// watchUsers looks at the user store every few seconds even without
// requests, so that changes made with manage-user show up in the audit log
// promptly (requests check it anyway, on every request).
func (s *Server) watchUsers(ctx context.Context) {
	t := time.NewTicker(2 * time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			_, _ = s.auth.Store().Current(ctx)
		}
	}
}

// forward sends an authorized request to the registry: blob GETs of
// plain-HTTP clients by splice, everything else through the ReverseProxy.
func (s *Server) forward(w http.ResponseWriter, r *http.Request) {
	if s.reads.eligible(r) && s.reads.serve(w, r) {
		return
	}
	s.proxy.ServeHTTP(w, r)
}
