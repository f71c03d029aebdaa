package sidecar

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"sync"
	"time"
)

// toRegistry sets what every request to the registry carries, on both
// paths (ReverseProxy for writes, readProxy for reads): where the client
// sent it, so Location headers point there, and no credentials. It returns
// the Host to send.
func toRegistry(h http.Header, o origin) string {
	h.Del("Authorization")
	h.Del("Forwarded")
	h.Set("X-Forwarded-For", o.client)
	h.Set("X-Forwarded-Proto", o.scheme)
	h.Set("X-Forwarded-Host", o.host)
	return o.host
}

// bufferPool recycles the proxy's copy buffers; 64 KiB copies a blob with
// few syscalls without holding much memory per stream.
type bufferPool struct{ p sync.Pool }

func newBufferPool() *bufferPool {
	return &bufferPool{p: sync.Pool{New: func() any { b := make([]byte, 64<<10); return &b }}}
}

func (b *bufferPool) Get() []byte  { return *(b.p.Get().(*[]byte)) }
func (b *bufferPool) Put(x []byte) { b.p.Put(&x) }

// newTransport is the connection pool to the registry on the pod's
// loopback. Proxies from the environment are ignored on purpose.
func newTransport() *http.Transport {
	return &http.Transport{
		Proxy:               nil,
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:        256,
		MaxIdleConnsPerHost: 256,
		IdleConnTimeout:     90 * time.Second,
		DisableCompression:  true,
		// Blob uploads can take a while to answer after the last byte
		// (Distribution verifies the digest), so no response timeout.
		WriteBufferSize: 64 << 10,
		ReadBufferSize:  64 << 10,
	}
}

// newProxy forwards to upstream, streaming in both directions. The
// registry sees the Host the client used and X-Forwarded-Proto/-Host set by
// the sidecar from the request's origin (client-sent X-Forwarded-* and
// Forwarded are dropped by ReverseProxy before Rewrite, and believed only
// from trusted proxies), so the Location headers it writes point at
// the address the client used. Authorization never reaches the registry.
func newProxy(upstream *url.URL, transport http.RoundTripper, log *slog.Logger) *httputil.ReverseProxy {
	return &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(upstream)
			pr.Out.Host = toRegistry(pr.Out.Header, originFrom(pr.In.Context()))
		},
		Transport:     transport,
		FlushInterval: 100 * time.Millisecond,
		BufferPool:    newBufferPool(),
		ErrorLog:      slog.NewLogLogger(log.Handler(), slog.LevelWarn),
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			if errors.Is(err, context.Canceled) || r.Context().Err() != nil {
				// The client went away; there is nobody to answer.
				return
			}
			log.WarnContext(r.Context(), "registry request failed",
				"method", r.Method, "path", r.URL.Path, "err", err)
			errBadGateway().write(w, r)
		},
	}
}
