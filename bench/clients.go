package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// A column is one way of reaching the registry, each with its own client
// (connection pool).
const (
	colDirect = "direct"
	colBasic  = "basic"
	colBearer = "bearer"
	colHTTPS  = "https"
)

var columnKeys = []string{colDirect, colBasic, colBearer, colHTTPS}

var columnTitles = map[string]string{
	colDirect: "direct",
	colBasic:  "sidecar+basic",
	colBearer: "sidecar+bearer",
	colHTTPS:  "sidecar+https",
}

type column struct {
	key    string
	base   string // scheme://host:port
	tr     *http.Transport
	hc     *http.Client
	server *proc // the process the client talks to
	tls    bool
	basic  bool // Basic credentials on every request
	bearer bool // tokens from base/token
	st     *stack

	mu     sync.Mutex
	tokens map[string]cachedToken
}

type cachedToken struct {
	value string
	got   time.Time
}

// newTransport is a client pool: keep-alive, no compression, enough idle
// connections for every worker. dial, when set, replaces the dialer.
func newTransport(roots *x509.CertPool, dial func(ctx context.Context, network, addr string) (net.Conn, error)) *http.Transport {
	if dial == nil {
		dial = (&net.Dialer{Timeout: 5 * time.Second}).DialContext
	}
	return &http.Transport{
		Proxy:               nil,
		DialContext:         dial,
		MaxIdleConns:        128,
		MaxIdleConnsPerHost: 64,
		IdleConnTimeout:     90 * time.Second,
		DisableCompression:  true,
		TLSClientConfig:     &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12},
		// HTTP/1.1 in every column (Go does not try HTTP/2 with a custom
		// TLS config unless forced), so the columns differ only by the
		// sidecar and TLS.
		ForceAttemptHTTP2: false,
		WriteBufferSize:   64 << 10,
		ReadBufferSize:    64 << 10,
	}
}

func newColumns(s *stack) map[string]*column {
	mk := func(key, base string, server *proc) *column {
		tr := newTransport(s.roots, nil)
		// The timeout is a safety net; every transfer is far shorter.
		return &column{key: key, base: base, tr: tr, server: server, st: s,
			hc: &http.Client{Transport: tr, Timeout: 3 * time.Minute}, tokens: map[string]cachedToken{}}
	}
	cols := map[string]*column{
		colDirect: mk(colDirect, "http://"+s.regAddr, s.registry),
		colBasic:  mk(colBasic, "http://"+s.sideAddr, s.sidecar),
		colBearer: mk(colBearer, "http://"+s.sideAddr, s.sidecar),
		colHTTPS:  mk(colHTTPS, "https://"+s.tlsAddr, s.sidecarTLS),
	}
	cols[colBasic].basic = true
	cols[colBearer].bearer = true
	cols[colHTTPS].bearer, cols[colHTTPS].tls = true, true
	return cols
}

func (c *column) close() { c.tr.CloseIdleConnections() }

// sidecarProc is the sidecar this column goes through, nil for direct.
func (c *column) sidecarProc() *proc {
	if c.key == colDirect {
		return nil
	}
	return c.server
}

func (c *column) creds(push bool) (string, string) {
	if push {
		return adminName, c.st.adminPass
	}
	return userName, c.st.userPass
}

func basicHeader(user, pass string) string {
	return "Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+pass))
}

// authHeader is the Authorization value for requests on repo: none
// (direct), Basic, or a Bearer token fetched once from /token.
func (c *column) authHeader(ctx context.Context, repo string, push bool) (string, error) {
	user, pass := c.creds(push)
	switch {
	case c.basic:
		return basicHeader(user, pass), nil
	case c.bearer:
		scope := "repository:" + repo + ":pull"
		if push {
			scope += ",push"
		}
		c.mu.Lock()
		t, ok := c.tokens[scope]
		c.mu.Unlock()
		// Tokens live 5 minutes; fetch a fresh one well before that.
		if ok && time.Since(t.got) < 2*time.Minute {
			return "Bearer " + t.value, nil
		}
		tok, err := c.fetchToken(ctx, user, pass, scope)
		if err != nil {
			return "", err
		}
		c.mu.Lock()
		c.tokens[scope] = cachedToken{value: tok, got: time.Now()}
		c.mu.Unlock()
		return "Bearer " + tok, nil
	}
	return "", nil
}

func (c *column) fetchToken(ctx context.Context, user, pass, scope string) (string, error) {
	u := c.base + "/token?service=mreg&scope=" + url.QueryEscape(scope)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return "", err
	}
	req.SetBasicAuth(user, pass)
	resp, err := c.hc.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return "", fmt.Errorf("%s: GET /token: %s: %s", c.key, resp.Status, b)
	}
	var tr struct {
		Token       string `json:"token"`
		AccessToken string `json:"access_token"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&tr); err != nil {
		return "", fmt.Errorf("%s: token response: %w", c.key, err)
	}
	if tr.Token == "" {
		tr.Token = tr.AccessToken
	}
	if tr.Token == "" {
		return "", fmt.Errorf("%s: empty token", c.key)
	}
	return tr.Token, nil
}

// request builds a request with the column's credentials.
func (c *column) request(ctx context.Context, method, u, auth string, body io.Reader, size int64) (*http.Request, error) {
	req, err := http.NewRequestWithContext(ctx, method, u, body)
	if err != nil {
		return nil, err
	}
	if body != nil {
		req.ContentLength = size
		req.Header.Set("Content-Type", "application/octet-stream")
	}
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	return req, nil
}

// do sends req and returns the response if its status is want; otherwise it
// drains and closes it and returns an error.
func (c *column) do(req *http.Request, want int) (*http.Response, error) {
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%s: %s %s: %w", c.key, req.Method, req.URL.Path, err)
	}
	if resp.StatusCode != want {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		resp.Body.Close()
		return nil, fmt.Errorf("%s: %s %s: %s, want %d: %s", c.key, req.Method, req.URL.Path, resp.Status, want, strings.TrimSpace(string(b)))
	}
	return resp, nil
}

// headerTransport adds a fixed Authorization header: go-containerregistry
// then sees /v2/ answer 200 and sends Basic with every request, as
// `curl -u` or a Basic-only client would.
type headerTransport struct {
	rt   http.RoundTripper
	auth string
}

func (h headerTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", h.auth)
	return h.rt.RoundTrip(r)
}

// ref is repo:tag on this column's host.
func (c *column) ref(repoTag string) (name.Reference, error) {
	host := strings.TrimPrefix(strings.TrimPrefix(c.base, "http://"), "https://")
	var opts []name.Option
	if !c.tls {
		opts = append(opts, name.Insecure)
	}
	return name.ParseReference(host+"/"+repoTag, opts...)
}

// remoteOptions configure go-containerregistry the way a client of this
// column would run: anonymous (direct), Basic on every request, or the
// token flow (challenge, /token with the admin's password, Bearer).
func (c *column) remoteOptions(ctx context.Context) []remote.Option {
	opts := []remote.Option{remote.WithContext(ctx)}
	user, pass := c.creds(true)
	switch {
	case c.basic:
		opts = append(opts, remote.WithTransport(headerTransport{rt: c.tr, auth: basicHeader(user, pass)}))
	case c.bearer:
		opts = append(opts, remote.WithTransport(c.tr), remote.WithAuth(&authn.Basic{Username: user, Password: pass}))
	default:
		opts = append(opts, remote.WithTransport(c.tr))
	}
	return opts
}
