package sidecar

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"

	"github.com/mreg-dev/mreg/internal/fileid"
	"sync"
)

// certSource serves the certificate in tls.crt/tls.key and notices when the
// files change: a stat of both on every new connection (os.Stat follows
// symlinks, so Kubernetes' atomic ..data symlink swap of a mounted Secret
// counts as a change too). Both files present: HTTPS. Otherwise: HTTP.
type certSource struct {
	certFile, keyFile string
	log               *slog.Logger

	mu      sync.Mutex
	crtInfo os.FileInfo
	keyInfo os.FileInfo
	cert    *tls.Certificate // last good pair, nil when none
	loadErr error            // error of the current files, if unusable
}

// errNoUsableCert: both files exist but have never formed a usable pair.
var errNoUsableCert = errors.New("tls.crt and tls.key exist but are not a usable pair")

// refresh returns the certificate to use for a new connection: nil for
// plain HTTP. A broken pair keeps the last good certificate; with none, the
// connection is refused rather than silently downgraded to plain HTTP.
func (c *certSource) refresh() (*tls.Certificate, error) {
	crt, errC := fileid.Stat(c.certFile)
	key, errK := fileid.Stat(c.keyFile)
	if err := errors.Join(errC, errK); err != nil {
		return nil, fmt.Errorf("stat tls files: %w", err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if fileid.Same(c.crtInfo, crt) && fileid.Same(c.keyInfo, key) {
		return c.current()
	}
	c.crtInfo, c.keyInfo = crt, key
	if crt == nil || key == nil {
		if c.cert != nil {
			c.log.Info("tls files removed, serving plain HTTP")
		}
		c.cert, c.loadErr = nil, nil
		return nil, nil
	}
	pair, err := tls.LoadX509KeyPair(c.certFile, c.keyFile)
	if err != nil {
		c.loadErr = err
		c.log.Error("tls files unusable", "err", err, "keeping_previous", c.cert != nil)
		return c.current()
	}
	c.cert, c.loadErr = &pair, nil
	c.log.Info("tls certificate loaded", "subject", pair.Leaf.Subject.String(),
		"dns", pair.Leaf.DNSNames, "not_after", pair.Leaf.NotAfter)
	return c.cert, nil
}

// current must be called with c.mu held.
func (c *certSource) current() (*tls.Certificate, error) {
	if c.cert == nil && c.loadErr != nil {
		return nil, fmt.Errorf("%w: %v", errNoUsableCert, c.loadErr)
	}
	if c.cert == nil && c.crtInfo != nil && c.keyInfo != nil {
		return nil, errNoUsableCert
	}
	return c.cert, nil
}

// getCertificate is the tls.Config hook: the pair chosen at Accept.
func (c *certSource) getCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cert == nil {
		return nil, errNoUsableCert
	}
	return c.cert, nil
}

// tlsConfig is the server side: TLS 1.2 minimum, HTTP/2 offered.
func (c *certSource) tlsConfig() *tls.Config {
	return &tls.Config{
		MinVersion:     tls.VersionTLS12,
		GetCertificate: c.getCertificate,
		NextProtos:     []string{"h2", "http/1.1"},
	}
}

// switchListener decides per connection between TLS and plain HTTP, so
// adding or removing the certificate takes effect without a restart.
type switchListener struct {
	net.Listener
	src *certSource
	cfg *tls.Config
	log *slog.Logger
}

func (l *switchListener) Accept() (net.Conn, error) {
	for {
		conn, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		cert, err := l.src.refresh()
		if err != nil {
			l.log.Warn("refusing connection: no usable certificate", "remote", conn.RemoteAddr().String(), "err", err)
			_ = conn.Close()
			continue
		}
		if cert == nil {
			return conn, nil
		}
		return tls.Server(conn, l.cfg), nil
	}
}
