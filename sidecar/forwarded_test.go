package sidecar

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/netip"
	"net/url"
	"regexp"
	"strings"
	"testing"
)

func fwdTrust(prefixes ...string) stackOpt {
	return func(c *Config) {
		c.TrustedProxies = nil
		for _, p := range prefixes {
			c.TrustedProxies = append(c.TrustedProxies, netip.MustParsePrefix(p))
		}
	}
}

// fwdProxy is a TLS reverse proxy in front of the sidecar at target, as a
// deployment would put one: it sets X-Forwarded-For (appending to what the
// client sent), -Host and -Proto.
func fwdProxy(t *testing.T, target string) *httptest.Server {
	t.Helper()
	u, err := url.Parse(target)
	if err != nil {
		t.Fatal(err)
	}
	rp := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(u)
			pr.SetXForwarded()
		},
		ErrorLog: nil,
	}
	ts := httptest.NewTLSServer(rp)
	t.Cleanup(ts.Close)
	return ts
}

// fwdDo sends a request with optional Basic credentials and headers.
func fwdDo(t *testing.T, c *http.Client, method, url string, cr cred, hdr map[string]string, body io.Reader) tkResp {
	t.Helper()
	req, err := http.NewRequest(method, url, body)
	if err != nil {
		t.Fatal(err)
	}
	if cr.user != "" {
		req.SetBasicAuth(cr.user, cr.pass)
	}
	for k, v := range hdr {
		if strings.EqualFold(k, "Host") {
			req.Host = v
			continue
		}
		req.Header.Set(k, v)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return tkResp{resp, b}
}

var fwdRealmRe = regexp.MustCompile(`realm="([^"]*)"`)

func fwdRealm(t *testing.T, r tkResp) string {
	t.Helper()
	if r.StatusCode != http.StatusUnauthorized {
		t.Fatalf("status %d %s, want 401", r.StatusCode, r.body)
	}
	m := fwdRealmRe.FindStringSubmatch(r.Header.Get("WWW-Authenticate"))
	if m == nil {
		t.Fatalf("no realm in %q", r.Header.Get("WWW-Authenticate"))
	}
	return m[1]
}

// fwdUploadLocation starts a blob upload as admin and returns its Location.
func fwdUploadLocation(t *testing.T, c *http.Client, base, repo string, hdr map[string]string) string {
	t.Helper()
	r := fwdDo(t, c, "POST", base+"/v2/"+repo+"/blobs/uploads/", credAdmin, hdr, nil)
	if r.StatusCode != http.StatusAccepted {
		t.Fatalf("start upload: %d %s", r.StatusCode, r.body)
	}
	return r.Header.Get("Location")
}

var fwdSpoof = map[string]string{
	"X-Forwarded-Host":  "evil.example",
	"X-Forwarded-Proto": "https",
	"X-Forwarded-For":   "6.6.6.6",
	"Forwarded":         `for=6.6.6.6;host=evil.example;proto=https`,
}

func TestForwardedThroughTrustedProxy(t *testing.T) {
	s := newStack(t, fwdTrust("127.0.0.1/32"))
	proxy := fwdProxy(t, s.sidecarURL)
	c := proxy.Client()
	pu, _ := url.Parse(proxy.URL)
	want := "https://" + pu.Host

	t.Run("realm", func(t *testing.T) {
		r := fwdDo(t, c, "GET", proxy.URL+"/v2/", credAnon, nil, nil)
		if got := r.Header.Get("WWW-Authenticate"); got != `Bearer realm="`+want+`/token",service="mreg"` {
			t.Fatalf("WWW-Authenticate = %q, want realm %s/token", got, want)
		}
		r = fwdDo(t, c, "GET", proxy.URL+"/v2/x/tags/list", credAnon, nil, nil)
		if got := r.Header.Get("WWW-Authenticate"); got != `Bearer realm="`+want+`/token",service="mreg",scope="repository:x:pull"` {
			t.Fatalf("WWW-Authenticate = %q", got)
		}
	})
	t.Run("client headers replaced by the proxy", func(t *testing.T) {
		// httputil.ReverseProxy drops what the client sent and sets its own.
		r := fwdDo(t, c, "GET", proxy.URL+"/v2/", credAnon, fwdSpoof, nil)
		if got := fwdRealm(t, r); got != want+"/token" {
			t.Fatalf("realm = %q, want %s/token", got, want)
		}
	})
	t.Run("upload location", func(t *testing.T) {
		loc := fwdUploadLocation(t, c, proxy.URL, "x", nil)
		if !strings.HasPrefix(loc, want+"/v2/x/blobs/uploads/") {
			t.Fatalf("Location = %q, want %s/v2/x/blobs/uploads/…", loc, want)
		}
		// The Location works: finish the upload through the proxy.
		body := []byte("hello through the proxy")
		dg := fmt.Sprintf("sha256:%x", sha256.Sum256(body))
		u, err := url.Parse(loc)
		if err != nil {
			t.Fatal(err)
		}
		q := u.Query()
		q.Set("digest", dg)
		u.RawQuery = q.Encode()
		r := fwdDo(t, c, "PUT", u.String(), credAdmin, map[string]string{"Content-Type": "application/octet-stream"}, bytes.NewReader(body))
		if r.StatusCode != http.StatusCreated {
			t.Fatalf("finish upload: %d %s", r.StatusCode, r.body)
		}
		if got := r.Header.Get("Location"); !strings.HasPrefix(got, want+"/v2/x/blobs/"+dg) {
			t.Fatalf("blob Location = %q", got)
		}
		r = fwdDo(t, c, "GET", want+"/v2/x/blobs/"+dg, credUser, nil, nil)
		if r.StatusCode != http.StatusOK || !bytes.Equal(r.body, body) {
			t.Fatalf("pull through the proxy: %d %q", r.StatusCode, r.body)
		}
	})
	t.Run("token flow", func(t *testing.T) {
		r := fwdDo(t, c, "POST", proxy.URL+"/v2/y/blobs/uploads/", credAnon, nil, nil)
		realm := fwdRealm(t, r)
		if realm != want+"/token" {
			t.Fatalf("realm = %q", realm)
		}
		r = fwdDo(t, c, "GET", realm+"?service=mreg&scope=repository:y:pull,push", credAdmin, nil, nil)
		var b tkTokenBody
		if r.StatusCode != 200 || json.Unmarshal(r.body, &b) != nil || b.AccessToken == "" {
			t.Fatalf("token through the proxy: %d %s", r.StatusCode, r.body)
		}
		r = fwdDo(t, c, "POST", proxy.URL+"/v2/y/blobs/uploads/", credAnon,
			map[string]string{"Authorization": "Bearer " + b.AccessToken}, nil)
		if r.StatusCode != http.StatusAccepted || !strings.HasPrefix(r.Header.Get("Location"), want+"/v2/y/blobs/uploads/") {
			t.Fatalf("push with token: %d Location %q", r.StatusCode, r.Header.Get("Location"))
		}
	})
}

func TestForwardedHeadersFromUntrustedClientIgnored(t *testing.T) {
	for name, opt := range map[string]stackOpt{
		"no trusted proxies":     fwdTrust(),
		"other trusted proxies":  fwdTrust("10.0.0.0/8", "192.168.0.0/16"),
		"trusted IPv6 loopback":  fwdTrust("::1/128"),
		"trusted other loopback": fwdTrust("127.0.0.2/32"),
	} {
		t.Run(name, func(t *testing.T) {
			s := newStack(t, opt)
			for _, h := range []map[string]string{
				fwdSpoof,
				{"X-Forwarded-Host": "evil.example", "X-Forwarded-Proto": "https"},
				{"Forwarded": `for=6.6.6.6;host=evil.example;proto=https`},
				{"Forwarded": `host="evil.example";proto="https"`},
			} {
				r := fwdDo(t, http.DefaultClient, "GET", s.sidecarURL+"/v2/x/tags/list", credAnon, h, nil)
				if got := fwdRealm(t, r); got != s.sidecarURL+"/token" {
					t.Errorf("headers %v: realm = %q, want %s/token", h, got, s.sidecarURL)
				}
				loc := fwdUploadLocation(t, http.DefaultClient, s.sidecarURL, "x", h)
				if !strings.HasPrefix(loc, s.sidecarURL+"/v2/x/blobs/uploads/") {
					t.Errorf("headers %v: Location = %q, want %s/v2/x/blobs/uploads/…", h, loc, s.sidecarURL)
				}
			}
		})
	}
}

func TestForwardedExternalURL(t *testing.T) {
	const ext = "https://registry.example.com"
	for name, opts := range map[string][]stackOpt{
		"direct":              {func(c *Config) { c.ExternalURL = ext }},
		"with trusted proxy":  {func(c *Config) { c.ExternalURL = ext }, fwdTrust("127.0.0.1/32")},
		"with trailing slash": {func(c *Config) { c.ExternalURL = ext + "/" }},
	} {
		t.Run(name, func(t *testing.T) {
			s := newStack(t, opts...)
			for _, h := range []map[string]string{nil, fwdSpoof} {
				r := fwdDo(t, http.DefaultClient, "GET", s.sidecarURL+"/v2/x/tags/list", credAnon, h, nil)
				if got := r.Header.Get("WWW-Authenticate"); got != `Bearer realm="`+ext+`/token",service="mreg",scope="repository:x:pull"` {
					t.Errorf("headers %v: WWW-Authenticate = %q", h, got)
				}
				loc := fwdUploadLocation(t, http.DefaultClient, s.sidecarURL, "x", h)
				if !strings.HasPrefix(loc, ext+"/v2/x/blobs/uploads/") {
					t.Errorf("headers %v: Location = %q, want %s/v2/x/blobs/uploads/…", h, loc, ext)
				}
			}
		})
	}
	t.Run("invalid", func(t *testing.T) {
		for _, bad := range []string{"registry.example.com", "ftp://registry.example.com", "https://", "://x", "https//x"} {
			_, err := New(context.Background(), Config{Upstream: "http://127.0.0.1:1", AuthDir: t.TempDir(), ExternalURL: bad})
			if err == nil {
				t.Errorf("ExternalURL %q accepted", bad)
			}
		}
	})
}

// fwdServer is a Server (not serving) for calling resolveOrigin.
func fwdServer(t *testing.T, ext string, trusted ...string) *Server {
	t.Helper()
	dir := t.TempDir()
	addUser(t, dir, userName, userPassword, false)
	cfg := Config{Upstream: "http://127.0.0.1:1", AuthDir: dir, ExternalURL: ext, Auth: AuthenticatorOptions{DummyCost: testCost}}
	fwdTrust(trusted...)(&cfg)
	s, err := New(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestForwardedResolveOrigin(t *testing.T) {
	loopback := fwdServer(t, "", "127.0.0.1/32")
	chain := fwdServer(t, "", "127.0.0.1/32", "10.0.0.0/8", "2001:db8:ffff::/48")
	none := fwdServer(t, "")
	external := fwdServer(t, "https://registry.example.com", "127.0.0.1/32")
	const host = "sidecar.internal:5000"

	tests := []struct {
		name   string
		srv    *Server
		remote string
		tls    bool
		hdr    http.Header
		want   origin
	}{
		{"direct", loopback, "192.0.2.1:1234", false, nil, origin{"192.0.2.1", "http", host}},
		{"direct TLS", loopback, "192.0.2.1:1234", true, nil, origin{"192.0.2.1", "https", host}},
		{"direct IPv6", loopback, "[2001:db8::5]:1234", false, nil, origin{"2001:db8::5", "http", host}},
		{"untrusted sends XFF", loopback, "192.0.2.1:1234", false,
			http.Header{"X-Forwarded-For": {"1.2.3.4"}, "X-Forwarded-Host": {"evil.example"}, "X-Forwarded-Proto": {"https"}},
			origin{"192.0.2.1", "http", host}},
		{"untrusted sends Forwarded", loopback, "192.0.2.1:1234", false,
			http.Header{"Forwarded": {"for=1.2.3.4;host=evil.example;proto=https"}},
			origin{"192.0.2.1", "http", host}},
		{"no trusted proxies", none, "127.0.0.1:1234", false,
			http.Header{"X-Forwarded-For": {"1.2.3.4"}, "X-Forwarded-Host": {"evil.example"}, "X-Forwarded-Proto": {"https"}},
			origin{"127.0.0.1", "http", host}},
		{"trusted, no headers", loopback, "127.0.0.1:1234", false, nil, origin{"127.0.0.1", "http", host}},
		{"trusted IPv4-mapped", loopback, "[::ffff:127.0.0.1]:1234", false,
			http.Header{"X-Forwarded-For": {"1.2.3.4"}}, origin{"1.2.3.4", "http", host}},

		// X-Forwarded-*.
		{"XFF single", loopback, "127.0.0.1:1234", false,
			http.Header{"X-Forwarded-For": {"1.2.3.4"}, "X-Forwarded-Host": {"registry.example"}, "X-Forwarded-Proto": {"https"}},
			origin{"1.2.3.4", "https", "registry.example"}},
		{"XFF proxy itself last", loopback, "127.0.0.1:1234", false,
			http.Header{"X-Forwarded-For": {"1.2.3.4, 127.0.0.1"}}, origin{"1.2.3.4", "http", host}},
		{"XFF client-prepended fake", loopback, "127.0.0.1:1234", false,
			http.Header{"X-Forwarded-For": {"6.6.6.6, 1.2.3.4"}}, origin{"1.2.3.4", "http", host}},
		{"XFF fake in a separate header line", loopback, "127.0.0.1:1234", false,
			http.Header{"X-Forwarded-For": {"6.6.6.6", "1.2.3.4"}}, origin{"1.2.3.4", "http", host}},
		{"XFF fake trusted address prepended", loopback, "127.0.0.1:1234", false,
			http.Header{"X-Forwarded-For": {"127.0.0.1, 1.2.3.4"}}, origin{"1.2.3.4", "http", host}},
		{"XFF all trusted", loopback, "127.0.0.1:1234", false,
			http.Header{"X-Forwarded-For": {"127.0.0.1"}}, origin{"127.0.0.1", "http", host}},
		{"XFF with port", loopback, "127.0.0.1:1234", false,
			http.Header{"X-Forwarded-For": {"1.2.3.4:5678"}}, origin{"1.2.3.4", "http", host}},
		{"XFF IPv6", loopback, "127.0.0.1:1234", false,
			http.Header{"X-Forwarded-For": {"2001:db8::1"}}, origin{"2001:db8::1", "http", host}},
		{"XFF bracketed IPv6 with port", loopback, "127.0.0.1:1234", false,
			http.Header{"X-Forwarded-For": {"[2001:db8::1]:443"}}, origin{"2001:db8::1", "http", host}},
		{"XFF chain of trusted proxies", chain, "10.0.0.1:1234", false,
			http.Header{"X-Forwarded-For": {"6.6.6.6, 1.2.3.4, 10.0.0.3, 10.0.0.2"}}, origin{"1.2.3.4", "http", host}},
		{"XFF chain, IPv6 proxy", chain, "10.0.0.1:1234", false,
			http.Header{"X-Forwarded-For": {"1.2.3.4, 2001:db8:ffff::7"}}, origin{"1.2.3.4", "http", host}},
		{"XFP list", loopback, "127.0.0.1:1234", false,
			http.Header{"X-Forwarded-Proto": {"https, http"}}, origin{"127.0.0.1", "https", host}},
		{"XFP bogus ignored", loopback, "127.0.0.1:1234", true,
			http.Header{"X-Forwarded-Proto": {"gopher"}}, origin{"127.0.0.1", "https", host}},
		{"XFP http over TLS", loopback, "127.0.0.1:1234", true,
			http.Header{"X-Forwarded-Proto": {"http"}}, origin{"127.0.0.1", "http", host}},
		{"XFH with port", loopback, "127.0.0.1:1234", false,
			http.Header{"X-Forwarded-Host": {"registry.example:8443"}}, origin{"127.0.0.1", "http", "registry.example:8443"}},
		{"XFH IPv6", loopback, "127.0.0.1:1234", false,
			http.Header{"X-Forwarded-Host": {"[2001:db8::1]:8443"}}, origin{"127.0.0.1", "http", "[2001:db8::1]:8443"}},
		{"XFH with path rejected", loopback, "127.0.0.1:1234", false,
			http.Header{"X-Forwarded-Host": {"evil.example/x"}}, origin{"127.0.0.1", "http", host}},
		{"XFH with userinfo rejected", loopback, "127.0.0.1:1234", false,
			http.Header{"X-Forwarded-Host": {"user@evil.example"}}, origin{"127.0.0.1", "http", host}},
		{"XFH with quote rejected", loopback, "127.0.0.1:1234", false,
			http.Header{"X-Forwarded-Host": {`evil.example",x="`}}, origin{"127.0.0.1", "http", host}},

		// RFC 7239 Forwarded.
		{"Forwarded", loopback, "127.0.0.1:1234", false,
			http.Header{"Forwarded": {"for=1.2.3.4;proto=https;host=registry.example"}},
			origin{"1.2.3.4", "https", "registry.example"}},
		{"Forwarded quoted", loopback, "127.0.0.1:1234", false,
			http.Header{"Forwarded": {`for="1.2.3.4:5678";proto="https";host="registry.example:8443"`}},
			origin{"1.2.3.4", "https", "registry.example:8443"}},
		{"Forwarded IPv6", loopback, "127.0.0.1:1234", false,
			http.Header{"Forwarded": {`for="[2001:db8::1]:1234";proto=https`}},
			origin{"2001:db8::1", "https", host}},
		{"Forwarded IPv6 without port", loopback, "127.0.0.1:1234", false,
			http.Header{"Forwarded": {`for="[2001:db8::1]"`}}, origin{"2001:db8::1", "http", host}},
		{"Forwarded keys any case, spaces", loopback, "127.0.0.1:1234", false,
			http.Header{"Forwarded": {` For=1.2.3.4 ; PROTO=https ; Host=registry.example `}},
			origin{"1.2.3.4", "https", "registry.example"}},
		{"Forwarded bad host rejected", loopback, "127.0.0.1:1234", false,
			http.Header{"Forwarded": {`for=1.2.3.4;host="evil.example/x"`}}, origin{"1.2.3.4", "http", host}},
		{"Forwarded bad proto ignored", loopback, "127.0.0.1:1234", false,
			http.Header{"Forwarded": {`for=1.2.3.4;proto=javascript`}}, origin{"1.2.3.4", "http", host}},
		{"Forwarded without for", loopback, "127.0.0.1:1234", false,
			http.Header{"Forwarded": {`proto=https;host=registry.example`}}, origin{"127.0.0.1", "https", "registry.example"}},
		{"Forwarded client-prepended fake for", loopback, "127.0.0.1:1234", false,
			http.Header{"Forwarded": {"for=6.6.6.6, for=1.2.3.4;proto=https;host=registry.example"}},
			origin{"1.2.3.4", "https", "registry.example"}},
		{"Forwarded fake in a separate header line", loopback, "127.0.0.1:1234", false,
			http.Header{"Forwarded": {"for=6.6.6.6", "for=1.2.3.4;proto=https;host=registry.example"}},
			origin{"1.2.3.4", "https", "registry.example"}},
		// A proxy that appends to Forwarded: what the client sent comes
		// first. Host and proto must come from the element the trusted
		// proxy added (the one naming the client), like the client address.
		{"Forwarded client-prepended fake host", loopback, "127.0.0.1:1234", false,
			http.Header{"Forwarded": {"for=6.6.6.6;host=evil.example;proto=http, for=1.2.3.4;proto=https;host=registry.example"}},
			origin{"1.2.3.4", "https", "registry.example"}},
		{"Forwarded chain of trusted proxies", chain, "10.0.0.1:1234", false,
			http.Header{"Forwarded": {"for=1.2.3.4;proto=https;host=registry.example, for=10.0.0.2;proto=http;host=lb.internal"}},
			origin{"1.2.3.4", "https", "registry.example"}},
		{"Forwarded chain with client-prepended fake host", chain, "10.0.0.1:1234", false,
			http.Header{"Forwarded": {`host=evil.example;proto=http, for=1.2.3.4;proto=https;host=registry.example, for="[2001:db8:ffff::2]";proto=http;host=lb.internal`}},
			origin{"1.2.3.4", "https", "registry.example"}},

		// --external-url overrides scheme and host, not the client.
		{"external URL", external, "127.0.0.1:1234", false,
			http.Header{"X-Forwarded-For": {"1.2.3.4"}, "X-Forwarded-Host": {"evil.example"}, "X-Forwarded-Proto": {"http"}},
			origin{"1.2.3.4", "https", "registry.example.com"}},
		{"external URL, direct client", external, "192.0.2.9:1", false, nil, origin{"192.0.2.9", "https", "registry.example.com"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := httptest.NewRequest("GET", "http://"+host+"/v2/", nil)
			r.RemoteAddr = tt.remote
			r.Host = host
			if tt.tls {
				r.TLS = &tls.ConnectionState{}
			} else {
				r.TLS = nil
			}
			for k, v := range tt.hdr {
				r.Header[http.CanonicalHeaderKey(k)] = v
			}
			if got := tt.srv.resolveOrigin(r); got != tt.want {
				t.Fatalf("origin = %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestForwardedValidHost(t *testing.T) {
	tests := []struct {
		host string
		ok   bool
	}{
		{"registry.example", true},
		{"registry.example:8443", true},
		{"127.0.0.1", true},
		{"127.0.0.1:5000", true},
		{"[::1]", true},
		{"[2001:db8::1]:5000", true},
		{"localhost", true},
		{"xn--bcher-kva.example", true},

		{"", false},
		{"evil/x", false},
		{"evil.example/", false},
		{"a@b", false},
		{"user:pass@evil.example", false},
		{"x y", false},
		{"x\ty", false},
		{"evil.example?x", false},
		{"evil.example#x", false},
		{`evil\x`, false},
		{`evil"x`, false},
		{"evil\r\nX-Injected: 1", false},
		{"evil\nx", false},
		{"a%2Fb", false},
		{"host:port", false},
		{"a:1:2", false},
		{"[::1", false},
		{strings.Repeat("a", 256), false},
	}
	for _, tt := range tests {
		t.Run(tt.host, func(t *testing.T) {
			if got := validHost(tt.host); got != tt.ok {
				t.Fatalf("validHost(%q) = %v, want %v", tt.host, got, tt.ok)
			}
		})
	}
}

func TestForwardedHostOnly(t *testing.T) {
	for in, want := range map[string]string{
		"1.2.3.4":            "1.2.3.4",
		"1.2.3.4:5":          "1.2.3.4",
		"[::1]:5":            "::1",
		"[::1]":              "::1",
		"::1":                "::1",
		"2001:db8::1":        "2001:db8::1",
		"[2001:db8::1]:1234": "2001:db8::1",
		"":                   "",
		"unknown":            "unknown",
	} {
		if got := hostOnly(in); got != want {
			t.Errorf("hostOnly(%q) = %q, want %q", in, got, want)
		}
	}
}

// A proxy that manages X-Forwarded-* only and passes other client headers
// through unchanged — the usual nginx / ingress-nginx setup
// (proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for, -Proto,
// -Host) — must not let a client choose its address with a Forwarded
// header of its own: the throttle keys on that address, so rotating
// "Forwarded: for=…" would buy unlimited password guesses, and the realm
// and upload URLs would follow the client's host=.
func TestForwardedClientForwardedHeaderThroughXFFProxy(t *testing.T) {
	s := newStack(t, fwdTrust("127.0.0.1/32"), func(c *Config) {
		c.Throttle = ThrottleOptions{FreeFailures: 2}
	})
	u, _ := url.Parse(s.sidecarURL)
	rp := httputil.NewSingleHostReverseProxy(u)
	director := rp.Director
	rp.Director = func(r *http.Request) {
		host := r.Host
		director(r) // appends X-Forwarded-For; leaves Forwarded alone
		r.Header.Set("X-Forwarded-Proto", "https")
		r.Header.Set("X-Forwarded-Host", host)
	}
	proxy := httptest.NewTLSServer(rp)
	t.Cleanup(proxy.Close)
	c := proxy.Client()
	pu, _ := url.Parse(proxy.URL)

	r := fwdDo(t, c, "GET", proxy.URL+"/v2/", credAnon,
		map[string]string{"Forwarded": "for=6.6.6.6;host=evil.example;proto=http"}, nil)
	if got := fwdRealm(t, r); got != "https://"+pu.Host+"/token" {
		t.Errorf("realm = %q, want https://%s/token (the client's own Forwarded header was believed)", got, pu.Host)
	}

	// Throttle the client's real address.
	throttled := false
	for range 6 {
		r := fwdDo(t, c, "GET", proxy.URL+"/v2/", credWrongPass, nil, nil)
		if r.StatusCode == http.StatusTooManyRequests {
			throttled = true
			break
		}
	}
	if !throttled {
		t.Fatal("six wrong passwords from one address were not throttled")
	}
	// Pretending to be someone else must not buy fresh attempts.
	var fresh []string
	for i := range 5 {
		fake := fmt.Sprintf("203.0.113.%d", i+1)
		r := fwdDo(t, c, "GET", proxy.URL+"/v2/", credWrongPass, map[string]string{"Forwarded": "for=" + fake}, nil)
		if r.StatusCode != http.StatusTooManyRequests {
			fresh = append(fresh, fmt.Sprintf("%s→%d", fake, r.StatusCode))
		}
	}
	if len(fresh) > 0 {
		t.Fatalf("throttled client got password checks by sending its own Forwarded header: %v", fresh)
	}
}
