package mirror_test

import (
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	_ "github.com/distribution/distribution/v3/registry/auth/htpasswd"
	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"golang.org/x/crypto/bcrypt"

	"github.com/mreg-dev/mreg/internal/mirror"
	"github.com/mreg-dev/mreg/internal/registry"
	"github.com/mreg-dev/mreg/internal/testutil"
	"github.com/mreg-dev/mreg/internal/users"
	"github.com/mreg-dev/mreg/sidecar"
)

var quiet = slog.New(slog.DiscardHandler)

// upstream is a real Distribution registry with htpasswd auth on loopback,
// counting blob GETs.
type upstream struct {
	srv      *httptest.Server
	host     string
	blobGets atomic.Int64
}

func startHtpasswdUpstream(t *testing.T) *upstream {
	t.Helper()
	dir := t.TempDir()
	hash, _ := bcrypt.GenerateFromPassword([]byte("up-pass"), 4)
	htpasswd := filepath.Join(dir, "htpasswd")
	if err := os.WriteFile(htpasswd, []byte("upuser:"+string(hash)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfgFile := filepath.Join(dir, "config.yml")
	yml := fmt.Sprintf("version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: %s\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:0\nauth:\n  htpasswd:\n    realm: upstream\n    path: %s\n", filepath.Join(dir, "data"), htpasswd)
	if err := os.WriteFile(cfgFile, []byte(yml), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := registry.LoadConfig(registry.Options{ConfigFile: cfgFile})
	if err != nil {
		t.Fatal(err)
	}
	srv, err := registry.New(context.Background(), cfg, quiet)
	if err != nil {
		t.Fatal(err)
	}
	u := &upstream{}
	h := srv.Handler()
	u.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet && strings.Contains(r.URL.Path, "/blobs/sha256:") {
			u.blobGets.Add(1)
		}
		h.ServeHTTP(w, r)
	}))
	t.Cleanup(u.srv.Close)
	u.host = strings.TrimPrefix(u.srv.URL, "http://")
	return u
}

// front is mreg: a registry with mirrors behind a sidecar.
type front struct {
	sidecarHost string
	authDir     string
}

func startFront(t *testing.T, ups []mirror.Upstream) *front {
	t.Helper()
	cfg, err := registry.LoadConfig(registry.Options{Addr: "127.0.0.1:0", Root: t.TempDir(), LogLevel: "error"})
	if err != nil {
		t.Fatal(err)
	}
	srv, err := registry.New(context.Background(), cfg, quiet, ups...)
	if err != nil {
		t.Fatal(err)
	}
	reg := httptest.NewServer(srv.Handler())
	t.Cleanup(reg.Close)
	f := &front{authDir: t.TempDir()}
	for _, u := range []struct {
		name  string
		admin bool
	}{{"alice", false}, {"root", true}} {
		hash, _ := users.HashPassword([]byte(u.name+"-pw"), 4)
		if _, err := users.Put(context.Background(), filepath.Join(f.authDir, users.FileName), u.name, hash, u.admin); err != nil {
			t.Fatal(err)
		}
	}
	side, err := sidecar.New(context.Background(), sidecar.Config{Upstream: reg.URL, AuthDir: f.authDir, Logger: quiet,
		Auth: sidecar.AuthenticatorOptions{DummyCost: 4}})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- side.Serve(ctx, ln) }()
	t.Cleanup(func() { cancel(); <-done })
	f.sidecarHost = ln.Addr().String()
	return f
}

func basicAuth(user, pass string) remote.Option {
	return remote.WithAuth(&authn.Basic{Username: user, Password: pass})
}

func ref(t *testing.T, s string) name.Reference {
	t.Helper()
	r, err := name.ParseReference(s, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func sameImage(t *testing.T, want, got v1.Image) {
	t.Helper()
	testutil.SameImage(t, want, got)
}

func wantStatus(t *testing.T, what string, err error, status int) {
	t.Helper()
	var terr *transport.Error
	if err == nil || !errorsAs(err, &terr) || terr.StatusCode != status {
		t.Fatalf("%s: want HTTP %d, got %v", what, status, err)
	}
}

func TestPullThroughCache(t *testing.T) {
	up := startHtpasswdUpstream(t)
	img, _ := random.Image(256<<10, 3)
	other, _ := random.Image(1024, 1)
	upAuth := basicAuth("upuser", "up-pass")
	if err := remote.Write(ref(t, up.host+"/team/app:v1"), img, upAuth); err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(ref(t, up.host+"/team/never:v1"), other, upAuth); err != nil {
		t.Fatal(err)
	}
	f := false
	ups, err := loadUpstreams(t, fmt.Sprintf("upstreams:\n  - namespace: upa.test\n    host: %s\n    tls: %v\n", up.host, f),
		`{"upa.test":{"username":"upuser","password":"up-pass"}}`)
	if err != nil {
		t.Fatal(err)
	}
	fr := startFront(t, ups)
	alice := basicAuth("alice", "alice-pw")

	got, err := remote.Image(ref(t, fr.sidecarHost+"/upa.test/team/app:v1"), alice)
	if err != nil {
		t.Fatalf("pull through cache: %v", err)
	}
	sameImage(t, img, got)

	// No credentials or wrong ones: nothing through the cache.
	_, err = remote.Image(ref(t, fr.sidecarHost+"/upa.test/team/app:v1"))
	wantStatus(t, "anonymous", err, 401)
	_, err = remote.Image(ref(t, fr.sidecarHost+"/upa.test/team/app:v1"), basicAuth("alice", "wrong"))
	wantStatus(t, "wrong password", err, 401)

	// Pushes and deletes into the mirror are refused; the hosted
	// namespace still takes pushes.
	root := basicAuth("root", "root-pw")
	err = remote.Write(ref(t, fr.sidecarHost+"/upa.test/team/app:evil"), other, root)
	wantStatus(t, "push into mirror", err, 405)
	if err := remote.Write(ref(t, fr.sidecarHost+"/hosted/app:v1"), other, root); err != nil {
		t.Fatalf("hosted push: %v", err)
	}

	// Upstream down: cached content is served, under both URL forms;
	// uncached content is a clear error.
	up.srv.Close()
	got, err = remote.Image(ref(t, fr.sidecarHost+"/upa.test/team/app:v1"), alice)
	if err != nil {
		t.Fatalf("pull with upstream down: %v", err)
	}
	sameImage(t, img, got)
	d, _ := img.Digest()
	req, _ := http.NewRequest(http.MethodGet, "http://"+fr.sidecarHost+"/v2/team/app/manifests/"+d.String()+"?ns=upa.test", nil)
	req.SetBasicAuth("alice", "alice-pw")
	req.Header.Set("Accept", "application/vnd.docker.distribution.manifest.v2+json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != 200 || resp.Header.Get("Docker-Content-Digest") != d.String() {
		t.Fatalf("containerd ns= form from the cache: %v %v", err, resp.Status)
	}
	resp.Body.Close()
	_, err = remote.Image(ref(t, fr.sidecarHost+"/upa.test/team/never:v1"), alice)
	wantStatus(t, "uncached with upstream down", err, 503)
}

func TestConcurrentColdPullsFetchOnce(t *testing.T) {
	up := startHtpasswdUpstream(t)
	const size = 64 << 20
	digest := testutil.PatternDigest(size)
	pushPattern(t, up.host, "big/blob", size, digest)
	ups, err := loadUpstreams(t, fmt.Sprintf("upstreams:\n  - namespace: upa.test\n    host: %s\n    tls: false\n    username: upuser\n    password: up-pass\n", up.host), "")
	if err != nil {
		t.Fatal(err)
	}
	fr := startFront(t, ups)
	before := up.blobGets.Load()
	var wg sync.WaitGroup
	errs := make(chan error, 20)
	for range 20 {
		wg.Go(func() {
			req, _ := http.NewRequest(http.MethodGet, "http://"+fr.sidecarHost+"/v2/upa.test/big/blob/blobs/"+digest, nil)
			req.SetBasicAuth("alice", "alice-pw")
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				errs <- err
				return
			}
			defer resp.Body.Close()
			h := sha256.New()
			n, err := io.Copy(h, resp.Body)
			if err != nil || n != size || fmt.Sprintf("sha256:%x", h.Sum(nil)) != digest {
				errs <- fmt.Errorf("status %d, %d bytes, %v", resp.StatusCode, n, err)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if n := up.blobGets.Load() - before; n != 1 {
		t.Fatalf("20 concurrent cold pulls made %d upstream blob GETs, want 1", n)
	}
}

// pushPattern uploads a deterministic blob of size bytes to the upstream.
func pushPattern(t *testing.T, host, repo string, size int64, digest string) {
	t.Helper()
	testutil.UploadBlob(t, nil, "http://"+host, repo, &testutil.PatternReader{N: size}, size, digest,
		func(r *http.Request) { r.SetBasicAuth("upuser", "up-pass") })
}

func loadUpstreams(t *testing.T, yml, creds string) ([]mirror.Upstream, error) {
	t.Helper()
	p := filepath.Join(t.TempDir(), "upstreams.yml")
	if err := os.WriteFile(p, []byte(yml), 0o600); err != nil {
		t.Fatal(err)
	}
	return mirror.Load(p, creds)
}

// startTokenUpstream is an mreg in token mode (Docker Hub-style Bearer
// challenges and a token endpoint) as the upstream.
func startTokenUpstream(t *testing.T) string {
	t.Helper()
	fr := startFront(t, nil) // a plain mreg: registry + sidecar, token mode by default
	return fr.sidecarHost
}

func TestPullThroughTokenUpstream(t *testing.T) {
	upHost := startTokenUpstream(t)
	img, _ := random.Image(128<<10, 2)
	if err := remote.Write(ref(t, upHost+"/lib/tool:1.0"), img, basicAuth("root", "root-pw")); err != nil {
		t.Fatal(err)
	}
	ups, err := loadUpstreams(t, fmt.Sprintf("upstreams:\n  - namespace: upb.test\n    host: %s\n    tls: false\n", upHost),
		`{"upb.test":{"username":"alice","password":"alice-pw"}}`)
	if err != nil {
		t.Fatal(err)
	}
	fr := startFront(t, ups)
	got, err := remote.Image(ref(t, fr.sidecarHost+"/upb.test/lib/tool:1.0"), basicAuth("alice", "alice-pw"))
	if err != nil {
		t.Fatalf("pull through a token-auth upstream: %v", err)
	}
	sameImage(t, img, got)
}

func TestLoadErrors(t *testing.T) {
	for name, yml := range map[string]string{
		"unknown field":    "upstreams:\n  - namespace: a.io\n    hots: x\n",
		"empty namespace":  "upstreams:\n  - host: a.io\n",
		"namespace path":   "upstreams:\n  - namespace: a.io/b\n",
		"duplicate":        "upstreams:\n  - namespace: a.io\n  - namespace: A.io\n",
		"bad duration":     "upstreams:\n  - namespace: a.io\n    maxAge: forever\n",
		"host with a path": "upstreams:\n  - namespace: a.io\n    host: a.io/v2\n",
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := loadUpstreams(t, yml, ""); err == nil {
				t.Fatal("no error")
			}
		})
	}
	if _, err := loadUpstreams(t, "upstreams:\n  - namespace: a.io\n", "{not json"); err == nil {
		t.Fatal("bad credentials JSON accepted")
	}
	ups, err := loadUpstreams(t, "upstreams:\n  - namespace: docker.io\n", `{"docker.io":{"username":"u","password":"p"}}`)
	if err != nil || ups[0].Host != "registry-1.docker.io" || ups[0].URL() != "https://registry-1.docker.io" || ups[0].Username != "u" {
		t.Fatalf("docker.io defaults: %+v %v", ups, err)
	}
}

// TestDefaultUpstream is docker's registry-mirrors: no namespace in the
// path; hosted repositories win, the rest comes from the default upstream.
func TestDefaultUpstream(t *testing.T) {
	up := startHtpasswdUpstream(t)
	upImg, _ := random.Image(1024, 1)
	hostedImg, _ := random.Image(1024, 1)
	upAuth := basicAuth("upuser", "up-pass")
	for _, r := range []string{"/library/alpine:3", "/team/shared:v1"} {
		if err := remote.Write(ref(t, up.host+r), upImg, upAuth); err != nil {
			t.Fatal(err)
		}
	}
	ups, err := loadUpstreams(t, fmt.Sprintf("upstreams:\n  - namespace: docker.io\n    host: %s\n    tls: false\n    default: true\n", up.host),
		`{"docker.io":{"username":"upuser","password":"up-pass"}}`)
	if err != nil {
		t.Fatal(err)
	}
	fr := startFront(t, ups)
	if err := remote.Write(ref(t, fr.sidecarHost+"/team/shared:v1"), hostedImg, basicAuth("root", "root-pw")); err != nil {
		t.Fatal(err)
	}
	alice := basicAuth("alice", "alice-pw")
	got, err := remote.Image(ref(t, fr.sidecarHost+"/library/alpine:3"), alice)
	if err != nil {
		t.Fatalf("default upstream read: %v", err)
	}
	sameImage(t, upImg, got)
	got, err = remote.Image(ref(t, fr.sidecarHost+"/team/shared:v1"), alice)
	if err != nil {
		t.Fatal(err)
	}
	sameImage(t, hostedImg, got) // hosted wins
	if _, err := remote.Image(ref(t, fr.sidecarHost+"/nowhere/at-all:v1"), alice); err == nil {
		t.Fatal("missing everywhere, still found")
	}
	if _, err := loadUpstreams(t, "upstreams:\n  - namespace: a.io\n    default: true\n  - namespace: b.io\n    default: true\n", ""); err == nil {
		t.Fatal("two default upstreams accepted")
	}
}
