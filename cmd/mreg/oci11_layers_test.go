package main

import (
	"bytes"
	"net/http"
	"regexp"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// TestOCINonDistributableLayers: a manifest whose layer lives elsewhere
// (urls, non-distributable media type) is stored without the blob and
// served byte-identical; URLs that are not http(s) are refused.
func TestOCINonDistributableLayers(t *testing.T) {
	p := startPair(t)
	admin, alice := ociUsers(t, p)
	a := ociNewAPI(t, p.host)
	const repo = "foreign/app"
	cfg := []byte(`{"architecture":"amd64","os":"windows","rootfs":{"type":"layers","diff_ids":[]}}`)
	a.pushBlob(admin, repo, cfg)
	c := ociDesc(ociConfigMT, cfg)
	local := []byte("a local layer")
	a.pushBlob(admin, repo, local)
	foreignLayer := func(mt, u string, seed string) ociDescriptor {
		d := ociDesc(mt, []byte("foreign layer content "+seed)) // never pushed
		if u != "" {
			d.URLs = []string{u}
		}
		return d
	}
	manifest := func(layers ...ociDescriptor) ociManifest {
		return ociManifest{SchemaVersion: 2, MediaType: ociManifestMT, Config: &c,
			Layers: append([]ociDescriptor{ociDesc(ociLayerMT, local)}, layers...)}
	}

	for _, tc := range []struct {
		name   string
		layer  ociDescriptor
		status int
		codes  string // regexp the first error code must match
	}{
		{name: "https url", layer: foreignLayer(ociNonDistMT, "https://example.com/layer.tar", "1"), status: 201},
		{name: "http url", layer: foreignLayer(ociNonDistMT, "http://example.com/layer.tar", "2"), status: 201},
		{name: "uncompressed nondistributable", layer: foreignLayer("application/vnd.oci.image.layer.nondistributable.v1.tar", "https://example.com/l.tar", "3"), status: 201},
		{name: "ftp url", layer: foreignLayer(ociNonDistMT, "ftp://example.com/layer.tar", "4"), status: 400, codes: `^MANIFEST_`},
		{name: "file url", layer: foreignLayer(ociNonDistMT, "file:///etc/passwd", "5"), status: 400, codes: `^MANIFEST_`},
		{name: "url with fragment", layer: foreignLayer(ociNonDistMT, "https://example.com/layer.tar#x", "6"), status: 400, codes: `^MANIFEST_`},
		{name: "nondistributable without url, blob missing", layer: foreignLayer(ociNonDistMT, "", "7"), status: 400, codes: `^MANIFEST_BLOB_UNKNOWN$`},
		{name: "distributable layer with url, blob missing", layer: foreignLayer(ociLayerMT, "https://example.com/layer.tar", "8"), status: 400, codes: `^MANIFEST_BLOB_UNKNOWN$`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := *a
			a.t = t
			tag := strings.NewReplacer(" ", "-", ",", "").Replace(tc.name)
			m := manifest(tc.layer)
			pushed, resp, body := a.putManifest(admin, repo, tag, m)
			if tc.status != 201 {
				if resp.StatusCode != tc.status {
					t.Errorf("PUT: %s, want %d\n%s", resp.Status, tc.status, body)
				}
				codes := ociErrorCodes(body)
				if len(codes) == 0 || !regexp.MustCompile(tc.codes).MatchString(codes[0]) {
					t.Errorf("error codes %v, want the first to match %s", codes, tc.codes)
				}
				// Refused means not stored.
				a.expect(http.StatusNotFound, admin, "GET", "/v2/"+repo+"/manifests/"+tag, nil, "Accept", ociManifestMT)
				return
			}
			if resp.StatusCode != tc.status {
				t.Fatalf("PUT: %s, want %d\n%s", resp.Status, tc.status, body)
			}
			if got := resp.Header.Get("Docker-Content-Digest"); got != pushed.desc.Digest {
				t.Errorf("Docker-Content-Digest %q, want %q", got, pushed.desc.Digest)
			}
			for _, ref := range []string{tag, pushed.desc.Digest} {
				resp, body := a.expect(http.StatusOK, alice, "GET", "/v2/"+repo+"/manifests/"+ref, nil, "Accept", ociManifestMT)
				if !bytes.Equal(body, pushed.raw) {
					t.Errorf("GET %s: bytes differ\ngot  %s\nwant %s", ref, body, pushed.raw)
				}
				if resp.Header.Get("Docker-Content-Digest") != pushed.desc.Digest || resp.Header.Get("Content-Type") != ociManifestMT {
					t.Errorf("GET %s: digest %q type %q", ref, resp.Header.Get("Docker-Content-Digest"), resp.Header.Get("Content-Type"))
				}
			}
			// The foreign blob itself is not in the registry.
			a.expect(http.StatusNotFound, alice, "HEAD", "/v2/"+repo+"/blobs/"+tc.layer.Digest, nil)
			// go-containerregistry reads it as an image with a foreign layer.
			img, err := remote.Image(mustRef(t, p.host+"/"+repo+":"+tag, name.Insecure), basic("alice", "alice-pw"), remote.WithTransport(a.tr))
			if err != nil {
				t.Fatal(err)
			}
			mf, err := img.Manifest()
			if err != nil || len(mf.Layers) != 2 || len(mf.Layers[1].URLs) != 1 || mf.Layers[1].URLs[0] != tc.layer.URLs[0] {
				t.Errorf("manifest via go-containerregistry: %+v %v", mf, err)
			}
		})
	}
}
