package testutil

import (
	"crypto/sha256"
	"fmt"
	"io"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// SameImage fails t unless got has want's manifest digest and every layer
// of got reads back with content matching its digest (so a pull really
// fetched the bytes, not just the manifest).
func SameImage(t testing.TB, want, got v1.Image) {
	t.Helper()
	wd, err := want.Digest()
	if err != nil {
		t.Fatal(err)
	}
	gd, err := got.Digest()
	if err != nil || wd != gd {
		t.Fatalf("manifest digest %v, want %v (%v)", gd, wd, err)
	}
	layers, err := got.Layers()
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range layers {
		d, err := l.Digest()
		if err != nil {
			t.Fatal(err)
		}
		rc, err := l.Compressed()
		if err != nil {
			t.Fatalf("layer %v: %v", d, err)
		}
		h := sha256.New()
		_, err = io.Copy(h, rc)
		rc.Close()
		if err != nil {
			t.Fatalf("layer %v: %v", d, err)
		}
		if fmt.Sprintf("sha256:%x", h.Sum(nil)) != d.String() {
			t.Fatalf("layer %v: content does not match its digest", d)
		}
	}
}
