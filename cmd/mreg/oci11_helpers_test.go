package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"reflect"
	"sort"
	"strings"
	"testing"
	"time"

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
