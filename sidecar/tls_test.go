package sidecar

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// testCert returns a self-signed PEM pair for 127.0.0.1 and localhost.
func testCert(t *testing.T, cn string) (certPEM, keyPEM []byte, leaf *x509.Certificate) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: cn},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:     []string{"localhost"},
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1")},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ = x509.ParseCertificate(der)
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}), leaf
}

func writeFile(t *testing.T, path string, b []byte) {
	t.Helper()
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// tlsClient trusts exactly the given certificates and never reuses
// connections, so every request is a new handshake.
func tlsClient(certs ...*x509.Certificate) *http.Client {
	pool := x509.NewCertPool()
	for _, c := range certs {
		pool.AddCert(c)
	}
	return &http.Client{Transport: &http.Transport{
		TLSClientConfig:   &tls.Config{RootCAs: pool},
		ForceAttemptHTTP2: true,
		DisableKeepAlives: true,
	}}
}

// served returns the CN of the certificate the server presents and the
// negotiated protocol.
func served(t *testing.T, c *http.Client, url string) (cn, proto string, status int) {
	t.Helper()
	req, _ := http.NewRequest("GET", url, nil)
	req.SetBasicAuth(userName, userPassword)
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	resp.Body.Close()
	if resp.TLS == nil {
		return "", resp.Proto, resp.StatusCode
	}
	return resp.TLS.PeerCertificates[0].Subject.CommonName, resp.Proto, resp.StatusCode
}

func TestTLSHotReload(t *testing.T) {
	s := newStack(t)
	host := strings.TrimPrefix(s.sidecarURL, "http://")
	httpsURL := "https://" + host + "/v2/"
	crt, key := filepath.Join(s.authDir, "tls.crt"), filepath.Join(s.authDir, "tls.key")

	// No files: plain HTTP.
	if _, proto, status := served(t, http.DefaultClient, s.sidecarURL+"/v2/"); status != 200 || proto != "HTTP/1.1" {
		t.Fatalf("plain HTTP: %d %s", status, proto)
	}

	// Only a certificate: still HTTP (both files are needed).
	c1, k1, leaf1 := testCert(t, "first")
	writeFile(t, crt, c1)
	if _, _, status := served(t, http.DefaultClient, s.sidecarURL+"/v2/"); status != 200 {
		t.Fatalf("cert without key should stay on HTTP: %d", status)
	}

	// Both: HTTPS on the next connection, with HTTP/2.
	writeFile(t, key, k1)
	cn, proto, status := served(t, tlsClient(leaf1), httpsURL)
	if cn != "first" || status != 200 || proto != "HTTP/2.0" {
		t.Fatalf("after adding key: cn=%q proto=%s status=%d", cn, proto, status)
	}

	// Plain HTTP to the TLS port is refused, not served in clear.
	if resp, err := http.Get(s.sidecarURL + "/v2/"); err == nil {
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest {
			t.Fatalf("plain HTTP on TLS port: %d, want 400", resp.StatusCode)
		}
	}

	// Replace in place: the next new connection gets the new certificate.
	c2, k2, leaf2 := testCert(t, "second")
	writeFile(t, key, k2)
	writeFile(t, crt, c2)
	if cn, _, _ := served(t, tlsClient(leaf1, leaf2), httpsURL); cn != "second" {
		t.Fatalf("after replace: cn=%q, want second", cn)
	}

	// A broken pair keeps the last good certificate.
	writeFile(t, crt, c1) // c1 does not match k2
	if cn, _, _ := served(t, tlsClient(leaf1, leaf2), httpsURL); cn != "second" {
		t.Fatalf("after mismatch: cn=%q, want the previous good one", cn)
	}

	// Kubernetes-style Secret volume: files are symlinks into ..data, which
	// is itself a symlink swapped atomically.
	for _, f := range []string{crt, key} {
		if err := os.Remove(f); err != nil {
			t.Fatal(err)
		}
	}
	c3, k3, leaf3 := testCert(t, "third")
	c4, k4, leaf4 := testCert(t, "fourth")
	mkData := func(name string, c, k []byte) {
		d := filepath.Join(s.authDir, name)
		if err := os.Mkdir(d, 0o700); err != nil {
			t.Fatal(err)
		}
		writeFile(t, filepath.Join(d, "tls.crt"), c)
		writeFile(t, filepath.Join(d, "tls.key"), k)
	}
	mkData("..v1", c3, k3)
	mkData("..v2", c4, k4)
	if err := os.Symlink("..v1", filepath.Join(s.authDir, "..data")); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"tls.crt", "tls.key"} {
		if err := os.Symlink(filepath.Join("..data", f), filepath.Join(s.authDir, f)); err != nil {
			t.Fatal(err)
		}
	}
	all := tlsClient(leaf1, leaf2, leaf3, leaf4)
	if cn, _, _ := served(t, all, httpsURL); cn != "third" {
		t.Fatalf("symlinked secret: cn=%q, want third", cn)
	}
	tmp := filepath.Join(s.authDir, "..data_tmp")
	if err := os.Symlink("..v2", tmp); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(s.authDir, "..data")); err != nil {
		t.Fatal(err)
	}
	if cn, _, _ := served(t, all, httpsURL); cn != "fourth" {
		t.Fatalf("after ..data swap: cn=%q, want fourth", cn)
	}

	// Both removed: plain HTTP again.
	for _, f := range []string{crt, key} {
		if err := os.Remove(f); err != nil {
			t.Fatal(err)
		}
	}
	if _, proto, status := served(t, http.DefaultClient, s.sidecarURL+"/v2/"); status != 200 || proto != "HTTP/1.1" {
		t.Fatalf("after removing both: %d %s", status, proto)
	}
}

func TestTLSMinimumVersion(t *testing.T) {
	s := newStack(t)
	c, k, leaf := testCert(t, "v")
	writeFile(t, filepath.Join(s.authDir, "tls.crt"), c)
	writeFile(t, filepath.Join(s.authDir, "tls.key"), k)
	pool := x509.NewCertPool()
	pool.AddCert(leaf)
	host := strings.TrimPrefix(s.sidecarURL, "http://")
	conn, err := tls.Dial("tcp", host, &tls.Config{RootCAs: pool, MaxVersion: tls.VersionTLS11, MinVersion: tls.VersionTLS10})
	if err == nil {
		conn.Close()
		t.Fatal("TLS 1.1 handshake succeeded")
	}
	conn, err = tls.Dial("tcp", host, &tls.Config{RootCAs: pool, MaxVersion: tls.VersionTLS12})
	if err != nil {
		t.Fatalf("TLS 1.2: %v", err)
	}
	conn.Close()
}

func TestUnusablePairRefusesConnections(t *testing.T) {
	s := newStack(t)
	c1, _, _ := testCert(t, "a")
	_, k2, _ := testCert(t, "b")
	writeFile(t, filepath.Join(s.authDir, "tls.crt"), c1)
	writeFile(t, filepath.Join(s.authDir, "tls.key"), k2)
	// No good pair was ever loaded: refuse rather than serve credentials
	// over plain HTTP.
	resp, err := http.Get(s.sidecarURL + "/v2/")
	if err == nil {
		resp.Body.Close()
		t.Fatalf("mismatched pair: got %d over plain HTTP, want the connection refused", resp.StatusCode)
	}
}
