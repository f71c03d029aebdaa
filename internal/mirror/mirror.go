package mirror

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path"
	"sync"
	"time"

	"github.com/distribution/distribution/v3/configuration"
	"github.com/distribution/distribution/v3/registry/handlers"
)

// mirror is one upstream's pull-through cache.
type mirror struct {
	up      Upstream
	handler http.Handler
	root    string

	mu   sync.Mutex
	tags map[string]tagEntry // repo:tag → digest resolved upstream, and when
}

type tagEntry struct {
	digest string
	at     time.Time
}

// Mirrors routes requests for configured namespaces to their caches.
type Mirrors struct {
	byNS   map[string]*mirror
	def    *mirror // the default upstream, if any
	log    *slog.Logger
	flight flights
	now    func() time.Time
}

// Roots returns the storage root of every mirror (for GC).
func (m *Mirrors) Roots() []string {
	var out []string
	for _, mr := range m.byNS {
		if mr.root != "" {
			out = append(out, mr.root)
		}
	}
	return out
}

// MirrorRoot is where a namespace's cache lives below a storage root.
func MirrorRoot(root, namespace string) string {
	return path.Join(root, "_mirrors", namespace)
}

// New builds one Distribution app in proxy mode per upstream, with the
// hosted registry's storage settings but a root of its own.
func New(ctx context.Context, hosted *configuration.Configuration, ups []Upstream, log *slog.Logger) (*Mirrors, error) {
	m := &Mirrors{byNS: map[string]*mirror{}, log: log, now: time.Now}
	if len(ups) == 0 {
		return m, nil
	}
	if err := installTransport(ups, log); err != nil {
		return nil, err
	}
	for _, u := range ups {
		cfg := *hosted
		params := configuration.Parameters{}
		for k, v := range hosted.Storage.Parameters() {
			params[k] = v
		}
		root, _ := params["rootdirectory"].(string)
		if root == "" {
			root = "/"
		}
		mroot := MirrorRoot(root, u.Namespace)
		params["rootdirectory"] = mroot
		cfg.Storage = configuration.Storage{hosted.Storage.Type(): params}
		for k, v := range hosted.Storage {
			if k != hosted.Storage.Type() && k != "delete" {
				cfg.Storage[k] = v
			}
		}
		// Deleting from a cache happens through its TTL only.
		cfg.Storage["delete"] = configuration.Parameters{"enabled": true}
		ttl := u.MaxAge.Duration
		cfg.Proxy = configuration.Proxy{RemoteURL: u.URL(), Username: u.Username, Password: u.Password, TTL: &ttl}
		// One Prometheus registration per process: only the hosted app.
		cfg.HTTP.Debug.Prometheus.Enabled = false
		app, err := newApp(ctx, &cfg)
		if err != nil {
			return nil, fmt.Errorf("mirror %s: %w", u.Namespace, err)
		}
		if hosted.Storage.Type() != "filesystem" {
			mroot = ""
		}
		mr := &mirror{up: u, handler: app, root: mroot, tags: map[string]tagEntry{}}
		m.byNS[u.Namespace] = mr
		if u.Default {
			m.def = mr
		}
		log.InfoContext(ctx, "mirror configured", "namespace", u.Namespace, "upstream", u.URL(),
			"credentials", u.Username != "", "manifest_revalidate", u.ManifestRevalidate.String(), "max_age", ttl.String())
	}
	return m, nil
}

// newApp is handlers.NewApp with its configuration panics made errors.
func newApp(ctx context.Context, cfg *configuration.Configuration) (h http.Handler, err error) {
	defer func() {
		if p := recover(); p != nil {
			h, err = nil, fmt.Errorf("%w: %v", ErrConfig, p)
		}
	}()
	return handlers.NewApp(ctx, cfg), nil
}

// installTransport replaces http.DefaultTransport, which Distribution's
// proxy uses for every upstream request, with one that applies each
// upstream's CA and user agent by host. It is process-wide; the registry
// process makes no other outgoing HTTP requests through it.
func installTransport(ups []Upstream, log *slog.Logger) error {
	rt, ok := http.DefaultTransport.(*hostTransport)
	if !ok {
		base, ok := http.DefaultTransport.(*http.Transport)
		if !ok {
			return fmt.Errorf("%w: the default HTTP transport was replaced by something else", ErrConfig)
		}
		rt = &hostTransport{byHost: map[string]hostConf{}, fallback: base, log: log}
	}
	base := rt.fallback.(*http.Transport)
	for _, u := range ups {
		tr := base.Clone()
		tr.DialContext = (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext
		tr.ResponseHeaderTimeout = time.Minute
		if u.CA != "" {
			pem, err := os.ReadFile(u.CA)
			if err != nil {
				return fmt.Errorf("%w: CA of %s: %v", ErrConfig, u.Namespace, err)
			}
			pool, err := x509.SystemCertPool()
			if err != nil {
				pool = x509.NewCertPool()
			}
			if !pool.AppendCertsFromPEM(pem) {
				return fmt.Errorf("%w: CA of %s: no certificate in %s", ErrConfig, u.Namespace, u.CA)
			}
			tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
		}
		rt.mu.Lock()
		rt.byHost[u.Host] = hostConf{tr: tr, ua: u.UserAgent}
		rt.mu.Unlock()
	}
	http.DefaultTransport = rt
	return nil
}

type hostConf struct {
	tr http.RoundTripper
	ua string
}

// hostTransport sends each request with its upstream's transport and user
// agent. Token realms on other hosts (auth.docker.io) use the default.
type hostTransport struct {
	mu       sync.RWMutex
	byHost   map[string]hostConf
	failed   map[string]time.Time // last transport error by host
	fallback http.RoundTripper
	log      *slog.Logger
}

func (h *hostTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	h.mu.RLock()
	c, ok := h.byHost[r.URL.Host]
	h.mu.RUnlock()
	if !ok {
		return h.fallback.RoundTrip(r)
	}
	r = r.Clone(r.Context())
	r.Header.Set("User-Agent", c.ua)
	resp, err := c.tr.RoundTrip(r)
	if err != nil && r.Context().Err() == nil {
		h.mu.Lock()
		if h.failed == nil {
			h.failed = map[string]time.Time{}
		}
		h.failed[r.URL.Host] = time.Now()
		h.mu.Unlock()
		// Distribution's proxy then serves what it has cached (tags
		// past their revalidation time included) or fails.
		h.log.Warn("mirror: upstream unreachable, serving from cache where possible",
			"upstream", r.URL.Host, "err", err.Error())
	}
	return resp, err
}

// lastFailure is when a request to host last failed (zero if never).
func (h *hostTransport) lastFailure(host string) time.Time {
	h.mu.RLock()
	defer h.mu.RUnlock()
	return h.failed[host]
}
