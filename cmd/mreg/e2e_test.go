package main

import (
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"

	"github.com/mreg-dev/mreg/internal/testutil"
)

func basic(user, pass string) remote.Option {
	return remote.WithAuth(&authn.Basic{Username: user, Password: pass})
}

func mustRef(t *testing.T, s string, opts ...name.Option) name.Reference {
	t.Helper()
	r, err := name.ParseReference(s, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// wantStatus checks that err is a registry error with the given status.
func wantStatus(t *testing.T, what string, err error, status int) {
	t.Helper()
	var terr *transport.Error
	if !errors.As(err, &terr) {
		t.Fatalf("%s: want HTTP %d, got %v", what, status, err)
	}
	if terr.StatusCode != status {
		t.Fatalf("%s: status %d, want %d (%v)", what, terr.StatusCode, status, err)
	}
}

// sameImage checks that got has the digest of want and byte-identical layers.
func sameImage(t *testing.T, want, got v1.Image) {
	t.Helper()
	testutil.SameImage(t, want, got)
}

func TestEndToEndPushPullAndUserChanges(t *testing.T) {
	p := startPair(t)
	p.manageUser(t, "root-pw\n", "add", "--admin", "--cost", "4", "root")
	p.manageUser(t, "alice-pw\n", "add", "--cost", "4", "alice")
	admin, alice := basic("root", "root-pw"), basic("alice", "alice-pw")

	img, err := random.Image(512<<10, 4)
	if err != nil {
		t.Fatal(err)
	}
	imgRef := mustRef(t, p.host+"/team/app:v1", name.Insecure)
	if err := remote.Write(imgRef, img, admin); err != nil {
		t.Fatalf("admin push: %v", err)
	}
	idx, err := random.Index(64<<10, 2, 3)
	if err != nil {
		t.Fatal(err)
	}
	idxRef := mustRef(t, p.host+"/team/multi:v1", name.Insecure)
	if err := remote.WriteIndex(idxRef, idx, admin); err != nil {
		t.Fatalf("admin push index: %v", err)
	}

	// A user pulls both, byte-identical.
	got, err := remote.Image(imgRef, alice)
	if err != nil {
		t.Fatalf("user pull: %v", err)
	}
	sameImage(t, img, got)
	gotIdx, err := remote.Index(idxRef, alice)
	if err != nil {
		t.Fatalf("user pull index: %v", err)
	}
	wantDigest, _ := idx.Digest()
	if d, _ := gotIdx.Digest(); d != wantDigest {
		t.Fatalf("index digest %v, want %v", d, wantDigest)
	}
	im, _ := idx.IndexManifest()
	for _, desc := range im.Manifests {
		child, err := remote.Image(mustRef(t, p.host+"/team/multi@"+desc.Digest.String(), name.Insecure), alice)
		if err != nil {
			t.Fatalf("pull child %v: %v", desc.Digest, err)
		}
		want, _ := idx.Image(desc.Digest)
		sameImage(t, want, child)
	}

	// A user can neither push nor delete.
	other, _ := random.Image(1024, 1)
	wantStatus(t, "user push", remote.Write(mustRef(t, p.host+"/team/app:evil", name.Insecure), other, alice), 403)
	wantStatus(t, "user delete", remote.Delete(imgRef, alice), 403)

	// toggle: the admin loses write access on the very next request.
	if out := p.manageUser(t, "", "toggle", "root"); !strings.Contains(out, "root is now user") {
		t.Fatalf("toggle output: %q", out)
	}
	wantStatus(t, "demoted admin push", remote.Write(mustRef(t, p.host+"/team/app:v2", name.Insecure), other, admin), 403)
	if _, err := remote.Image(imgRef, admin); err != nil {
		t.Fatalf("demoted admin can still pull: %v", err)
	}
	p.manageUser(t, "", "toggle", "root")
	if err := remote.Write(mustRef(t, p.host+"/team/app:v2", name.Insecure), other, admin); err != nil {
		t.Fatalf("re-promoted admin push: %v", err)
	}

	// Password change: the old password stops working at once.
	p.manageUser(t, "alice-new\n", "add", "--cost", "4", "alice")
	wantStatus(t, "old password", func() error { _, err := remote.Image(imgRef, alice); return err }(), 401)
	if _, err := remote.Image(imgRef, basic("alice", "alice-new")); err != nil {
		t.Fatalf("new password: %v", err)
	}

	// rm: the next pull is refused.
	ls := p.manageUser(t, "", "ls")
	if !strings.Contains(ls, "alice") || !strings.Contains(ls, "admin") {
		t.Fatalf("ls: %q", ls)
	}
	p.manageUser(t, "", "rm", "alice")
	_, err = remote.Image(imgRef, basic("alice", "alice-new"))
	wantStatus(t, "removed user pull", err, 401)

	// The admin deletes the tag's manifest.
	if err := remote.Delete(imgRef, admin); err != nil {
		t.Fatalf("admin delete: %v", err)
	}
	_, err = remote.Image(imgRef, admin)
	wantStatus(t, "deleted manifest", err, 404)
}

func TestEndToEndTLS(t *testing.T) {
	p := startPair(t)
	p.manageUser(t, "root-pw\n", "add", "--admin", "--cost", "4", "root")
	p.manageTLS(t, "", "generate", "127.0.0.1", "localhost")
	first := readCert(t, filepath.Join(p.authDir, "tls.crt"))

	pool := x509.NewCertPool()
	pool.AddCert(first)
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}
	img, _ := random.Image(256<<10, 2)
	ref := mustRef(t, p.host+"/secure/app:v1") // not Insecure: https with verification
	if err := remote.Write(ref, img, basic("root", "root-pw"), remote.WithTransport(tr)); err != nil {
		t.Fatalf("push over TLS: %v", err)
	}
	got, err := remote.Image(ref, basic("root", "root-pw"), remote.WithTransport(tr))
	if err != nil {
		t.Fatalf("pull over TLS: %v", err)
	}
	sameImage(t, img, got)

	// The health probe follows the switch to HTTPS.
	run(t, p.bin, "", true, "healthcheck", "--url", "http://"+p.host+"/v2/")

	// Replace the certificate while running: the next new connection gets it.
	p.manageTLS(t, "", "generate", "--force", "127.0.0.1", "localhost")
	second := readCert(t, filepath.Join(p.authDir, "tls.crt"))
	if first.Equal(second) {
		t.Fatal("generate --force did not make a new certificate")
	}
	conn, err := tls.Dial("tcp", p.host, &tls.Config{InsecureSkipVerify: true})
	if err != nil {
		t.Fatal(err)
	}
	served := conn.ConnectionState().PeerCertificates[0]
	conn.Close()
	if !served.Equal(second) {
		t.Fatalf("served certificate serial %v, want the replacement %v", served.SerialNumber, second.SerialNumber)
	}
	// A client that only trusts the old certificate now fails verification.
	old := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}
	if _, err := remote.Image(ref, basic("root", "root-pw"), remote.WithTransport(old)); err == nil {
		t.Fatal("client trusting only the old certificate still connected")
	}
}

func readCert(t *testing.T, path string) *x509.Certificate {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	info, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if info.Mode().Perm() != 0o600 {
		t.Errorf("%s mode %v, want 0600", path, info.Mode().Perm())
	}
	pair, err := tls.X509KeyPair(b, mustRead(t, filepath.Join(filepath.Dir(path), "tls.key")))
	if err != nil {
		t.Fatal(err)
	}
	return pair.Leaf
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestEndToEndLargeBlobStreams pushes and pulls a 512 MiB blob through the
// sidecar process and checks that its peak memory stays far below the blob
// size: nothing is buffered whole.
func TestEndToEndLargeBlobStreams(t *testing.T) {
	if testing.Short() {
		t.Skip("large transfer")
	}
	p := startPair(t)
	p.manageUser(t, "root-pw\n", "add", "--admin", "--cost", "4", "root")
	const size = 512 << 20
	digest := testutil.PatternDigest(size)
	idle := rss(t, p.sidecar.Pid())
	base := "http://" + p.host

	testutil.UploadBlob(t, nil, base, "big/blob", &testutil.PatternReader{N: size}, size, digest,
		func(r *http.Request) { r.SetBasicAuth("root", "root-pw") })

	req, _ := http.NewRequest("GET", base+"/v2/big/blob/blobs/"+digest, nil)
	req.SetBasicAuth("root", "root-pw")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	h := sha256.New()
	n, err := io.Copy(h, resp.Body)
	resp.Body.Close()
	if err != nil || n != size || fmt.Sprintf("sha256:%x", h.Sum(nil)) != digest {
		t.Fatalf("pull: %d bytes, %v, digest ok=%v", n, err, fmt.Sprintf("sha256:%x", h.Sum(nil)) == digest)
	}
	peak := peakRSS(t, p.sidecar.Pid())
	t.Logf("sidecar RSS idle %d MiB, peak %d MiB during 512 MiB push+pull; registry peak %d MiB",
		idle>>20, peak>>20, peakRSS(t, p.registry.Pid())>>20)
	if peak > idle+64<<20 {
		t.Fatalf("sidecar peak RSS %d MiB > idle %d MiB + 64 MiB: the transfer was buffered", peak>>20, idle>>20)
	}
}
