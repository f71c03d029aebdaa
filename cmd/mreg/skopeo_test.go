package main

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// ociImage is a random image with OCI media types throughout (skopeo's OCI
// layout transport only looks at OCI manifests).
func ociImage(t *testing.T, layers int, size int64) v1.Image {
	t.Helper()
	img := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	for range layers {
		l, err := random.Layer(size, types.OCILayer)
		if err != nil {
			t.Fatal(err)
		}
		if img, err = mutate.AppendLayers(img, l); err != nil {
			t.Fatal(err)
		}
	}
	return img
}

// skopeoBin returns skopeo's path. CI installs it, so there a missing
// skopeo is a failure, not a skip.
func skopeoBin(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("skopeo")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("skopeo not installed; .ci/run installs it (apt-get install skopeo)")
		}
		t.Skip("skopeo not installed (apt-get install skopeo)")
	}
	return p
}

// TestSkopeoPushPullTLS copies an image from an OCI layout to the sidecar
// and back with skopeo, over TLS with verification on and --creds.
func TestSkopeoPushPullTLS(t *testing.T) {
	skopeo := skopeoBin(t)
	p := startPair(t)
	p.manageUser(t, "root-pw\n", "add", "--admin", "--cost", "4", "root")
	p.manageUser(t, "alice-pw\n", "add", "--cost", "4", "alice")
	p.manageTLS(t, "", "generate", "127.0.0.1", "localhost")

	// skopeo trusts the CA in --cert-dir/ca.crt (or *.crt).
	certDir := t.TempDir()
	if err := os.WriteFile(filepath.Join(certDir, "ca.crt"), mustRead(t, filepath.Join(p.authDir, "tls.crt")), 0o644); err != nil {
		t.Fatal(err)
	}

	src := filepath.Join(t.TempDir(), "src")
	img := ociImage(t, 3, 256<<10)
	lp, err := layout.Write(src, empty.Index)
	if err != nil {
		t.Fatal(err)
	}
	if err := lp.AppendImage(img, layout.WithAnnotations(map[string]string{"org.opencontainers.image.ref.name": "v1"})); err != nil {
		t.Fatal(err)
	}
	want, _ := img.Digest()
	dst := "docker://" + p.host + "/skopeo/app:v1"

	run(t, skopeo, "", true, "copy", "--preserve-digests", "--dest-creds", "root:root-pw", "--dest-cert-dir", certDir,
		"oci:"+src+":v1", dst)

	out := run(t, skopeo, "", true, "inspect", "--raw", "--creds", "alice:alice-pw", "--cert-dir", certDir, dst)
	if !json.Valid([]byte(out)) {
		t.Fatalf("inspect --raw: %s", out)
	}
	var info struct{ Digest string }
	out = run(t, skopeo, "", true, "inspect", "--creds", "alice:alice-pw", "--cert-dir", certDir, dst)
	if err := json.Unmarshal([]byte(out), &info); err != nil || info.Digest != want.String() {
		t.Fatalf("inspect digest %q, want %v (%v)", info.Digest, want, err)
	}

	back := filepath.Join(t.TempDir(), "back")
	run(t, skopeo, "", true, "copy", "--preserve-digests", "--src-creds", "alice:alice-pw", "--src-cert-dir", certDir, dst, "oci:"+back+":v1")
	lb, err := layout.FromPath(back)
	if err != nil {
		t.Fatal(err)
	}
	idx, err := lb.ImageIndex()
	if err != nil {
		t.Fatal(err)
	}
	m, err := idx.IndexManifest()
	if err != nil || len(m.Manifests) != 1 || m.Manifests[0].Digest != want {
		t.Fatalf("pulled back %+v, want digest %v (%v)", m, want, err)
	}
	got, err := lb.Image(want)
	if err != nil {
		t.Fatal(err)
	}
	sameImage(t, img, got)

	// Refusals: a user cannot push; verification stays on (no CA → fails);
	// a wrong password fails.
	run(t, skopeo, "", false, "copy", "--dest-creds", "alice:alice-pw", "--dest-cert-dir", certDir, "oci:"+src+":v1", "docker://"+p.host+"/skopeo/evil:v1")
	run(t, skopeo, "", false, "inspect", "--creds", "alice:alice-pw", dst)
	run(t, skopeo, "", false, "inspect", "--creds", "alice:wrong", "--cert-dir", certDir, dst)
}
