package mirror

import (
	"net/http/httptest"
	"testing"
)

func TestRoute(t *testing.T) {
	m := &Mirrors{byNS: map[string]*mirror{
		"docker.io": {up: Upstream{Namespace: "docker.io"}},
		"ghcr.io":   {up: Upstream{Namespace: "ghcr.io"}},
	}}
	tests := []struct {
		url, ns, path string
	}{
		{"/v2/docker.io/alpine/manifests/3", "docker.io", "/v2/library/alpine/manifests/3"},
		{"/v2/docker.io/library/alpine/blobs/sha256:x", "docker.io", "/v2/library/alpine/blobs/sha256:x"},
		{"/v2/docker.io/bitnami/redis/tags/list", "docker.io", "/v2/bitnami/redis/tags/list"},
		{"/v2/alpine/manifests/3?ns=docker.io", "docker.io", "/v2/library/alpine/manifests/3"},
		{"/v2/org/app/manifests/1?ns=ghcr.io", "ghcr.io", "/v2/org/app/manifests/1"},
		{"/v2/GHCR.io/org/app/manifests/1", "ghcr.io", "/v2/org/app/manifests/1"},
		{"/v2/ghcr.io/org/app/manifests/1", "ghcr.io", "/v2/org/app/manifests/1"},
		{"/v2/team/app/manifests/1", "", ""},
		{"/v2/team/app/manifests/1?ns=quay.io", "", ""},
		{"/v2/_catalog", "", ""},
		{"/v2/", "", ""},
	}
	for _, tt := range tests {
		mr, p, ok := m.route(httptest.NewRequest("GET", tt.url, nil))
		switch {
		case tt.ns == "" && ok:
			t.Errorf("%s routed to %s", tt.url, mr.up.Namespace)
		case tt.ns != "" && (!ok || mr.up.Namespace != tt.ns || p != tt.path):
			t.Errorf("%s: ok=%v path=%q, want %s %q", tt.url, ok, p, tt.ns, tt.path)
		}
	}
}

func TestTagOf(t *testing.T) {
	for p, want := range map[string]string{
		"/v2/library/alpine/manifests/3":        "library/alpine:3",
		"/v2/library/alpine/manifests/sha256:x": "",
		"/v2/library/alpine/blobs/sha256:x":     "",
	} {
		got, ok := tagOf(p)
		if got != want || ok != (want != "") {
			t.Errorf("tagOf(%q) = %q %v, want %q", p, got, ok, want)
		}
	}
}
