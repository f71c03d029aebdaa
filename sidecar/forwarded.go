package sidecar

import (
	"context"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
)

// origin is where a request came from and which address it was sent to,
// as the client sees it. Forwarding headers are believed only from
// configured proxy addresses; --external-url overrides scheme and host.
type origin struct {
	client string // client address (no port)
	scheme string // http or https, as the client used
	host   string // host[:port], as the client used
}

func originFrom(ctx context.Context) origin { return stateFrom(ctx).origin }

// baseURL is the externally visible URL of the sidecar.
func (o origin) baseURL() string { return o.scheme + "://" + o.host }

// trusts reports whether addr is one of the configured proxies.
func (s *Server) trusts(addr string) bool {
	ip, err := netip.ParseAddr(addr)
	if err != nil {
		return false
	}
	ip = ip.Unmap()
	for _, p := range s.cfg.TrustedProxies {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

// withOrigin resolves the request's origin once, for the realm, Location
// headers, logs and throttling, and puts the request's state into its
// context: the one context change of the chain.
func (s *Server) withOrigin(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		st := &reqState{origin: s.resolveOrigin(r)}
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), stateKey, st)))
	})
}

func (s *Server) resolveOrigin(r *http.Request) origin {
	o := origin{client: hostOnly(r.RemoteAddr), scheme: "http", host: r.Host}
	if r.TLS != nil {
		o.scheme = "https"
	}
	if s.trusts(o.client) {
		s.applyForwarded(r, &o)
	}
	if u := s.externalURL; u != nil {
		o.scheme, o.host = u.Scheme, u.Host
	}
	return o
}

// applyForwarded reads the forwarding headers of a trusted proxy. The
// client address is the rightmost one that is not a trusted proxy itself,
// and scheme and host come from that same hop, so a client cannot prepend
// fake ones. X-Forwarded-* wins when X-Forwarded-For is present (what
// nginx, ingress controllers and Go's ReverseProxy maintain, passing a
// client's own Forwarded header through untouched); RFC 7239 Forwarded is
// used only from proxies that send no X-Forwarded-For.
func (s *Server) applyForwarded(r *http.Request, o *origin) {
	xff := splitList(r.Header.Values("X-Forwarded-For"))
	if len(xff) > 0 || r.Header.Get("Forwarded") == "" {
		for i := len(xff) - 1; i >= 0; i-- {
			if i == 0 || !s.trusts(hostOnly(xff[i])) {
				o.client = hostOnly(xff[i])
				break
			}
		}
		// Proxies set these (overwriting what a client sent); in a
		// chain of proxies the leftmost is what the client used.
		if p := firstOf(r.Header.Get("X-Forwarded-Proto")); p == "http" || p == "https" {
			o.scheme = p
		}
		if h := firstOf(r.Header.Get("X-Forwarded-Host")); validHost(h) {
			o.host = h
		}
		return
	}
	elems := splitList(r.Header.Values("Forwarded"))
	if len(elems) == 0 {
		return
	}
	k := 0
	for i := len(elems) - 1; i >= 0; i-- {
		if i == 0 || !s.trusts(hostOnly(parseForwardedElem(elems[i])["for"])) {
			k = i
			break
		}
	}
	hop := parseForwardedElem(elems[k])
	if f := hostOnly(hop["for"]); f != "" {
		o.client = f
	}
	if p := hop["proto"]; p == "http" || p == "https" {
		o.scheme = p
	}
	if h := hop["host"]; validHost(h) {
		o.host = h
	}
}

func splitList(values []string) []string {
	var out []string
	for _, v := range values {
		for _, p := range strings.Split(v, ",") {
			if p = strings.TrimSpace(p); p != "" {
				out = append(out, p)
			}
		}
	}
	return out
}

func firstOf(v string) string {
	f, _, _ := strings.Cut(v, ",")
	return strings.TrimSpace(f)
}

// parseForwardedElem parses one element of a Forwarded header:
// for=…;proto=…;host=… with optional quotes.
func parseForwardedElem(elem string) map[string]string {
	out := map[string]string{}
	for _, pair := range strings.Split(elem, ";") {
		k, v, ok := strings.Cut(strings.TrimSpace(pair), "=")
		if !ok {
			continue
		}
		out[strings.ToLower(strings.TrimSpace(k))] = strings.Trim(strings.TrimSpace(v), `"`)
	}
	return out
}

// hostOnly strips a port and IPv6 brackets: "1.2.3.4:5" → "1.2.3.4",
// "[::1]:5" → "::1".
func hostOnly(hostport string) string {
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		return h
	}
	return strings.Trim(hostport, "[]")
}

// validHost accepts host[:port] without anything that could smuggle a
// path, userinfo or header into a URL built from it.
func validHost(h string) bool {
	if h == "" || len(h) > 255 || strings.ContainsAny(h, "/@?#\\ \t\r\n\"") {
		return false
	}
	u, err := url.Parse("http://" + h)
	return err == nil && u.Host == h
}
