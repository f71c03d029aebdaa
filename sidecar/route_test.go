package sidecar

import (
	"regexp"
	"strings"
	"testing"
)

// routeOracle is the regular expression splitRoute replaced (for speed);
// the fuzz test holds the two to the same answers.
var routeOracle = regexp.MustCompile(`^/v2/(.+)/(manifests/[^/]+|blobs/uploads/[^/]*|blobs/[^/]+|tags/list|referrers/[^/]+)$`)

func oracleSplit(path string) (name, kind, last string, ok bool) {
	m := routeOracle.FindStringSubmatch(path)
	if m == nil {
		return "", "", "", false
	}
	rest := m[2]
	switch {
	case strings.HasPrefix(rest, "manifests/"):
		return m[1], routeManifests, strings.TrimPrefix(rest, "manifests/"), true
	case strings.HasPrefix(rest, "blobs/uploads/"):
		return m[1], routeUploads, strings.TrimPrefix(rest, "blobs/uploads/"), true
	case strings.HasPrefix(rest, "blobs/"):
		return m[1], routeBlobs, strings.TrimPrefix(rest, "blobs/"), true
	case rest == "tags/list":
		return m[1], routeTags, "", true
	}
	return m[1], routeReferrers, strings.TrimPrefix(rest, "referrers/"), true
}

var routeSeeds = []string{
	"/v2/", "/v2/_catalog", "/v2/a/manifests/latest", "/v2/a/b/blobs/sha256:x", "/v2/a/blobs/uploads/",
	"/v2/a/blobs/uploads/uuid", "/v2/a/blobs/uploads", "/v2/a/tags/list", "/v2/a/referrers/sha256:x",
	"/v2/a/blobs/b/manifests/latest", "/v2/manifests/manifests/x", "/v2//manifests/x", "/v2/a/manifests/",
	"/v2/a/blobs/", "/v2/tags/list", "/v2/a/tags/list/", "/v2/a/blobs/uploads/blobs/uploads/",
	"/v3/a/manifests/x", "/v2/a/referrers/", "/v2/x/blobs/uploads//",
}

func TestSplitRouteMatchesOracle(t *testing.T) {
	for _, p := range routeSeeds {
		n1, k1, l1, ok1 := splitRoute(p)
		n2, k2, l2, ok2 := oracleSplit(p)
		if n1 != n2 || k1 != k2 || l1 != l2 || ok1 != ok2 {
			t.Errorf("%q: splitRoute = (%q %q %q %v), oracle = (%q %q %q %v)", p, n1, k1, l1, ok1, n2, k2, l2, ok2)
		}
	}
}

func FuzzSplitRoute(f *testing.F) {
	for _, p := range routeSeeds {
		f.Add(p)
	}
	f.Fuzz(func(t *testing.T, p string) {
		n1, k1, l1, ok1 := splitRoute(p)
		n2, k2, l2, ok2 := oracleSplit(p)
		if n1 != n2 || k1 != k2 || l1 != l2 || ok1 != ok2 {
			t.Fatalf("%q: splitRoute = (%q %q %q %v), oracle = (%q %q %q %v)", p, n1, k1, l1, ok1, n2, k2, l2, ok2)
		}
	})
}
