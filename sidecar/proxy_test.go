package sidecar

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/mreg-dev/mreg/internal/testutil"
)

// startUpload opens a blob upload as admin and returns the Location.
func startUpload(t *testing.T, c *http.Client, base, host string) string {
	t.Helper()
	req, _ := http.NewRequest("POST", base+"/v2/team/app/blobs/uploads/", nil)
	if host != "" {
		req.Host = host
	}
	req.SetBasicAuth(adminName, adminPassword)
	req.Header.Set("X-Forwarded-Host", "evil.example")
	req.Header.Set("X-Forwarded-Proto", "gopher")
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("start upload: %d", resp.StatusCode)
	}
	return resp.Header.Get("Location")
}

func TestLocationHeadersPointAtClientAddress(t *testing.T) {
	s := newStack(t)
	host := strings.TrimPrefix(s.sidecarURL, "http://")
	_, port, _ := net.SplitHostPort(host)
	for _, h := range []string{host, "localhost:" + port, "registry.example:" + port, "[::1]:" + port} {
		t.Run(h, func(t *testing.T) {
			loc := startUpload(t, http.DefaultClient, s.sidecarURL, h)
			u, err := url.Parse(loc)
			if err != nil {
				t.Fatal(err)
			}
			if u.Scheme != "http" || u.Host != h {
				t.Fatalf("Location %q: want http://%s/… (client-sent X-Forwarded-* must be ignored)", loc, h)
			}
		})
	}
	t.Run("https", func(t *testing.T) {
		c, k, leaf := testCert(t, "loc")
		writeFile(t, filepath.Join(s.authDir, "tls.crt"), c)
		writeFile(t, filepath.Join(s.authDir, "tls.key"), k)
		loc := startUpload(t, tlsClient(leaf), "https://"+host, "")
		if !strings.HasPrefix(loc, "https://"+host+"/v2/team/app/blobs/uploads/") {
			t.Fatalf("Location over TLS = %q", loc)
		}
	})
}

// pushBlob uploads b monolithically through base as admin and returns its digest.
func pushBlob(t testing.TB, c *http.Client, base string, body io.Reader, digest string) {
	t.Helper()
	testutil.UploadBlob(t, c, base, "team/app", body, -1, digest,
		func(r *http.Request) { r.SetBasicAuth(adminName, adminPassword) })
}

func TestBlobRoundTripStreams(t *testing.T) {
	s := newStack(t)
	const size = 32 << 20
	digest := testutil.PatternDigest(size)
	pushBlob(t, http.DefaultClient, s.sidecarURL, &testutil.PatternReader{N: size}, digest)
	req, _ := http.NewRequest("GET", s.sidecarURL+"/v2/team/app/blobs/"+digest, nil)
	req.SetBasicAuth(userName, userPassword)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	h := sha256.New()
	n, err := io.Copy(h, resp.Body)
	if err != nil || n != size || fmt.Sprintf("sha256:%x", h.Sum(nil)) != digest {
		t.Fatalf("pulled %d bytes, err %v, digest mismatch=%v", n, err, fmt.Sprintf("sha256:%x", h.Sum(nil)) != digest)
	}
	if s.server.reads.spliced.Load() == 0 {
		t.Fatal("the blob GET did not take the splice path")
	}
	// Again, on the pooled upstream connection, and with a 1-byte blob
	// (shorter than what the header read may have buffered).
	for _, sz := range []int64{size, 1} {
		d := testutil.PatternDigest(sz)
		if sz == 1 {
			pushBlob(t, http.DefaultClient, s.sidecarURL, &testutil.PatternReader{N: sz}, d)
		}
		req, _ := http.NewRequest("GET", s.sidecarURL+"/v2/team/app/blobs/"+d, nil)
		req.SetBasicAuth(userName, userPassword)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		h := sha256.New()
		n, err := io.Copy(h, resp.Body)
		resp.Body.Close()
		if err != nil || n != sz || fmt.Sprintf("sha256:%x", h.Sum(nil)) != d || resp.Header.Get("Docker-Content-Digest") != d {
			t.Fatalf("size %d: %d bytes, %v", sz, n, err)
		}
	}
	if got := s.server.reads.spliced.Load(); got != 3 {
		t.Fatalf("spliced %d bodies, want 3", got)
	}
	// HTTP/2 over TLS and HEAD take the ordinary path and still work.
	req, _ = http.NewRequest("HEAD", s.sidecarURL+"/v2/team/app/blobs/"+digest, nil)
	req.SetBasicAuth(userName, userPassword)
	resp, err = http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != 200 || resp.ContentLength != size {
		t.Fatalf("HEAD: %v %v", err, resp)
	}
	resp.Body.Close()
	// A missing blob: the registry's 404 passes through unchanged.
	req, _ = http.NewRequest("GET", s.sidecarURL+"/v2/team/app/blobs/"+testutil.PatternDigest(7), nil)
	req.SetBasicAuth(userName, userPassword)
	resp, err = http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != 404 {
		t.Fatalf("missing blob: %v %v", err, resp.Status)
	}
	checkEnvelope(t, resp.Body, "BLOB_UNKNOWN")
	resp.Body.Close()
}

func TestClientDisconnectDoesNotLeakGoroutines(t *testing.T) {
	s := newStack(t)
	const size = 64 << 20
	digest := testutil.PatternDigest(size)
	pushBlob(t, http.DefaultClient, s.registryURL, &testutil.PatternReader{N: size}, digest)
	// Let idle connections settle before counting.
	http.DefaultClient.CloseIdleConnections()
	time.Sleep(100 * time.Millisecond)
	base := runtime.NumGoroutine()

	for range 10 {
		c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
		req, _ := http.NewRequest("GET", s.sidecarURL+"/v2/team/app/blobs/"+digest, nil)
		req.SetBasicAuth(userName, userPassword)
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 1<<20)
		if _, err := io.ReadFull(resp.Body, buf); err != nil {
			t.Fatal(err)
		}
		resp.Body.Close() // mid-stream: ~63 MiB left unread
	}
	// An aborted upload, too: the client sends half a body and hangs up.
	conn, err := net.Dial("tcp", strings.TrimPrefix(s.sidecarURL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	loc := startUpload(t, http.DefaultClient, s.sidecarURL, "")
	u, _ := url.Parse(loc)
	fmt.Fprintf(conn, "PATCH %s HTTP/1.1\r\nHost: x\r\nAuthorization: Basic %s\r\nContent-Length: 10000000\r\n\r\n", u.RequestURI(), b64(adminName+":"+adminPassword))
	_, _ = conn.Write(bytes.Repeat([]byte("x"), 1<<20))
	conn.Close()

	deadline := time.Now().Add(10 * time.Second)
	for {
		http.DefaultClient.CloseIdleConnections()
		n := runtime.NumGoroutine()
		if n <= base+2 {
			return
		}
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("goroutines: %d before, %d after aborted transfers\n%s", base, n, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(50 * time.Millisecond)
	}
}
