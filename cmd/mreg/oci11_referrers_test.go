package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/opencontainers/go-digest"
)

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
