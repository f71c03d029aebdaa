package registry

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"regexp"
	"sort"
	"strings"
	"sync"

	"github.com/distribution/distribution/v3"
	"github.com/distribution/distribution/v3/registry/storage"
	"github.com/distribution/distribution/v3/registry/storage/driver"
	"github.com/distribution/reference"
	"github.com/opencontainers/go-digest"

	"github.com/mreg-dev/mreg/internal/regapi"
)

// The OCI 1.1 gaps of Distribution v3 (referrers API, OCI-Subject, tag
// lists of digest-only repositories, 400 for bad layer URLs), closed in front
// of it inside the registry process (the sidecar never touches image data).
//
// Design: the referrer relationship is not kept anywhere. A manifest's
// subject is part of its immutable content, so the list is derived from
// storage on each request: the repository's manifest revisions, each
// parsed once and remembered by digest. With no second write there is
// nothing to lose or to get out of step: a crash between "the registry
// stored the manifest" and "an index was updated" cannot happen,
// concurrent pushes to one subject cannot race, a deleted referrer (its
// revision link removed) disappears at once, and GC sees the same truth
// (it keeps untagged referrers while their subject is live, see gc/).

const (
	mediaTypeOCIIndex = "application/vnd.oci.image.index.v1+json"
	// maxManifest is Distribution's own limit for manifest bodies.
	maxManifest = 4 << 20
	// maxReferrerCache bounds the parsed-manifest cache.
	maxReferrerCache = 100_000
)

var (
	referrersRe = regexp.MustCompile(`^/v2/(.+)/referrers/([^/]+)$`)
	manifestRe  = regexp.MustCompile(`^/v2/(.+)/manifests/([^/]+)$`)
	tagsRe      = regexp.MustCompile(`^/v2/(.+)/tags/list$`)
)

// descriptor is an OCI descriptor as the referrers index lists it.
type descriptor struct {
	MediaType    string            `json:"mediaType"`
	Digest       digest.Digest     `json:"digest"`
	Size         int64             `json:"size"`
	ArtifactType string            `json:"artifactType,omitempty"`
	Annotations  map[string]string `json:"annotations,omitempty"`
}

// manifestInfo is what a manifest says about itself, for the referrers list.
type manifestInfo struct {
	subject digest.Digest
	desc    descriptor
}

// ociFront serves GET /v2/<name>/referrers/<digest> and adds OCI-Subject
// to manifest PUT responses; everything else goes to next.
type ociFront struct {
	next http.Handler
	ns   distribution.Namespace
	log  *slog.Logger
	// allowURL, denyURL are the layer URL rules of the configuration
	// (validation.manifests.urls), checked here so that a bad URL is a
	// 400 MANIFEST_INVALID: Distribution answers 500 UNKNOWN, which
	// clients retry.
	allowURL, denyURL *regexp.Regexp

	mu    sync.Mutex
	cache map[digest.Digest]manifestInfo
}

func newOCIFront(ctx context.Context, d driver.StorageDriver, next http.Handler, log *slog.Logger, allow, deny []string) (*ociFront, error) {
	ns, err := storage.NewRegistry(ctx, d)
	if err != nil {
		return nil, fmt.Errorf("referrers storage: %w", err)
	}
	rf := &ociFront{next: next, ns: ns, log: log, cache: map[digest.Digest]manifestInfo{}}
	if len(allow) > 0 {
		if rf.allowURL, err = regexp.Compile(strings.Join(allow, "|")); err != nil {
			return nil, fmt.Errorf("%w: validation.manifests.urls.allow: %v", ErrConfig, err)
		}
	}
	if len(deny) > 0 {
		if rf.denyURL, err = regexp.Compile(strings.Join(deny, "|")); err != nil {
			return nil, fmt.Errorf("%w: validation.manifests.urls.deny: %v", ErrConfig, err)
		}
	}
	return rf, nil
}

func (rf *ociFront) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method == http.MethodGet || r.Method == http.MethodHead {
		if m := referrersRe.FindStringSubmatch(r.URL.Path); m != nil {
			rf.serveList(w, r, m[1], m[2])
			return
		}
	}
	if r.Method == http.MethodPut {
		if m := manifestRe.FindStringSubmatch(r.URL.Path); m != nil {
			rf.putManifest(w, r)
			return
		}
	}
	if r.Method == http.MethodGet || r.Method == http.MethodHead {
		if m := tagsRe.FindStringSubmatch(r.URL.Path); m != nil {
			rf.listTags(w, r, m[1])
			return
		}
	}
	rf.next.ServeHTTP(w, r)
}

// listTags passes tag listing through, except that a repository holding
// manifests but no tag (pushed by digest only) answers 200 with an empty
// list, as the spec requires, where Distribution answers 404.
func (rf *ociFront) listTags(w http.ResponseWriter, r *http.Request, name string) {
	nw := &regapi.Holder{ResponseWriter: w, Hold: func(status int) bool { return status == http.StatusNotFound }}
	rf.next.ServeHTTP(nw, r)
	if !nw.Held {
		return
	}
	if named, err := reference.WithName(name); err == nil && rf.hasManifests(r.Context(), named) {
		body, _ := json.Marshal(map[string]any{"name": name, "tags": []string{}})
		nw.Replace()
		h := w.Header()
		h.Set("Docker-Distribution-API-Version", "registry/2.0")
		h.Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusOK)
		if r.Method == http.MethodGet {
			_, _ = w.Write(body)
		}
		return
	}
	nw.Release()
}

func (rf *ociFront) hasManifests(ctx context.Context, name reference.Named) bool {
	repo, err := rf.ns.Repository(ctx, name)
	if err != nil {
		return false
	}
	ms, err := repo.Manifests(ctx)
	if err != nil {
		return false
	}
	me, ok := ms.(distribution.ManifestEnumerator)
	if !ok {
		return false
	}
	found := false
	errStop := errors.New("stop")
	_ = me.Enumerate(ctx, func(digest.Digest) error { found = true; return errStop })
	return found
}

// putManifest passes a manifest PUT through and, when the manifest has a
// subject, answers with OCI-Subject so clients skip the tag-schema
// fallback. Manifests are small (Distribution refuses more than 4 MiB).
func (rf *ociFront) putManifest(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(io.LimitReader(r.Body, maxManifest+1))
	if err != nil {
		regapi.WriteError(w, r, http.StatusBadRequest, "MANIFEST_INVALID", "could not read manifest", nil)
		return
	}
	r.Body = io.NopCloser(bytes.NewReader(body))
	var m struct {
		Subject *struct {
			Digest digest.Digest `json:"digest"`
		} `json:"subject"`
		Layers []struct {
			URLs []string `json:"urls"`
		} `json:"layers"`
	}
	_ = json.Unmarshal(body, &m)
	for _, l := range m.Layers {
		for _, u := range l.URLs {
			if !rf.validURL(u) {
				regapi.WriteError(w, r, http.StatusBadRequest, "MANIFEST_INVALID", "manifest invalid", map[string]string{"reason": "invalid URL on layer", "url": u})
				return
			}
		}
	}
	if m.Subject == nil || m.Subject.Digest.Validate() != nil {
		rf.next.ServeHTTP(w, r)
		return
	}
	rf.next.ServeHTTP(&subjectWriter{ResponseWriter: w, subject: m.Subject.Digest.String()}, r)
}

// subjectWriter adds OCI-Subject to a successful (201) response.
type subjectWriter struct {
	http.ResponseWriter
	subject string
	wrote   bool
}

func (s *subjectWriter) WriteHeader(code int) {
	if !s.wrote && code == http.StatusCreated {
		s.Header().Set("OCI-Subject", s.subject)
	}
	s.wrote = true
	s.ResponseWriter.WriteHeader(code)
}

func (s *subjectWriter) Write(b []byte) (int, error) {
	if !s.wrote {
		s.WriteHeader(http.StatusOK)
	}
	return s.ResponseWriter.Write(b)
}

func (s *subjectWriter) Unwrap() http.ResponseWriter { return s.ResponseWriter }

func (rf *ociFront) serveList(w http.ResponseWriter, r *http.Request, name, dgst string) {
	subject, err := digest.Parse(dgst)
	if err != nil {
		regapi.WriteError(w, r, http.StatusBadRequest, "DIGEST_INVALID", "invalid digest", nil)
		return
	}
	named, err := reference.WithName(name)
	if err != nil {
		regapi.WriteError(w, r, http.StatusBadRequest, "NAME_INVALID", "invalid repository name", nil)
		return
	}
	list, err := rf.list(r.Context(), named, subject)
	if err != nil {
		rf.log.ErrorContext(r.Context(), "referrers", "repository", name, "subject", subject.String(), "err", err)
		regapi.WriteError(w, r, http.StatusInternalServerError, "UNKNOWN", "could not list referrers", nil)
		return
	}
	if at := r.URL.Query().Get("artifactType"); at != "" {
		kept := list[:0]
		for _, d := range list {
			if d.ArtifactType == at {
				kept = append(kept, d)
			}
		}
		list = kept
		w.Header().Set("OCI-Filters-Applied", "artifactType")
	}
	body, _ := json.Marshal(struct {
		SchemaVersion int          `json:"schemaVersion"`
		MediaType     string       `json:"mediaType"`
		Manifests     []descriptor `json:"manifests"`
	}{2, mediaTypeOCIIndex, list})
	w.Header().Set("Content-Type", mediaTypeOCIIndex)
	w.Header().Set("Docker-Distribution-API-Version", "registry/2.0")
	w.Header().Set("Content-Length", fmt.Sprint(len(body)))
	w.WriteHeader(http.StatusOK)
	if r.Method == http.MethodGet {
		_, _ = w.Write(body)
	}
}

// list returns the descriptors of the repository's manifests whose subject
// is subject, sorted by digest for a stable answer.
func (rf *ociFront) list(ctx context.Context, name reference.Named, subject digest.Digest) ([]descriptor, error) {
	out := []descriptor{}
	repo, err := rf.ns.Repository(ctx, name)
	if err != nil {
		return nil, err
	}
	ms, err := repo.Manifests(ctx)
	if err != nil {
		return nil, err
	}
	me, ok := ms.(distribution.ManifestEnumerator)
	if !ok {
		return nil, errors.New("manifest service cannot enumerate")
	}
	err = me.Enumerate(ctx, func(d digest.Digest) error {
		info, ok := rf.info(ctx, ms, d)
		if ok && info.subject == subject {
			out = append(out, info.desc)
		}
		return nil
	})
	var pnf driver.PathNotFoundError
	var unknown distribution.ErrRepositoryUnknown
	if err != nil && !errors.As(err, &pnf) && !errors.As(err, &unknown) {
		return nil, err
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Digest < out[j].Digest })
	return out, nil
}

// info parses manifest d once; manifests are immutable, so the result is
// cached by digest for good. ok is false for an unreadable manifest (e.g.
// a revision link whose blob GC removed).
func (rf *ociFront) info(ctx context.Context, ms distribution.ManifestService, d digest.Digest) (manifestInfo, bool) {
	rf.mu.Lock()
	info, ok := rf.cache[d]
	rf.mu.Unlock()
	if ok {
		return info, true
	}
	m, err := ms.Get(ctx, d)
	if err != nil {
		return manifestInfo{}, false
	}
	mt, payload, err := m.Payload()
	if err != nil {
		return manifestInfo{}, false
	}
	var raw struct {
		MediaType    string            `json:"mediaType"`
		ArtifactType string            `json:"artifactType"`
		Annotations  map[string]string `json:"annotations"`
		Config       *struct {
			MediaType string `json:"mediaType"`
		} `json:"config"`
		Subject *struct {
			Digest digest.Digest `json:"digest"`
		} `json:"subject"`
	}
	if err := json.Unmarshal(payload, &raw); err != nil {
		return manifestInfo{}, false
	}
	if raw.MediaType != "" {
		mt = raw.MediaType
	}
	info = manifestInfo{desc: descriptor{MediaType: mt, Digest: d, Size: int64(len(payload)), Annotations: raw.Annotations}}
	info.desc.ArtifactType = raw.ArtifactType
	if info.desc.ArtifactType == "" && raw.Config != nil && !strings.HasPrefix(mt, "application/vnd.oci.image.index") {
		// Per the spec: an image manifest without artifactType is
		// listed with its config's media type.
		info.desc.ArtifactType = raw.Config.MediaType
	}
	if raw.Subject != nil {
		info.subject = raw.Subject.Digest
	}
	rf.mu.Lock()
	if len(rf.cache) >= maxReferrerCache {
		clear(rf.cache)
	}
	rf.cache[d] = info
	rf.mu.Unlock()
	return info, true
}

// validURL is Distribution's rule for layer URLs: http(s), no fragment,
// and the configured allow and deny patterns.
func (rf *ociFront) validURL(u string) bool {
	pu, err := url.Parse(u)
	if err != nil || (pu.Scheme != "http" && pu.Scheme != "https") || pu.Fragment != "" {
		return false
	}
	if rf.allowURL != nil && !rf.allowURL.MatchString(u) {
		return false
	}
	return rf.denyURL == nil || !rf.denyURL.MatchString(u)
}
