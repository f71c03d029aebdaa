package sidecar

import (
	"bufio"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"sync/atomic"
	"time"
)

// readProxy serves reads (GET, HEAD) with a lean HTTP/1.1 client of its
// own: request and response on the handler's goroutine, no Transport
// goroutines and channel hand-offs per request. Blob bodies to plain-HTTP
// clients are not even copied through user space. The registry sends blob files with sendfile; the
// ReverseProxy would then read every byte into the sidecar and write it out
// again, which on loopback costs about as much CPU as the registry itself.
// Here the body goes from the upstream TCP connection to the client's with
// splice(2): http.response.ReadFrom hands an io.LimitedReader over a
// *net.TCPConn to the client TCPConn's ReadFrom, which splices on Linux.
//
// TLS clients and HTTP/2 get the same bodies copied (ReadFrom falls back
// to a copy there); writes take the ReverseProxy.
type readProxy struct {
	upstream *url.URL
	dialer   net.Dialer
	idle     chan *upConn
	log      *slog.Logger
	spliced  atomic.Int64 // bodies sent on the splice path (tests)
}

type upConn struct {
	c  *net.TCPConn
	br *bufio.Reader
}

func newReadProxy(upstream *url.URL, log *slog.Logger) *readProxy {
	if upstream.Scheme != "http" {
		return nil
	}
	return &readProxy{
		upstream: upstream,
		dialer:   net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second},
		idle:     make(chan *upConn, 128),
		log:      log,
	}
}

// eligible reports whether a request takes this path: every read. Writes
// (with bodies, uploads) go through the ReverseProxy.
func (b *readProxy) eligible(r *http.Request) bool {
	return b != nil && (r.Method == http.MethodGet || r.Method == http.MethodHead)
}

func (b *readProxy) get(ctx context.Context) (*upConn, error) {
	select {
	case uc := <-b.idle:
		return uc, nil
	default:
	}
	c, err := b.dialer.DialContext(ctx, "tcp", b.upstream.Host)
	if err != nil {
		return nil, err
	}
	tc, ok := c.(*net.TCPConn)
	if !ok {
		c.Close()
		return nil, errors.New("upstream connection is not TCP")
	}
	return &upConn{c: tc, br: bufio.NewReaderSize(tc, 16<<10)}, nil
}

func (b *readProxy) put(uc *upConn) {
	select {
	case b.idle <- uc:
	default:
		uc.c.Close()
	}
}

// serve proxies one blob GET. It returns false, having written nothing,
// when the request should take the ordinary proxy path instead.
func (b *readProxy) serve(w http.ResponseWriter, r *http.Request) bool {
	rf, ok := w.(io.ReaderFrom)
	if !ok {
		return false
	}
	out := r.Clone(r.Context())
	out.URL.Scheme, out.URL.Host = b.upstream.Scheme, b.upstream.Host
	out.RequestURI = ""
	for _, h := range hopHeaders {
		out.Header.Del(h)
	}
	out.Host = toRegistry(out.Header, originFrom(r.Context()))

	uc, err := b.get(r.Context())
	if err != nil {
		return false
	}
	// A client that goes away unblocks whatever waits on the upstream;
	// such a connection is not reused.
	stop := context.AfterFunc(r.Context(), func() { _ = uc.c.SetDeadline(time.Unix(1, 0)) })
	reusable := func() bool { return stop() }
	if err := out.Write(uc.c); err != nil {
		uc.c.Close()
		// A pooled connection the registry closed meanwhile: let the
		// ordinary path retry with its own connection.
		return false
	}
	resp, err := http.ReadResponse(uc.br, out)
	if err != nil {
		uc.c.Close()
		return false
	}
	h := w.Header()
	for k, v := range resp.Header {
		h[k] = v
	}
	for _, k := range hopHeaders {
		h.Del(k)
	}
	if r.Method == http.MethodHead || resp.ContentLength == 0 {
		w.WriteHeader(resp.StatusCode)
		resp.Body.Close()
		if !reusable() || resp.Close || uc.br.Buffered() > 0 {
			uc.c.Close()
			return true
		}
		b.put(uc)
		return true
	}
	if resp.ContentLength < 0 || len(resp.TransferEncoding) > 0 {
		// Unknown length (chunked JSON lists): copy through the
		// body reader, which undoes the chunking.
		w.WriteHeader(resp.StatusCode)
		_, err := io.Copy(w, resp.Body)
		resp.Body.Close()
		if !reusable() || err != nil || resp.Close || uc.br.Buffered() > 0 {
			uc.c.Close()
			return true
		}
		b.put(uc)
		return true
	}
	w.WriteHeader(resp.StatusCode)
	// The part of the body already read into the buffer goes first; the
	// rest is spliced straight from the socket.
	buffered := min(int64(uc.br.Buffered()), resp.ContentLength)
	peek, _ := uc.br.Peek(int(buffered))
	if _, err := w.Write(peek); err != nil {
		uc.c.Close()
		return true
	}
	_, _ = uc.br.Discard(int(buffered))
	rest := resp.ContentLength - buffered
	n, err := rf.ReadFrom(&io.LimitedReader{R: uc.c, N: rest})
	b.spliced.Add(1)
	if !reusable() || err != nil || n != rest || resp.Close || uc.br.Buffered() > 0 {
		uc.c.Close()
		return true
	}
	b.put(uc)
	return true
}

// hopHeaders are not forwarded (RFC 9110 7.6.1).
var hopHeaders = []string{"Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate",
	"Proxy-Authorization", "Te", "Trailer", "Transfer-Encoding", "Upgrade"}
