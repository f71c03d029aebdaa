package mirror

import (
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/mreg-dev/mreg/internal/regapi"
)

// Wrap routes mirrored namespaces to their caches and everything else to
// next (the hosted registry).
func (m *Mirrors) Wrap(next http.Handler) http.Handler {
	if len(m.byNS) == 0 {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mr, p, ok := m.route(r)
		if !ok {
			if m.def != nil && (r.Method == http.MethodGet || r.Method == http.MethodHead) && isRepoPath(r.URL.Path) {
				m.hostedOrDefault(w, r, next)
				return
			}
			next.ServeHTTP(w, r)
			return
		}
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			regapi.WriteError(w, r, http.StatusMethodNotAllowed, "UNSUPPORTED",
				"namespace "+mr.up.Namespace+" is a read-only mirror of "+mr.up.URL()+": pushes and deletes are refused", nil)
			return
		}
		m.serve(w, r, mr, p)
	})
}

// hostedOrDefault serves a read from the hosted registry and, when it has
// no such repository or content, from the default upstream's cache.
func (m *Mirrors) hostedOrDefault(w http.ResponseWriter, r *http.Request, next http.Handler) {
	nw := &regapi.Holder{ResponseWriter: w, Hold: func(status int) bool { return status == http.StatusNotFound }}
	next.ServeHTTP(nw, r)
	if !nw.Held {
		return
	}
	nw.Replace() // the hosted registry's 404 headers
	rest := strings.TrimPrefix(r.URL.Path, "/v2/")
	m.serve(w, r, m.def, "/v2/"+libraryRule(m.def, rest))
}

// isRepoPath reports whether path addresses a repository's content (not
// the base or the catalog).
func isRepoPath(path string) bool {
	rest, ok := strings.CutPrefix(path, "/v2/")
	return ok && rest != "" && rest != "_catalog" && strings.Contains(rest, "/")
}

// route finds the mirror of a request: /v2/<namespace>/<repo>/… or the
// containerd form /v2/<repo>/…?ns=<namespace>. p is the path the mirror's
// registry sees, with docker.io's library/ rule applied.
func (m *Mirrors) route(r *http.Request) (*mirror, string, bool) {
	rest, ok := strings.CutPrefix(r.URL.Path, "/v2/")
	if !ok || rest == "" || rest == "_catalog" {
		return nil, "", false
	}
	if ns := r.URL.Query().Get("ns"); ns != "" {
		if mr, ok := m.byNS[strings.ToLower(ns)]; ok {
			return mr, "/v2/" + libraryRule(mr, rest), true
		}
		// An unknown ns is the hosted registry.
		return nil, "", false
	}
	first, tail, ok := strings.Cut(rest, "/")
	if !ok {
		return nil, "", false
	}
	mr, ok := m.byNS[strings.ToLower(first)]
	if !ok {
		return nil, "", false
	}
	return mr, "/v2/" + libraryRule(mr, tail), true
}

// libraryRule maps Docker Hub's official images (a one-component name such
// as "alpine") to library/alpine.
func libraryRule(mr *mirror, rest string) string {
	if mr.up.Namespace != "docker.io" {
		return rest
	}
	for _, marker := range []string{"/manifests/", "/blobs/", "/tags/", "/referrers/"} {
		if i := strings.LastIndex(rest, marker); i > 0 {
			if !strings.Contains(rest[:i], "/") {
				return "library/" + rest
			}
			return rest
		}
	}
	return rest
}

// serve answers a read from the cache: tags resolved upstream recently are
// answered by digest from the cache; concurrent cold GETs of one object
// wait for the first, which fills the cache, instead of each fetching it
// upstream.
func (m *Mirrors) serve(w http.ResponseWriter, r *http.Request, mr *mirror, p string) {
	repoTag, isTag := tagOf(p)
	if isTag {
		if d, fresh := mr.freshTag(repoTag, m.now()); fresh {
			p = p[:strings.LastIndex(p, "/")+1] + d
			isTag = false
		}
	}
	r2 := r.Clone(r.Context())
	r2.URL.Path, r2.URL.RawPath = p, ""
	q := r2.URL.Query()
	q.Del("ns")
	r2.URL.RawQuery = q.Encode()
	r2.RequestURI = ""

	if r.Method == http.MethodGet {
		done, leader := m.flight.join(mr.up.Namespace + p)
		if !leader {
			select {
			case <-done:
			case <-r.Context().Done():
				return
			}
		} else {
			defer m.flight.leave(mr.up.Namespace+p, done)
		}
	}
	// A 5xx, or a 404 that may mean "not cached and the upstream is
	// down", is held back and decided on below.
	ew := &regapi.Holder{ResponseWriter: w, Hold: func(status int) bool { return status >= 500 || status == http.StatusNotFound }}
	start := m.now()
	mr.handler.ServeHTTP(ew, r2)
	if ew.Held && ew.Status == http.StatusNotFound && !m.upstreamFailedSince(mr, start) {
		ew.Release() // a real "not found" from a reachable upstream
		return
	}
	if ew.Held {
		m.log.WarnContext(r.Context(), "mirror: upstream failed and the content is not cached",
			"namespace", mr.up.Namespace, "upstream", mr.up.URL(), "path", p, "status", ew.Status, "upstream_error", strings.TrimSpace(ew.Body.String()))
		ew.Replace()
		regapi.WriteError(w, r, http.StatusServiceUnavailable, "UNAVAILABLE",
			"upstream "+mr.up.Namespace+" ("+mr.up.URL()+") is unreachable or failing, and this content is not cached", nil)
		return
	}
	if isTag && ew.Status == http.StatusOK {
		if d := w.Header().Get("Docker-Content-Digest"); d != "" {
			mr.rememberTag(repoTag, d, m.now())
		}
	}
}

// upstreamFailedSince reports whether a request to mr's upstream failed
// at or after t.
func (m *Mirrors) upstreamFailedSince(mr *mirror, t time.Time) bool {
	ht, ok := http.DefaultTransport.(*hostTransport)
	return ok && !ht.lastFailure(mr.up.Host).Before(t)
}

// tagOf returns "repo:tag" for a manifest path with a tag reference.
func tagOf(p string) (string, bool) {
	i := strings.LastIndex(p, "/manifests/")
	if i < 0 {
		return "", false
	}
	ref := p[i+len("/manifests/"):]
	if ref == "" || strings.Contains(ref, ":") || strings.Contains(ref, "/") {
		return "", false
	}
	return strings.TrimPrefix(p[:i], "/v2/") + ":" + ref, true
}

// freshTag returns the digest a tag resolved to upstream, when that was
// less than ManifestRevalidate ago.
func (mr *mirror) freshTag(repoTag string, now time.Time) (string, bool) {
	mr.mu.Lock()
	defer mr.mu.Unlock()
	e, ok := mr.tags[repoTag]
	if !ok || now.Sub(e.at) >= mr.up.ManifestRevalidate.Duration {
		return "", false
	}
	return e.digest, true
}

// maxTags bounds the remembered tag resolutions per mirror.
const maxTags = 50_000

func (mr *mirror) rememberTag(repoTag, digest string, now time.Time) {
	mr.mu.Lock()
	defer mr.mu.Unlock()
	if len(mr.tags) >= maxTags {
		clear(mr.tags)
	}
	mr.tags[repoTag] = tagEntry{digest: digest, at: now}
}

// flights is the set of cold GETs in progress, by key.
type flights struct {
	mu sync.Mutex
	m  map[string]chan struct{}
}

// join returns the channel closed when the key's first request is done,
// and whether the caller is that first request.
func (f *flights) join(key string) (chan struct{}, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.m == nil {
		f.m = map[string]chan struct{}{}
	}
	if ch, ok := f.m[key]; ok {
		return ch, false
	}
	ch := make(chan struct{})
	f.m[key] = ch
	return ch, true
}

func (f *flights) leave(key string, ch chan struct{}) {
	f.mu.Lock()
	delete(f.m, key)
	f.mu.Unlock()
	close(ch)
}
