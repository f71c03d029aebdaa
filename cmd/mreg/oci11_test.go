package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/opencontainers/go-digest"
)

// End-to-end tests of the OCI distribution-spec 1.1 features through the
// sidecar: the referrers API (GET /v2/<name>/referrers/<digest>, the
// OCI-Subject answer to a manifest PUT with a subject, GC of referrers),
// non-distributable layers, and catalog/tag pagination. Manifests are
// mostly pushed as raw HTTP so that the bytes, and with them the digests,
// are exactly what the test wrote.

const (
	ociIndexMT    = "application/vnd.oci.image.index.v1+json"
	ociManifestMT = "application/vnd.oci.image.manifest.v1+json"
	ociConfigMT   = "application/vnd.oci.image.config.v1+json"
	ociLayerMT    = "application/vnd.oci.image.layer.v1.tar+gzip"
	ociEmptyMT    = "application/vnd.oci.empty.v1+json"
	ociNonDistMT  = "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
)

// ociEmptyBlob is the OCI empty descriptor's content, the config (and
// single layer) of the artifacts pushed here.
var ociEmptyBlob = []byte("{}")

// ociDescriptor is an OCI content descriptor.
type ociDescriptor struct {
	MediaType    string            `json:"mediaType"`
	Digest       string            `json:"digest"`
	Size         int64             `json:"size"`
	URLs         []string          `json:"urls,omitempty"`
	ArtifactType string            `json:"artifactType,omitempty"`
	Annotations  map[string]string `json:"annotations,omitempty"`
}

// ociManifest is an OCI image manifest or index, as pushed.
type ociManifest struct {
	SchemaVersion int               `json:"schemaVersion"`
	MediaType     string            `json:"mediaType"`
	ArtifactType  string            `json:"artifactType,omitempty"`
	Config        *ociDescriptor    `json:"config,omitempty"`
	Layers        []ociDescriptor   `json:"layers,omitempty"`
	Manifests     []ociDescriptor   `json:"manifests,omitempty"`
	Subject       *ociDescriptor    `json:"subject,omitempty"`
	Annotations   map[string]string `json:"annotations,omitempty"`
}

// ociReferrersIndex is the answer of the referrers API.
type ociReferrersIndex struct {
	SchemaVersion int             `json:"schemaVersion"`
	MediaType     string          `json:"mediaType"`
	Manifests     []ociDescriptor `json:"manifests"`
}

func ociDesc(mt string, b []byte) ociDescriptor {
	return ociDescriptor{MediaType: mt, Digest: digest.FromBytes(b).String(), Size: int64(len(b))}
}

// ociPushed is a manifest as pushed: its bytes and descriptor.
type ociPushed struct {
	raw  []byte
	desc ociDescriptor // mediaType, digest, size
	m    ociManifest
}

// listed is the descriptor the referrers API must list for p: per the
// spec, artifactType is the manifest's, else (image manifests only) the
// config's media type, and the annotations are the manifest's.
func (p ociPushed) listed() ociDescriptor {
	d := p.desc
	d.ArtifactType = p.m.ArtifactType
	if d.ArtifactType == "" && p.m.MediaType == ociManifestMT && p.m.Config != nil {
		d.ArtifactType = p.m.Config.MediaType
	}
	d.Annotations = p.m.Annotations
	return d
}

// ociCred is a user's credentials; the zero value is anonymous.
type ociCred struct{ user, pass string }

// ociAPI talks raw HTTP to a registry (through the sidecar).
type ociAPI struct {
	t    *testing.T
	base *url.URL
	c    *http.Client
	tr   *http.Transport
}

func ociNewAPI(t *testing.T, host string) *ociAPI {
	t.Helper()
	base, err := url.Parse("http://" + host + "/")
	if err != nil {
		t.Fatal(err)
	}
	// Own connections, closed before the processes are stopped: an idle
	// keep-alive connection would hold up their graceful shutdown.
	tr := http.DefaultTransport.(*http.Transport).Clone()
	t.Cleanup(tr.CloseIdleConnections)
	return &ociAPI{t: t, base: base, c: &http.Client{Transport: tr, Timeout: 30 * time.Second}, tr: tr}
}

// ociHeaders is a list of header name, value pairs.
type ociHeaders []string

// send makes one request; path may be a path with query or a full URL.
// It is safe for concurrent use (no t.Fatal).
func (a *ociAPI) send(cred ociCred, method, path string, body []byte, hdr ociHeaders) (*http.Response, []byte, error) {
	u, err := a.base.Parse(path)
	if err != nil {
		return nil, nil, err
	}
	var rd io.Reader = http.NoBody
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequest(method, u.String(), rd)
	if err != nil {
		return nil, nil, err
	}
	if cred.user != "" {
		req.SetBasicAuth(cred.user, cred.pass)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := a.c.Do(req)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp, b, err
}

func (a *ociAPI) do(cred ociCred, method, path string, body []byte, hdr ...string) (*http.Response, []byte) {
	a.t.Helper()
	resp, b, err := a.send(cred, method, path, body, hdr)
	if err != nil {
		a.t.Fatalf("%s %s: %v", method, path, err)
	}
	return resp, b
}

// expect makes a request and fails unless it answers status.
func (a *ociAPI) expect(status int, cred ociCred, method, path string, body []byte, hdr ...string) (*http.Response, []byte) {
	a.t.Helper()
	resp, b := a.do(cred, method, path, body, hdr...)
	if resp.StatusCode != status {
		a.t.Fatalf("%s %s: %s, want %d\n%s", method, path, resp.Status, status, b)
	}
	return resp, b
}

// pushBlob uploads b to repo (POST, then PUT with the digest).
func (a *ociAPI) pushBlob(cred ociCred, repo string, b []byte) ociDescriptor {
	a.t.Helper()
	d := digest.FromBytes(b)
	resp, _ := a.expect(http.StatusAccepted, cred, "POST", "/v2/"+repo+"/blobs/uploads/", nil)
	loc, err := a.base.Parse(resp.Header.Get("Location"))
	if err != nil {
		a.t.Fatal(err)
	}
	q := loc.Query()
	q.Set("digest", d.String())
	loc.RawQuery = q.Encode()
	a.expect(http.StatusCreated, cred, "PUT", loc.String(), b, "Content-Type", "application/octet-stream")
	return ociDescriptor{MediaType: "application/octet-stream", Digest: d.String(), Size: int64(len(b))}
}

// marshal returns the bytes of m as pushed.
func ociMarshal(t *testing.T, m ociManifest) ociPushed {
	t.Helper()
	raw, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return ociPushed{raw: raw, desc: ociDesc(m.MediaType, raw), m: m}
}

// putManifest PUTs m to repo under ref ("" = by digest) and returns the
// response without judging it.
func (a *ociAPI) putManifest(cred ociCred, repo, ref string, m ociManifest) (ociPushed, *http.Response, []byte) {
	a.t.Helper()
	p := ociMarshal(a.t, m)
	if ref == "" {
		ref = p.desc.Digest
	}
	resp, body := a.do(cred, "PUT", "/v2/"+repo+"/manifests/"+ref, p.raw, "Content-Type", m.MediaType)
	return p, resp, body
}

// mustPutManifest PUTs m and requires 201 Created, the digest in
// Docker-Content-Digest and, for a manifest with a subject, OCI-Subject.
func (a *ociAPI) mustPutManifest(cred ociCred, repo, ref string, m ociManifest) ociPushed {
	a.t.Helper()
	p, resp, body := a.putManifest(cred, repo, ref, m)
	if resp.StatusCode != http.StatusCreated {
		a.t.Fatalf("PUT manifest %s:%s: %s\n%s", repo, ref, resp.Status, body)
	}
	if got := resp.Header.Get("Docker-Content-Digest"); got != p.desc.Digest {
		a.t.Errorf("PUT manifest %s:%s: Docker-Content-Digest %q, want %q", repo, ref, got, p.desc.Digest)
	}
	want := ""
	if m.Subject != nil {
		want = m.Subject.Digest
	}
	if got := resp.Header.Get("OCI-Subject"); got != want {
		a.t.Errorf("PUT manifest %s:%s: OCI-Subject %q, want %q", repo, ref, got, want)
	}
	return p
}

// ociSubjectOf is the subject descriptor of a pushed manifest.
func ociSubjectOf(p ociPushed) *ociDescriptor {
	d := ociDescriptor{MediaType: p.desc.MediaType, Digest: p.desc.Digest, Size: p.desc.Size}
	return &d
}

// ociImageManifest is a small image: a config with seed in it and one
// layer of seed's bytes. The blobs must be pushed with pushImageBlobs.
func ociImageManifest(seed string) (ociManifest, [][]byte) {
	cfg := []byte(fmt.Sprintf(`{"architecture":"amd64","os":"linux","config":{"Labels":{"seed":%q}},"rootfs":{"type":"layers","diff_ids":[]}}`, seed))
	layer := []byte("layer " + seed)
	c, l := ociDesc(ociConfigMT, cfg), ociDesc(ociLayerMT, layer)
	return ociManifest{SchemaVersion: 2, MediaType: ociManifestMT, Config: &c, Layers: []ociDescriptor{l}}, [][]byte{cfg, layer}
}

// pushImage pushes a small image (blobs and manifest) to repo:tag (tag ""
// = by digest only).
func (a *ociAPI) pushImage(cred ociCred, repo, tag, seed string) ociPushed {
	a.t.Helper()
	m, blobs := ociImageManifest(seed)
	for _, b := range blobs {
		a.pushBlob(cred, repo, b)
	}
	return a.mustPutManifest(cred, repo, tag, m)
}

// ociArtifact is an artifact manifest (empty config and layer) referring
// to subject.
func ociArtifact(subject *ociDescriptor, artifactType string, annotations map[string]string) ociManifest {
	e := ociDesc(ociEmptyMT, ociEmptyBlob)
	return ociManifest{
		SchemaVersion: 2, MediaType: ociManifestMT, ArtifactType: artifactType,
		Config: &e, Layers: []ociDescriptor{e}, Subject: subject, Annotations: annotations,
	}
}

// referrers lists the referrers of subject in repo; query is "" or
// "?artifactType=…".
func (a *ociAPI) referrers(cred ociCred, repo, subject, query string) (*http.Response, []byte) {
	a.t.Helper()
	return a.do(cred, "GET", "/v2/"+repo+"/referrers/"+subject+query, nil, "Accept", ociIndexMT)
}

// mustReferrers lists referrers, requires a well-formed 200 answer (the
// media type in Content-Type and body, a JSON list even when empty) and
// returns the descriptors.
func (a *ociAPI) mustReferrers(cred ociCred, repo, subject, query string) ([]ociDescriptor, http.Header) {
	a.t.Helper()
	resp, body := a.referrers(cred, repo, subject, query)
	if resp.StatusCode != http.StatusOK {
		a.t.Fatalf("referrers %s@%s%s: %s, want 200\n%s", repo, subject, query, resp.Status, body)
	}
	if ct := resp.Header.Get("Content-Type"); ct != ociIndexMT {
		a.t.Errorf("referrers %s@%s%s: Content-Type %q, want %q", repo, subject, query, ct, ociIndexMT)
	}
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(body, &raw); err != nil {
		a.t.Fatalf("referrers %s@%s%s: %v\n%s", repo, subject, query, err, body)
	}
	if m := strings.TrimSpace(string(raw["manifests"])); m == "" || m == "null" {
		a.t.Errorf("referrers %s@%s%s: manifests is %q, want a JSON list: %s", repo, subject, query, m, body)
	}
	var idx ociReferrersIndex
	if err := json.Unmarshal(body, &idx); err != nil {
		a.t.Fatal(err)
	}
	if idx.SchemaVersion != 2 || idx.MediaType != ociIndexMT {
		a.t.Errorf("referrers %s@%s%s: schemaVersion %d mediaType %q: %s", repo, subject, query, idx.SchemaVersion, idx.MediaType, body)
	}
	return idx.Manifests, resp.Header
}

// ociSameDescs compares referrer lists regardless of order.
func ociSameDescs(t *testing.T, what string, got, want []ociDescriptor) {
	t.Helper()
	sortd := func(ds []ociDescriptor) []ociDescriptor {
		out := append([]ociDescriptor{}, ds...)
		sort.Slice(out, func(i, j int) bool { return out[i].Digest < out[j].Digest })
		return out
	}
	g, w := sortd(got), sortd(want)
	if !reflect.DeepEqual(g, w) {
		gj, _ := json.MarshalIndent(g, "", "  ")
		wj, _ := json.MarshalIndent(w, "", "  ")
		t.Errorf("%s:\ngot  %s\nwant %s", what, gj, wj)
	}
}

// ociErrorCodes returns the error codes of a registry error body.
func ociErrorCodes(body []byte) []string {
	var e struct {
		Errors []struct {
			Code string `json:"code"`
		} `json:"errors"`
	}
	_ = json.Unmarshal(body, &e)
	var codes []string
	for _, x := range e.Errors {
		codes = append(codes, x.Code)
	}
	return codes
}

// ociUsers adds the admin root and the user alice (bcrypt cost 4).
func ociUsers(t *testing.T, p *pair) (admin, alice ociCred) {
	t.Helper()
	p.manageUser(t, "root-pw\n", "add", "--admin", "--cost", "4", "root")
	p.manageUser(t, "alice-pw\n", "add", "--cost", "4", "alice")
	return ociCred{"root", "root-pw"}, ociCred{"alice", "alice-pw"}
}

// ociTags lists every tag of repo (without pagination).
func (a *ociAPI) tags(cred ociCred, repo string) []string {
	a.t.Helper()
	_, body := a.expect(http.StatusOK, cred, "GET", "/v2/"+repo+"/tags/list", nil)
	var tl struct {
		Tags []string `json:"tags"`
	}
	if err := json.Unmarshal(body, &tl); err != nil {
		a.t.Fatal(err)
	}
	return tl.Tags
}

// ociFallbackTag is the referrers tag schema's tag for subject.
func ociFallbackTag(subject string) string { return strings.Replace(subject, ":", "-", 1) }

// TestOCIReferrersThroughSidecar is the referrers API table: listing,
// filtering, descriptors' contents, odd digests, a referrer before its
// subject, deletion, and who may list.
func TestOCIReferrersThroughSidecar(t *testing.T) {
	p := startPair(t)
	admin, alice := ociUsers(t, p)
	a := ociNewAPI(t, p.host)
	const repo = "team/app"

	subject := a.pushImage(admin, repo, "v1", "subject")
	other := a.pushImage(admin, repo, "v2", "other") // a second subject with no referrers
	a.pushBlob(admin, repo, ociEmptyBlob)

	// Before any referrer: 200 and an empty list (not 404, not null).
	got, hdr := a.mustReferrers(admin, repo, subject.desc.Digest, "")
	if len(got) != 0 || hdr.Get("OCI-Filters-Applied") != "" {
		t.Fatalf("referrers before any push: %v %v", got, hdr)
	}

	sub := ociSubjectOf(subject)
	sbom := a.mustPutManifest(admin, repo, "", ociArtifact(sub, "application/vnd.example.sbom",
		map[string]string{"org.opencontainers.image.created": "2025-01-02T03:04:05Z", "org.example.tool": "syft"}))
	sig := a.mustPutManifest(admin, repo, "", ociArtifact(sub, "application/vnd.example.sig", nil))
	// Pushed by tag: listed as well, and the tag answer carries OCI-Subject too.
	sig2 := a.mustPutManifest(admin, repo, "sig-tagged", ociArtifact(sub, "application/vnd.example.sig",
		map[string]string{"n": "2"}))
	// No artifactType: listed with the config's media type.
	cfgMT := "application/vnd.example.config.v1+json"
	cfg := []byte(`{"tool":"scanner"}`)
	a.pushBlob(admin, repo, cfg)
	noAT := ociArtifact(sub, "", map[string]string{"org.example.kind": "scan"})
	c := ociDesc(cfgMT, cfg)
	noAT.Config = &c
	scan := a.mustPutManifest(admin, repo, "", noAT)
	// An index as referrer, with and without artifactType (without: the
	// spec says artifactType is omitted, not taken from anywhere).
	bundle := a.mustPutManifest(admin, repo, "", ociManifest{
		SchemaVersion: 2, MediaType: ociIndexMT, ArtifactType: "application/vnd.example.bundle",
		Manifests: []ociDescriptor{sbom.desc, sig.desc}, Subject: sub,
		Annotations: map[string]string{"org.example.bundle": "yes"},
	})
	plainIdx := a.mustPutManifest(admin, repo, "", ociManifest{
		SchemaVersion: 2, MediaType: ociIndexMT, Manifests: []ociDescriptor{sbom.desc}, Subject: sub,
	})
	// A referrer of another manifest, and one of the SBOM (a signature of
	// an SBOM): neither is a referrer of the subject.
	otherRef := a.mustPutManifest(admin, repo, "", ociArtifact(ociSubjectOf(other), "application/vnd.example.sbom", nil))
	sbomSig := a.mustPutManifest(admin, repo, "", ociArtifact(ociSubjectOf(sbom), "application/vnd.example.sig", nil))
	all := []ociDescriptor{sbom.listed(), sig.listed(), sig2.listed(), scan.listed(), bundle.listed(), plainIdx.listed()}
	if d := plainIdx.listed(); d.ArtifactType != "" {
		t.Fatalf("test bug: an index without artifactType lists as %q", d.ArtifactType)
	}

	// go-containerregistry pushes a referrer: mreg supports the referrers
	// API, so no fallback tag sha256-<hex> may appear.
	ggcrArt := mutate.ConfigMediaType(mutate.MediaType(empty.Image, types.OCIManifestSchema1), "application/vnd.example.ggcr.config")
	// (Subject outermost: mutate.Annotations over mutate.Subject drops the subject.)
	ggcrImg := mutate.Subject(mutate.Annotations(ggcrArt, map[string]string{"org.example.pusher": "ggcr"}), v1.Descriptor{
		MediaType: types.OCIManifestSchema1, Digest: v1.Hash{Algorithm: "sha256", Hex: strings.TrimPrefix(subject.desc.Digest, "sha256:")}, Size: subject.desc.Size,
	}).(v1.Image)
	ggcrDigest, err := ggcrImg.Digest()
	if err != nil {
		t.Fatal(err)
	}
	ggcrRaw, _ := ggcrImg.RawManifest()
	ropts := []remote.Option{basic("root", "root-pw"), remote.WithTransport(a.tr)}
	if err := remote.Write(mustRef(t, p.host+"/"+repo+"@"+ggcrDigest.String(), name.Insecure), ggcrImg, ropts...); err != nil {
		t.Fatalf("go-containerregistry push of a referrer: %v", err)
	}
	all = append(all, ociDescriptor{
		MediaType: ociManifestMT, Digest: ggcrDigest.String(), Size: int64(len(ggcrRaw)),
		ArtifactType: "application/vnd.example.ggcr.config", Annotations: map[string]string{"org.example.pusher": "ggcr"},
	})
	for _, tag := range a.tags(admin, repo) {
		if strings.HasPrefix(tag, "sha256-") {
			t.Errorf("fallback tag %q created although the registry serves the referrers API", tag)
		}
	}
	a.expect(http.StatusNotFound, admin, "GET", "/v2/"+repo+"/manifests/"+ociFallbackTag(subject.desc.Digest), nil, "Accept", ociIndexMT)
	// go-containerregistry's own referrers call sees the list too.
	ridx, err := remote.Referrers(mustRef(t, p.host+"/"+repo+"@"+subject.desc.Digest, name.Insecure).(name.Digest), ropts...)
	if err != nil {
		t.Fatalf("remote.Referrers: %v", err)
	}
	if im, err := ridx.IndexManifest(); err != nil {
		t.Errorf("remote.Referrers: %v", err)
	} else if len(im.Manifests) != len(all) {
		t.Errorf("remote.Referrers: %d descriptors, want %d", len(im.Manifests), len(all))
	}

	filtered := func(at string) []ociDescriptor {
		out := []ociDescriptor{}
		for _, d := range all {
			if d.ArtifactType == at {
				out = append(out, d)
			}
		}
		return out
	}
	ghost := digest.FromString("never pushed").String()
	for _, tc := range []struct {
		name     string
		cred     ociCred
		repo     string
		subject  string
		query    string
		status   int
		want     []ociDescriptor // checked when status is 200
		filtered bool
	}{
		{name: "all referrers", cred: admin, repo: repo, subject: subject.desc.Digest, status: 200, want: all},
		{name: "user may list", cred: alice, repo: repo, subject: subject.desc.Digest, status: 200, want: all},
		{name: "filter sbom", cred: admin, repo: repo, subject: subject.desc.Digest, query: "?artifactType=application/vnd.example.sbom",
			status: 200, want: filtered("application/vnd.example.sbom"), filtered: true},
		{name: "filter sig", cred: admin, repo: repo, subject: subject.desc.Digest, query: "?artifactType=" + url.QueryEscape("application/vnd.example.sig"),
			status: 200, want: filtered("application/vnd.example.sig"), filtered: true},
		{name: "filter by config media type", cred: admin, repo: repo, subject: subject.desc.Digest, query: "?artifactType=" + url.QueryEscape(cfgMT),
			status: 200, want: []ociDescriptor{scan.listed()}, filtered: true},
		{name: "filter index artifactType", cred: admin, repo: repo, subject: subject.desc.Digest, query: "?artifactType=application/vnd.example.bundle",
			status: 200, want: []ociDescriptor{bundle.listed()}, filtered: true},
		{name: "filter matching nothing", cred: admin, repo: repo, subject: subject.desc.Digest, query: "?artifactType=application/vnd.example.none",
			status: 200, want: []ociDescriptor{}, filtered: true},
		{name: "other subject", cred: admin, repo: repo, subject: other.desc.Digest, status: 200, want: []ociDescriptor{otherRef.listed()}},
		{name: "referrer of a referrer", cred: admin, repo: repo, subject: sbom.desc.Digest, status: 200, want: []ociDescriptor{sbomSig.listed()}},
		{name: "unknown subject", cred: admin, repo: repo, subject: ghost, status: 200, want: []ociDescriptor{}},
		{name: "unknown subject filtered", cred: admin, repo: repo, subject: ghost, query: "?artifactType=x/y", status: 200, want: []ociDescriptor{}, filtered: true},
		{name: "other repository", cred: admin, repo: "team/elsewhere", subject: subject.desc.Digest, status: 200, want: []ociDescriptor{}},
		{name: "invalid digest", cred: admin, repo: repo, subject: "sha256:nothex", status: 400},
		{name: "not a digest", cred: admin, repo: repo, subject: "v1", status: 400},
		{name: "short digest", cred: admin, repo: repo, subject: "sha256:" + strings.Repeat("a", 63), status: 400},
		{name: "anonymous", cred: ociCred{}, repo: repo, subject: subject.desc.Digest, status: 401},
		{name: "wrong password", cred: ociCred{"alice", "nope"}, repo: repo, subject: subject.desc.Digest, status: 401},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := *a
			a.t = t
			if tc.status != 200 {
				resp, body := a.referrers(tc.cred, tc.repo, tc.subject, tc.query)
				if resp.StatusCode != tc.status {
					t.Fatalf("status %s, want %d\n%s", resp.Status, tc.status, body)
				}
				if tc.status == 401 && resp.Header.Get("WWW-Authenticate") == "" {
					t.Errorf("401 without WWW-Authenticate")
				}
				if tc.status == 400 && len(ociErrorCodes(body)) == 0 {
					t.Errorf("400 without a registry error body: %s", body)
				}
				return
			}
			got, hdr := a.mustReferrers(tc.cred, tc.repo, tc.subject, tc.query)
			ociSameDescs(t, "referrers", got, tc.want)
			if f := hdr.Get("OCI-Filters-Applied"); (f == "artifactType") != tc.filtered || (!tc.filtered && f != "") {
				t.Errorf("OCI-Filters-Applied %q, filtered %v", f, tc.filtered)
			}
		})
	}

	// HEAD answers like GET without a body.
	if resp, body := a.do(admin, "HEAD", "/v2/"+repo+"/referrers/"+subject.desc.Digest, nil); resp.StatusCode != 200 ||
		resp.Header.Get("Content-Type") != ociIndexMT || len(body) != 0 {
		t.Errorf("HEAD referrers: %s %q %d bytes", resp.Status, resp.Header.Get("Content-Type"), len(body))
	}

	// A refused referrer PUT (its config blob is missing) gets no OCI-Subject.
	missing := ociArtifact(sub, "application/vnd.example.broken", nil)
	mc := ociDesc("application/vnd.example.config", []byte("not pushed"))
	missing.Config = &mc
	if _, resp, body := a.putManifest(admin, repo, "", missing); resp.StatusCode != http.StatusBadRequest || resp.Header.Get("OCI-Subject") != "" {
		t.Errorf("referrer with a missing blob: %s, OCI-Subject %q, want 400 without it\n%s", resp.Status, resp.Header.Get("OCI-Subject"), body)
	}

	// A user may list but not push a referrer.
	if _, resp, body := a.putManifest(alice, repo, "", ociArtifact(sub, "application/vnd.example.evil", nil)); resp.StatusCode != http.StatusForbidden {
		t.Errorf("user pushes a referrer: %s, want 403\n%s", resp.Status, body)
	}

	// A referrer pushed before its subject exists: accepted, with
	// OCI-Subject, and listed; still listed once the subject arrives.
	t.Run("referrer before subject", func(t *testing.T) {
		a := *a
		a.t = t
		late, blobs := ociImageManifest("late subject")
		lateP := ociMarshal(t, late)
		early := a.mustPutManifest(admin, repo, "", ociArtifact(ociSubjectOf(lateP), "application/vnd.example.early", nil))
		got, _ := a.mustReferrers(admin, repo, lateP.desc.Digest, "")
		ociSameDescs(t, "referrers of a subject not yet pushed", got, []ociDescriptor{early.listed()})
		for _, b := range blobs {
			a.pushBlob(admin, repo, b)
		}
		a.mustPutManifest(admin, repo, "late", late)
		got, _ = a.mustReferrers(admin, repo, lateP.desc.Digest, "")
		ociSameDescs(t, "referrers after the subject was pushed", got, []ociDescriptor{early.listed()})
	})

	// Deleting a referrer by digest removes it from the list at once.
	t.Run("referrer deleted", func(t *testing.T) {
		a := *a
		a.t = t
		a.expect(http.StatusAccepted, admin, "DELETE", "/v2/"+repo+"/manifests/"+sig.desc.Digest, nil)
		a.expect(http.StatusAccepted, admin, "DELETE", "/v2/"+repo+"/manifests/"+bundle.desc.Digest, nil)
		var want []ociDescriptor
		for _, d := range all {
			if d.Digest != sig.desc.Digest && d.Digest != bundle.desc.Digest {
				want = append(want, d)
			}
		}
		got, _ := a.mustReferrers(alice, repo, subject.desc.Digest, "")
		ociSameDescs(t, "referrers after deleting two", got, want)
		got, _ = a.mustReferrers(alice, repo, subject.desc.Digest, "?artifactType=application/vnd.example.bundle")
		ociSameDescs(t, "bundle referrers after deleting the bundle", got, []ociDescriptor{})
		// Pushed again (same bytes): listed again.
		a.mustPutManifest(admin, repo, "", sig.m)
		got, _ = a.mustReferrers(alice, repo, subject.desc.Digest, "")
		ociSameDescs(t, "referrers after re-pushing one", got, append(want, sig.listed()))
	})
}

// ociStack is a registry and a sidecar started by the test itself, so that
// the registry can be killed, stopped, garbage-collected and restarted on
// the same root and address while the sidecar keeps running.
type ociStack struct {
	t       *testing.T
	bin     string
	root    string
	authDir string
	regAddr string
	host    string // the sidecar
	reg     *gclProc
	api     *ociAPI
	admin   ociCred
}

func ociStartStack(t *testing.T) *ociStack {
	t.Helper()
	s := &ociStack{t: t, bin: mregBin(t), root: t.TempDir(), authDir: t.TempDir(),
		regAddr: "127.0.0.1:" + strconv.Itoa(freePort(t)), host: "127.0.0.1:" + strconv.Itoa(freePort(t))}
	s.startRegistry()
	startProc(t, nil, s.bin, "sidecar", "--addr", s.host, "--upstream", "http://"+s.regAddr,
		"--auth-dir", s.authDir, "--metrics-addr", "", "--registry-metrics-url", "")
	waitHealthy(t, s.bin, "http://"+s.host+"/v2/")
	(&pair{bin: s.bin, authDir: s.authDir}).manageUser(t, "root-pw\n", "add", "--admin", "--cost", "4", "root")
	s.admin = ociCred{"root", "root-pw"}
	s.api = ociNewAPI(t, s.host)
	return s
}

func (s *ociStack) startRegistry() {
	s.t.Helper()
	s.reg = gclStart(s.t, s.bin, "registry", "--root", s.root, "--addr", s.regAddr, "--metrics-addr", "")
	waitHealthy(s.t, s.bin, "http://"+s.regAddr+"/v2/")
}

// TestOCIReferrersGC: GC removes referrers whose subject is gone (and
// their own referrers, and referrers of a subject that never existed) and
// keeps untagged referrers of live subjects.
func TestOCIReferrersGC(t *testing.T) {
	s := ociStartStack(t)
	a, admin := s.api, s.admin
	const repo = "gc/app"
	a.pushBlob(admin, repo, ociEmptyBlob)

	live := a.pushImage(admin, repo, "live", "live subject")
	doomed := a.pushImage(admin, repo, "doomed", "doomed subject")
	liveSBOM := a.mustPutManifest(admin, repo, "", ociArtifact(ociSubjectOf(live), "application/vnd.example.sbom", nil))
	liveSig := a.mustPutManifest(admin, repo, "", ociArtifact(ociSubjectOf(live), "application/vnd.example.sig", nil))
	liveSBOMSig := a.mustPutManifest(admin, repo, "", ociArtifact(ociSubjectOf(liveSBOM), "application/vnd.example.sig", nil))
	doomedSBOM := a.mustPutManifest(admin, repo, "", ociArtifact(ociSubjectOf(doomed), "application/vnd.example.sbom", nil))
	doomedSBOMSig := a.mustPutManifest(admin, repo, "", ociArtifact(ociSubjectOf(doomedSBOM), "application/vnd.example.sig", nil))
	ghost := ociMarshal(t, ociManifest{SchemaVersion: 2, MediaType: ociManifestMT, Annotations: map[string]string{"never": "pushed"}})
	orphan := a.mustPutManifest(admin, repo, "", ociArtifact(ociSubjectOf(ghost), "application/vnd.example.sbom", nil))

	// An untagged child of a tagged index is live, and so is its referrer.
	child := a.pushImage(admin, repo, "", "index child")
	a.mustPutManifest(admin, repo, "idx", ociManifest{SchemaVersion: 2, MediaType: ociIndexMT, Manifests: []ociDescriptor{child.desc}})
	childSig := a.mustPutManifest(admin, repo, "", ociArtifact(ociSubjectOf(child), "application/vnd.example.sig", nil))

	a.expect(http.StatusAccepted, admin, "DELETE", "/v2/"+repo+"/manifests/"+doomed.desc.Digest, nil)
	a.expect(http.StatusNotFound, admin, "GET", "/v2/"+repo+"/manifests/doomed", nil, "Accept", ociManifestMT)
	// Until GC the referrers of the deleted subject are still there.
	got, _ := a.mustReferrers(admin, repo, doomed.desc.Digest, "")
	ociSameDescs(t, "referrers of the deleted subject before GC", got, []ociDescriptor{doomedSBOM.listed()})

	s.reg.stop(t)
	stdout, stderr := gclRunOut(t, s.bin, true, "gc", "--root", s.root)
	rep := gclParseReport(t, stderr)
	t.Logf("%s", gclSummary(t, stdout))
	if rep.ManifestsRemoved != 3 {
		t.Errorf("gc removed %d manifests, want 3 (the deleted subject's SBOM, its signature, the orphan): %+v", rep.ManifestsRemoved, rep)
	}
	s.startRegistry()

	got, _ = a.mustReferrers(admin, repo, doomed.desc.Digest, "")
	ociSameDescs(t, "referrers of the deleted subject after GC", got, []ociDescriptor{})
	got, _ = a.mustReferrers(admin, repo, doomedSBOM.desc.Digest, "")
	ociSameDescs(t, "referrers of the collected SBOM after GC", got, []ociDescriptor{})
	got, _ = a.mustReferrers(admin, repo, ghost.desc.Digest, "")
	ociSameDescs(t, "referrers of a never-pushed subject after GC", got, []ociDescriptor{})
	for _, gone := range []ociPushed{doomedSBOM, doomedSBOMSig, orphan} {
		a.expect(http.StatusNotFound, admin, "GET", "/v2/"+repo+"/manifests/"+gone.desc.Digest, nil, "Accept", ociManifestMT)
	}

	got, _ = a.mustReferrers(admin, repo, live.desc.Digest, "")
	ociSameDescs(t, "referrers of the live subject after GC", got, []ociDescriptor{liveSBOM.listed(), liveSig.listed()})
	got, _ = a.mustReferrers(admin, repo, liveSBOM.desc.Digest, "")
	ociSameDescs(t, "referrers of the live SBOM after GC", got, []ociDescriptor{liveSBOMSig.listed()})
	got, _ = a.mustReferrers(admin, repo, child.desc.Digest, "")
	ociSameDescs(t, "referrers of the index child after GC", got, []ociDescriptor{childSig.listed()})
	for _, kept := range []ociPushed{live, liveSBOM, liveSig, liveSBOMSig, child, childSig} {
		_, body := a.expect(http.StatusOK, admin, "GET", "/v2/"+repo+"/manifests/"+kept.desc.Digest, nil, "Accept", ociManifestMT)
		if !bytes.Equal(body, kept.raw) {
			t.Errorf("%s after GC: bytes differ", kept.desc.Digest)
		}
	}
	// The blobs of the kept referrers survived (their config is the empty blob).
	a.expect(http.StatusOK, admin, "GET", "/v2/"+repo+"/blobs/"+ociDesc("", ociEmptyBlob).Digest, nil)
	if tags := a.tags(admin, repo); !reflect.DeepEqual(tags, []string{"idx", "live"}) {
		t.Errorf("tags after GC: %v, want [idx live]", tags)
	}
}

// TestOCIReferrersSurviveRegistryKill: a referrer acknowledged with 201 is
// listed, exactly once, after the registry is killed with SIGKILL and
// started again on the same storage.
func TestOCIReferrersSurviveRegistryKill(t *testing.T) {
	s := ociStartStack(t)
	a, admin := s.api, s.admin
	const repo = "crash/app"
	a.pushBlob(admin, repo, ociEmptyBlob)
	subject := a.pushImage(admin, repo, "v1", "crash subject")
	first := a.mustPutManifest(admin, repo, "", ociArtifact(ociSubjectOf(subject), "application/vnd.example.sbom", nil))
	// The running registry has listed (and cached) it once before the kill.
	got, _ := a.mustReferrers(admin, repo, subject.desc.Digest, "")
	ociSameDescs(t, "before the kill", got, []ociDescriptor{first.listed()})
	second := a.mustPutManifest(admin, repo, "", ociArtifact(ociSubjectOf(subject), "application/vnd.example.sig", nil))

	s.reg.kill(t)
	// While the registry is down the sidecar answers an error, not a list.
	if resp, _ := a.referrers(admin, repo, subject.desc.Digest, ""); resp.StatusCode < 500 {
		t.Errorf("referrers with the registry down: %s, want 5xx", resp.Status)
	}
	s.startRegistry()

	got, _ = a.mustReferrers(admin, repo, subject.desc.Digest, "")
	ociSameDescs(t, "after the kill", got, []ociDescriptor{first.listed(), second.listed()})
	// And pushing again (the client's retry of a PUT whose answer it lost)
	// does not duplicate it.
	a.mustPutManifest(admin, repo, "", second.m)
	third := a.mustPutManifest(admin, repo, "", ociArtifact(ociSubjectOf(subject), "application/vnd.example.vex", nil))
	got, _ = a.mustReferrers(admin, repo, subject.desc.Digest, "")
	ociSameDescs(t, "after a retried push and a new one", got, []ociDescriptor{first.listed(), second.listed(), third.listed()})
}

// TestOCIReferrersConcurrentPush: 20 referrers of one subject pushed in
// parallel are all listed, each once.
func TestOCIReferrersConcurrentPush(t *testing.T) {
	p := startPair(t)
	admin, _ := ociUsers(t, p)
	a := ociNewAPI(t, p.host)
	const repo = "conc/app"
	const n = 20
	a.pushBlob(admin, repo, ociEmptyBlob)
	subject := a.pushImage(admin, repo, "v1", "concurrent subject")

	want := make([]ociDescriptor, n)
	errs := make(chan error, 2*n)
	var wg sync.WaitGroup
	for i := range n {
		m := ociArtifact(ociSubjectOf(subject), "application/vnd.example.sig", map[string]string{"i": strconv.Itoa(i)})
		pushed := ociMarshal(t, m)
		want[i] = pushed.listed()
		wg.Add(2)
		go func() {
			defer wg.Done()
			resp, body, err := a.send(admin, "PUT", "/v2/"+repo+"/manifests/"+pushed.desc.Digest, pushed.raw, ociHeaders{"Content-Type", ociManifestMT})
			switch {
			case err != nil:
				errs <- fmt.Errorf("push %d: %v", i, err)
			case resp.StatusCode != http.StatusCreated:
				errs <- fmt.Errorf("push %d: %s\n%s", i, resp.Status, body)
			case resp.Header.Get("OCI-Subject") != subject.desc.Digest:
				errs <- fmt.Errorf("push %d: OCI-Subject %q", i, resp.Header.Get("OCI-Subject"))
			}
		}()
		// Listings race with the pushes: each must be a well-formed subset.
		go func() {
			defer wg.Done()
			resp, body, err := a.send(admin, "GET", "/v2/"+repo+"/referrers/"+subject.desc.Digest, nil, nil)
			if err != nil || resp.StatusCode != http.StatusOK {
				errs <- fmt.Errorf("list during pushes: %v %v", err, resp)
				return
			}
			var idx ociReferrersIndex
			if err := json.Unmarshal(body, &idx); err != nil || len(idx.Manifests) > n {
				errs <- fmt.Errorf("list during pushes: %v, %d entries", err, len(idx.Manifests))
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	got, _ := a.mustReferrers(admin, repo, subject.desc.Digest, "")
	seen := map[string]int{}
	for _, d := range got {
		seen[d.Digest]++
	}
	for d, k := range seen {
		if k != 1 {
			t.Errorf("%s listed %d times", d, k)
		}
	}
	if len(got) != n {
		t.Errorf("%d referrers listed, want %d", len(got), n)
	}
	ociSameDescs(t, "after 20 parallel pushes", got, want)
}

// TestOCIRegctlArtifacts: regctl attaches an artifact to an image and
// lists it through the sidecar in token mode, without a fallback tag.
func TestOCIRegctlArtifacts(t *testing.T) {
	regctl := toolBin(t, "regctl")
	p := startPair(t, "--auth", "token")
	admin, _ := ociUsers(t, p)
	a := ociNewAPI(t, p.host)
	const repo = "regctl/app"
	subject := a.pushImage(admin, repo, "v1", "regctl subject")
	ref := p.host + "/" + repo + ":v1"

	radmin := newClient(t, regctl)
	radmin.run("", true, "registry", "set", p.host, "--tls", "disabled")
	radmin.run("root-pw", true, "registry", "login", p.host, "-u", "root", "--pass-stdin")
	radmin.run(`{"spdxVersion":"SPDX-2.3"}`, true, "artifact", "put", "--subject", ref,
		"--artifact-type", "application/vnd.example.sbom", "--annotation", "org.example.tool=regctl")
	sigFile := filepath.Join(t.TempDir(), "sig.txt")
	if err := os.WriteFile(sigFile, []byte("signature"), 0o644); err != nil {
		t.Fatal(err)
	}
	radmin.run("", true, "artifact", "put", "--subject", ref, "--artifact-type", "application/vnd.example.sig",
		"-f", sigFile, "-m", "application/vnd.example.sig.v1")

	// The list as regctl reports it.
	type regctlList struct {
		Descriptors []ociDescriptor `json:"descriptors"`
		Tags        []string        `json:"tags"`
	}
	list := func(c *client, args ...string) regctlList {
		t.Helper()
		out := c.run("", true, append([]string{"artifact", "list", ref, "--format", "{{json .}}"}, args...)...)
		var l regctlList
		if err := json.Unmarshal([]byte(out), &l); err != nil {
			t.Fatalf("regctl artifact list output: %v\n%s", err, out)
		}
		return l
	}
	l := list(radmin)
	seen := map[string]bool{}
	for _, d := range l.Descriptors {
		seen[d.ArtifactType] = true
	}
	if len(l.Descriptors) != 2 || !seen["application/vnd.example.sbom"] || !seen["application/vnd.example.sig"] {
		t.Fatalf("regctl artifact list: %+v", l)
	}
	for _, d := range l.Descriptors {
		if d.ArtifactType == "application/vnd.example.sbom" && d.Annotations["org.example.tool"] != "regctl" {
			t.Errorf("sbom annotations: %v", d.Annotations)
		}
	}
	if l := list(radmin, "--filter-artifact-type", "application/vnd.example.sig"); len(l.Descriptors) != 1 || l.Descriptors[0].ArtifactType != "application/vnd.example.sig" {
		t.Errorf("regctl artifact list --filter-artifact-type: %+v", l)
	}
	// The registry's own answer agrees.
	got, _ := a.mustReferrers(admin, repo, subject.desc.Digest, "")
	ociSameDescs(t, "referrers API after regctl", got, l.Descriptors)

	// No fallback tag: the only tag is still v1.
	if tags := strings.Fields(radmin.run("", true, "tag", "ls", p.host+"/"+repo)); !reflect.DeepEqual(tags, []string{"v1"}) {
		t.Errorf("tags after regctl artifact put: %v, want [v1]", tags)
	}
	// A user lists (pull access) but cannot attach.
	ruser := newClient(t, regctl)
	ruser.run("", true, "registry", "set", p.host, "--tls", "disabled")
	ruser.run("alice-pw", true, "registry", "login", p.host, "-u", "alice", "--pass-stdin")
	if l := list(ruser); len(l.Descriptors) != 2 {
		t.Errorf("user's regctl artifact list: %+v", l)
	}
	ruser.run("x", false, "artifact", "put", "--subject", ref, "--artifact-type", "application/vnd.example.evil")
	if got, _ := a.mustReferrers(admin, repo, subject.desc.Digest, ""); len(got) != 2 {
		t.Errorf("after the user's refused put: %d referrers", len(got))
	}
	// The digest regctl resolves for the subject is the one pushed.
	if d := strings.TrimSpace(ruser.run("", true, "image", "digest", ref)); d != subject.desc.Digest {
		t.Errorf("regctl image digest %q, want %q", d, subject.desc.Digest)
	}
	if log := p.sidecar.output(); !strings.Contains(log, `"path":"/token"`) {
		t.Errorf("no request to /token in the sidecar log")
	}
}

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

// ociLink returns the target of a Link header with rel="next", "" without one.
func ociLink(t *testing.T, h http.Header) string {
	t.Helper()
	l := h.Get("Link")
	if l == "" {
		return ""
	}
	m := regexp.MustCompile(`^<([^>]+)>;\s*rel="next"$`).FindStringSubmatch(l)
	if m == nil {
		t.Fatalf("Link header %q is not <url>; rel=\"next\"", l)
	}
	return m[1]
}

// ociPage is one page of a catalog or tag list.
type ociPage struct {
	items []string
	raw   string // the list's JSON as sent ("[]", "null", …)
	next  string // the Link target
}

func (a *ociAPI) page(cred ociCred, path, field string) ociPage {
	a.t.Helper()
	resp, body := a.expect(http.StatusOK, cred, "GET", path, nil)
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(body, &raw); err != nil {
		a.t.Fatalf("GET %s: %v\n%s", path, err, body)
	}
	pg := ociPage{raw: string(raw[field]), next: ociLink(a.t, resp.Header)}
	if err := json.Unmarshal(raw[field], &pg.items); err != nil {
		a.t.Fatalf("GET %s: %s: %v\n%s", path, field, err, body)
	}
	return pg
}

// walk follows Link headers from path and returns everything listed, and
// fails when a page holds more than n entries or a page repeats.
func (a *ociAPI) walk(cred ociCred, path, field string, n int) []string {
	a.t.Helper()
	var all []string
	seen := map[string]bool{}
	for pages := 0; path != ""; pages++ {
		if seen[path] || pages > 50 {
			a.t.Fatalf("pagination loops at %s", path)
		}
		seen[path] = true
		pg := a.page(cred, path, field)
		if len(pg.items) > n {
			a.t.Errorf("GET %s: %d entries, more than n=%d", path, len(pg.items), n)
		}
		if pg.next != "" && len(pg.items) < n {
			a.t.Errorf("GET %s: %d entries with a Link header: the spec allows fewer than n only at the end", path, len(pg.items))
		}
		if pg.next != "" {
			u, err := url.Parse(pg.next)
			if err != nil || u.Query().Get("n") != strconv.Itoa(n) || (len(pg.items) > 0 && u.Query().Get("last") != pg.items[len(pg.items)-1]) {
				a.t.Errorf("GET %s: Link %q: want n=%d and last=<the page's last entry> (%v)", path, pg.next, n, err)
			}
		}
		all = append(all, pg.items...)
		path = pg.next
	}
	return all
}

// TestOCIPagination: catalog and tag lists through the sidecar, with n,
// last and Link headers as the distribution spec describes, and empty
// repositories.
func TestOCIPagination(t *testing.T) {
	p := startPair(t)
	admin, alice := ociUsers(t, p)
	a := ociNewAPI(t, p.host)

	tags := []string{"1.0", "latest", "v1", "v2", "v3"} // lexical (ASCII) order
	first := a.pushImage(admin, "pag/r1", tags[0], "r1")
	for _, tag := range tags[1:] {
		a.mustPutManifest(admin, "pag/r1", tag, first.m)
	}
	for _, r := range []string{"pag/r2", "pag/r3", "pag/r4", "pag/r5"} {
		a.pushImage(admin, r, "latest", r)
	}
	a.pushImage(admin, "pag/digest-only", "", "digest only")
	a.pushImage(admin, "pag/untagged", "gone", "untagged")
	a.expect(http.StatusAccepted, admin, "DELETE", "/v2/pag/untagged/manifests/gone", nil)
	repos := []string{"pag/digest-only", "pag/r1", "pag/r2", "pag/r3", "pag/r4", "pag/r5", "pag/untagged"}

	t.Run("catalog", func(t *testing.T) {
		a := *a
		a.t = t
		pg := a.page(alice, "/v2/_catalog?n=2", "repositories")
		if !reflect.DeepEqual(pg.items, repos[:2]) {
			t.Errorf("first page %v, want %v", pg.items, repos[:2])
		}
		if want := "/v2/_catalog?last=" + url.QueryEscape(repos[1]) + "&n=2"; pg.next != want {
			t.Errorf("first Link %q, want %q", pg.next, want)
		}
		if got := a.walk(alice, "/v2/_catalog?n=2", "repositories", 2); !reflect.DeepEqual(got, repos) {
			t.Errorf("catalog by pages of 2: %v, want %v", got, repos)
		}
		if got := a.walk(alice, "/v2/_catalog?n=3", "repositories", 3); !reflect.DeepEqual(got, repos) {
			t.Errorf("catalog by pages of 3: %v, want %v", got, repos)
		}
		if pg := a.page(alice, "/v2/_catalog", "repositories"); !reflect.DeepEqual(pg.items, repos) || pg.next != "" {
			t.Errorf("catalog without n: %v, Link %q", pg.items, pg.next)
		}
		// last is exclusive: the list starts after it.
		if pg := a.page(alice, "/v2/_catalog?last=pag/r3", "repositories"); !reflect.DeepEqual(pg.items, repos[4:]) || pg.next != "" {
			t.Errorf("catalog last=pag/r3: %v, Link %q, want %v", pg.items, pg.next, repos[4:])
		}
		if pg := a.page(alice, "/v2/_catalog?n=2&last=pag/r3", "repositories"); !reflect.DeepEqual(pg.items, repos[4:6]) {
			t.Errorf("catalog n=2 last=pag/r3: %v, want %v", pg.items, repos[4:6])
		}
		if pg := a.page(alice, "/v2/_catalog?n=0", "repositories"); len(pg.items) != 0 || pg.raw != "[]" || pg.next != "" {
			t.Errorf("catalog n=0: %s, Link %q; want [] without Link", pg.raw, pg.next)
		}
		a.expect(http.StatusUnauthorized, ociCred{}, "GET", "/v2/_catalog?n=2", nil)
		if _, body := a.expect(http.StatusBadRequest, alice, "GET", "/v2/_catalog?n=-1", nil); !reflect.DeepEqual(ociErrorCodes(body), []string{"PAGINATION_NUMBER_INVALID"}) {
			t.Errorf("catalog n=-1: %s", body)
		}
	})

	t.Run("tags", func(t *testing.T) {
		a := *a
		a.t = t
		const path = "/v2/pag/r1/tags/list"
		pg := a.page(alice, path+"?n=2", "tags")
		if !reflect.DeepEqual(pg.items, tags[:2]) {
			t.Errorf("first page %v, want %v", pg.items, tags[:2])
		}
		if want := path + "?last=" + tags[1] + "&n=2"; pg.next != want {
			t.Errorf("first Link %q, want %q", pg.next, want)
		}
		for _, n := range []int{1, 2, 3, 4} {
			if got := a.walk(alice, path+"?n="+strconv.Itoa(n), "tags", n); !reflect.DeepEqual(got, tags) {
				t.Errorf("tags by pages of %d: %v, want %v", n, got, tags)
			}
		}
		if pg := a.page(alice, path, "tags"); !reflect.DeepEqual(pg.items, tags) || pg.next != "" {
			t.Errorf("tags without n: %v, Link %q", pg.items, pg.next)
		}
		if pg := a.page(alice, path+"?n=10", "tags"); !reflect.DeepEqual(pg.items, tags) || pg.next != "" {
			t.Errorf("tags n=10: %v, Link %q", pg.items, pg.next)
		}
		// last without n (n is optional with last), and with n.
		if pg := a.page(alice, path+"?last=latest", "tags"); !reflect.DeepEqual(pg.items, tags[2:]) || pg.next != "" {
			t.Errorf("tags last=latest: %v, Link %q, want %v", pg.items, pg.next, tags[2:])
		}
		if pg := a.page(alice, path+"?n=2&last=1.0", "tags"); !reflect.DeepEqual(pg.items, tags[1:3]) {
			t.Errorf("tags n=2 last=1.0: %v, want %v", pg.items, tags[1:3])
		}
		// last need not be an existing tag: the list starts after it.
		if pg := a.page(alice, path+"?last=u", "tags"); !reflect.DeepEqual(pg.items, tags[2:]) {
			t.Errorf("tags last=u: %v, want %v", pg.items, tags[2:])
		}
		if pg := a.page(alice, path+"?last=v3", "tags"); len(pg.items) != 0 || pg.next != "" {
			t.Errorf("tags after the last one: %v, Link %q", pg.items, pg.next)
		}
		// "When n is zero, this endpoint MUST return an empty list, and
		// MUST NOT include a Link header."
		if pg := a.page(alice, path+"?n=0", "tags"); pg.raw != "[]" || pg.next != "" {
			t.Errorf("tags n=0: %s, Link %q; want [] without Link", pg.raw, pg.next)
		}
		a.expect(http.StatusUnauthorized, ociCred{}, "GET", path+"?n=2", nil)
	})

	// "Assuming a repository is found, this request MUST return a 200 OK
	// response code. The list of tags MAY be empty if there are no tags on
	// the repository." The format is a JSON list: [] rather than null.
	for _, repo := range []string{"pag/untagged", "pag/digest-only"} {
		t.Run("empty "+repo, func(t *testing.T) {
			a := *a
			a.t = t
			resp, body := a.do(alice, "GET", "/v2/"+repo+"/tags/list", nil)
			t.Logf("GET /v2/%s/tags/list: %s %s", repo, resp.Status, bytes.TrimSpace(body))
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("tags of a repository without tags (listed in the catalog): %s, want 200\n%s", resp.Status, body)
			}
			var raw map[string]json.RawMessage
			if err := json.Unmarshal(body, &raw); err != nil {
				t.Fatal(err)
			}
			if string(raw["tags"]) != "[]" || string(raw["name"]) != strconv.Quote(repo) {
				t.Errorf("tags of a repository without tags: %s, want name %q and tags []", body, repo)
			}
			if pg := a.page(alice, "/v2/"+repo+"/tags/list?n=2", "tags"); len(pg.items) != 0 || pg.next != "" {
				t.Errorf("n=2: %v, Link %q", pg.items, pg.next)
			}
		})
	}
	// A repository that does not exist at all: 404 NAME_UNKNOWN.
	if _, body := a.expect(http.StatusNotFound, alice, "GET", "/v2/pag/nothing/tags/list", nil); !reflect.DeepEqual(ociErrorCodes(body), []string{"NAME_UNKNOWN"}) {
		t.Errorf("tags of a missing repository: %s", body)
	}
}
