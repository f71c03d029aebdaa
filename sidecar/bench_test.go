package sidecar

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/mreg-dev/mreg/internal/users"
)

// benchUser has a production-cost (12) hash, so the uncached case shows
// what bcrypt per request would cost.
const (
	benchUser     = "bench"
	benchPassword = "bench-password"
)

// BenchmarkManifestHEAD compares an authenticated, proxied manifest HEAD
// (credential cached and uncached) with the same HEAD sent straight to the
// registry, all over real loopback sockets.
func BenchmarkManifestHEAD(b *testing.B) {
	s := newStack(b, withAnonymousRead)
	hash, err := users.HashPassword([]byte(benchPassword), users.DefaultCost)
	if err != nil {
		b.Fatal(err)
	}
	if _, err := users.Put(context.Background(), filepath.Join(s.authDir, users.FileName), benchUser, hash, false); err != nil {
		b.Fatal(err)
	}
	ref, err := name.ParseReference(strings.TrimPrefix(s.registryURL, "http://")+"/team/app:v1", name.Insecure)
	if err != nil {
		b.Fatal(err)
	}
	img, _ := random.Image(1024, 1)
	if err := remote.Write(ref, img, remote.WithAuthFromKeychain(nil)); err != nil {
		b.Fatal(err)
	}
	path := "/v2/team/app/manifests/v1"
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	token := benchToken(b, s.sidecarURL, "repository:team/app:pull")
	bearer := false
	head := func(b *testing.B, url string, auth bool) {
		req, _ := http.NewRequest(http.MethodHead, url, nil)
		req.Header.Set("Accept", "application/vnd.docker.distribution.manifest.v2+json")
		switch {
		case auth && bearer:
			req.Header.Set("Authorization", "Bearer "+token)
		case auth:
			req.SetBasicAuth(benchUser, benchPassword)
		}
		resp, err := client.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			b.Fatalf("HEAD %s: %d", url, resp.StatusCode)
		}
	}
	b.Run("direct", func(b *testing.B) {
		for b.Loop() {
			head(b, s.registryURL+path, false)
		}
	})
	b.Run("sidecar-anonymous", func(b *testing.B) {
		for b.Loop() {
			head(b, s.sidecarURL+path, false)
		}
	})
	b.Run("sidecar-basic-cached", func(b *testing.B) {
		head(b, s.sidecarURL+path, true) // warm the cache
		b.ResetTimer()
		for b.Loop() {
			head(b, s.sidecarURL+path, true)
		}
	})
	b.Run("sidecar-basic-uncached", func(b *testing.B) {
		a := s.server.auth
		for b.Loop() {
			a.mu.Lock()
			clear(a.cache)
			a.mu.Unlock()
			head(b, s.sidecarURL+path, true)
		}
	})
	b.Run("sidecar-bearer", func(b *testing.B) {
		bearer = true
		defer func() { bearer = false }()
		for b.Loop() {
			head(b, s.sidecarURL+path, true)
		}
	})
	b.Run("parallel/sidecar-bearer", func(b *testing.B) {
		bearer = true
		defer func() { bearer = false }()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				head(b, s.sidecarURL+path, true)
			}
		})
	})
	b.Run("parallel/direct", func(b *testing.B) {
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				head(b, s.registryURL+path, false)
			}
		})
	})
	b.Run("parallel/sidecar-basic-cached", func(b *testing.B) {
		head(b, s.sidecarURL+path, true)
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				head(b, s.sidecarURL+path, true)
			}
		})
	})
}

// BenchmarkAuthenticateCached is the hot path of every authenticated
// request: store stat, HMAC of the credential, cache lookup.
func BenchmarkAuthenticateCached(b *testing.B) {
	dir := b.TempDir()
	addUser(b, dir, userName, userPassword, false)
	w, err := users.NewWatcher(context.Background(), filepath.Join(dir, users.FileName))
	if err != nil {
		b.Fatal(err)
	}
	a, err := NewAuthenticator(w, AuthenticatorOptions{DummyCost: testCost})
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	if _, err := a.Basic(ctx, userName, userPassword); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := a.Basic(ctx, userName, userPassword); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkAuthorize is the authorization decision of a request: route
// parsing and role × scope.
func BenchmarkAuthorize(b *testing.B) {
	s := &Server{}
	id := Identity{Name: "alice"}
	methods := []string{"GET", "HEAD", "PUT", "DELETE"}
	b.ReportAllocs()
	n := 0
	for b.Loop() {
		need, _ := requiredAccess(methods[n%len(methods)], "/v2/team/app/manifests/v1")
		if s.decide(id, need) {
			n++
		}
		n++
	}
}

// benchToken fetches an access token for scope with the bench user.
func benchToken(b *testing.B, base, scope string) string {
	b.Helper()
	req, _ := http.NewRequest(http.MethodGet, base+"/token?service=mreg&scope="+scope, nil)
	req.SetBasicAuth(benchUser, benchPassword)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		b.Fatal(err)
	}
	defer resp.Body.Close()
	var tr struct {
		Token string `json:"token"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&tr); err != nil || tr.Token == "" {
		b.Fatalf("token: %v %d", err, resp.StatusCode)
	}
	return tr.Token
}

// BenchmarkTokenVerify is the signature check of a token seen for the
// first time (cold) and the cached verdict for a token seen before (warm).
func BenchmarkTokenVerify(b *testing.B) {
	toks, err := newTokens(b.TempDir(), TokenOptions{})
	if err != nil {
		b.Fatal(err)
	}
	raw, _, err := toks.issue("alice", []Scope{{Type: typeRepository, Name: "team/app", Actions: []string{actionPull}}})
	if err != nil {
		b.Fatal(err)
	}
	b.Run("cold", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			toks.mu.Lock()
			clear(toks.verified)
			toks.mu.Unlock()
			if _, err := toks.verify(raw, kindAccess); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("warm", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := toks.verify(raw, kindAccess); err != nil {
				b.Fatal(err)
			}
		}
	})
}
