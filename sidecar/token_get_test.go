package sidecar

import (
	"bytes"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"
)

func TestTokenGETGrants(t *testing.T) {
	plain := newStack(t)
	anonRead := newStack(t, withAnonymousRead)
	type role struct {
		name string
		s    *stack
		c    cred
		sub  string
	}
	roles := []role{
		{"anonymous", plain, credAnon, ""},
		{"anonymous+anonread", anonRead, credAnon, ""},
		{"user", plain, credUser, userName},
		{"user+anonread", anonRead, credUser, userName},
		{"admin", plain, credAdmin, adminName},
	}
	pullA, pullB := "repository:team/a:pull", "repository:b:pull"
	tests := []struct {
		name   string
		scopes []string
		want   map[string][]string
	}{
		{"no scope", nil, map[string][]string{}},
		{"pull", []string{pullA}, map[string][]string{
			"anonymous+anonread": {pullA}, "user": {pullA}, "user+anonread": {pullA}, "admin": {pullA}}},
		{"pull,push", []string{"repository:team/a:pull,push"}, map[string][]string{
			"anonymous+anonread": {pullA}, "user": {pullA}, "user+anonread": {pullA}, "admin": {"repository:team/a:pull,push"}}},
		{"push", []string{"repository:team/a:push"}, map[string][]string{
			"admin": {"repository:team/a:push"}}},
		{"delete", []string{"repository:team/a:delete"}, map[string][]string{
			"admin": {"repository:team/a:delete"}}},
		{"all", []string{"repository:team/a:*"}, map[string][]string{
			"admin": {"repository:team/a:*"}}},
		{"catalog", []string{"registry:catalog:*"}, map[string][]string{
			"anonymous+anonread": {"registry:catalog:*"}, "user": {"registry:catalog:*"},
			"user+anonread": {"registry:catalog:*"}, "admin": {"registry:catalog:*"}}},
		{"unknown type", []string{"foo:bar:baz"}, map[string][]string{}},
		{"port in name", []string{"repository:localhost:5000/x:pull"}, map[string][]string{
			"anonymous+anonread": {"repository:localhost:5000/x:pull"}, "user": {"repository:localhost:5000/x:pull"},
			"user+anonread": {"repository:localhost:5000/x:pull"}, "admin": {"repository:localhost:5000/x:pull"}}},
		{"several params", []string{"repository:team/a:pull,push", "foo:bar:baz", pullB, "registry:catalog:*", "repository:c:delete"},
			map[string][]string{
				"anonymous+anonread": {pullA, pullB, "registry:catalog:*"},
				"user":               {pullA, pullB, "registry:catalog:*"},
				"user+anonread":      {pullA, pullB, "registry:catalog:*"},
				"admin":              {"repository:team/a:pull,push", pullB, "registry:catalog:*", "repository:c:delete"}}},
		{"space separated", []string{pullA + " repository:b:pull,push"}, map[string][]string{
			"anonymous+anonread": {pullA, pullB}, "user": {pullA, pullB}, "user+anonread": {pullA, pullB},
			"admin": {pullA, "repository:b:pull,push"}}},
		{"malformed ignored", []string{"repository", "repository::pull", pullA}, map[string][]string{
			"anonymous+anonread": {pullA}, "user": {pullA}, "user+anonread": {pullA}, "admin": {pullA}}},
	}
	for _, tt := range tests {
		for _, r := range roles {
			t.Run(tt.name+"/"+r.name, func(t *testing.T) {
				q := tkQuery("service", "mreg", "client_id", "mreg-test")
				if r.c.user != "" {
					q.Set("account", r.c.user)
				}
				for _, sc := range tt.scopes {
					q.Add("scope", sc)
				}
				b := tkDecodeTokenBody(t, tkGet(t, r.s.sidecarURL, r.c, q))
				if b.Token == nil || *b.Token != b.AccessToken {
					t.Errorf("token = %v, want access_token %q", b.Token, b.AccessToken)
				}
				if b.RefreshToken != "" {
					t.Errorf("refresh_token without offline_token: %q", b.RefreshToken)
				}
				want := tt.want[r.name]
				j := tkCheckAccessJWT(t, b.AccessToken, r.sub, want)
				if iat := time.Unix(j.claims.Iat, 0).UTC().Format(time.RFC3339); b.IssuedAt != iat {
					t.Errorf("issued_at = %q, iat claim = %s", b.IssuedAt, iat)
				}
				if d := time.Since(time.Unix(j.claims.Iat, 0)); d < -time.Minute || d > time.Minute {
					t.Errorf("iat is %v from now", d)
				}
				if b.Scope != strings.Join(want, " ") {
					t.Errorf("scope = %q, want %q", b.Scope, strings.Join(want, " "))
				}
			})
		}
	}
}

func TestTokenGETOfflineToken(t *testing.T) {
	s := newStack(t)
	b := tkDecodeTokenBody(t, tkGet(t, s.sidecarURL, credUser, tkQuery("service", "mreg", "offline_token", "true", "scope", "repository:a:pull")))
	if b.RefreshToken == "" {
		t.Fatal("offline_token=true: no refresh_token")
	}
	j := tkDecodeJWT(t, b.RefreshToken)
	if j.claims.Kind != "refresh" || j.claims.Sub != userName || j.claims.PwFP == "" {
		t.Fatalf("refresh token claims = %+v", j.claims)
	}
	// Anonymous clients get no refresh token.
	b = tkDecodeTokenBody(t, tkGet(t, s.sidecarURL, credAnon, tkQuery("service", "mreg", "offline_token", "true")))
	if b.RefreshToken != "" {
		t.Fatal("anonymous client got a refresh token")
	}
}

func TestTokenGETErrors(t *testing.T) {
	s := newStack(t)
	tests := []struct {
		name   string
		c      cred
		q      url.Values
		status int
		code   string
	}{
		{"bad service", credUser, tkQuery("service", "other", "scope", "repository:a:pull"), 400, codeUnsupported},
		{"bad service anonymous", credAnon, tkQuery("service", "other"), 400, codeUnsupported},
		{"wrong password", credWrongPass, tkQuery("service", "mreg", "scope", "repository:a:pull"), 401, codeUnauthorized},
		{"unknown user", credUnknown, tkQuery("service", "mreg"), 401, codeUnauthorized},
		{"account mismatch", credUser, tkQuery("service", "mreg", "account", adminName), 400, codeDenied},
		{"account mismatch admin", credAdmin, tkQuery("service", "mreg", "account", userName, "scope", "repository:a:push"), 400, codeDenied},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := tkGet(t, s.sidecarURL, tt.c, tt.q)
			if r.StatusCode != tt.status {
				t.Fatalf("status %d %s, want %d", r.StatusCode, r.body, tt.status)
			}
			checkEnvelope(t, bytes.NewReader(r.body), tt.code)
		})
	}
	t.Run("account matches", func(t *testing.T) {
		b := tkDecodeTokenBody(t, tkGet(t, s.sidecarURL, credUser, tkQuery("service", "mreg", "account", userName)))
		tkCheckAccessJWT(t, b.AccessToken, userName, nil)
	})
	t.Run("no service", func(t *testing.T) {
		b := tkDecodeTokenBody(t, tkGet(t, s.sidecarURL, credUser, tkQuery("scope", "repository:a:pull")))
		tkCheckAccessJWT(t, b.AccessToken, userName, []string{"repository:a:pull"})
	})
	t.Run("bearer at token endpoint", func(t *testing.T) {
		tok := tkToken(t, s, credAdmin, "repository:a:pull")
		req, _ := http.NewRequest("GET", s.sidecarURL+"/token?service=mreg&scope=repository:a:push", nil)
		req.Header.Set("Authorization", "Bearer "+tok)
		if r := tkDo(t, req); r.StatusCode != http.StatusUnauthorized {
			t.Fatalf("bearer credentials at /token: %d %s, want 401", r.StatusCode, r.body)
		}
	})
	t.Run("method", func(t *testing.T) {
		req, _ := http.NewRequest("PUT", s.sidecarURL+"/token", nil)
		if r := tkDo(t, req); r.StatusCode != http.StatusMethodNotAllowed {
			t.Fatalf("PUT /token: %d, want 405", r.StatusCode)
		}
	})
}

// The token endpoint takes Basic credentials, so a 401 from it must
// challenge for Basic (RFC 9110 §11.6.1: the challenge applies to the
// target resource); the reference token server does the same. A Bearer
// challenge whose realm is the token endpoint itself points the client
// back at the resource that just refused it.
func TestTokenEndpointChallengeIsBasic(t *testing.T) {
	s := newStack(t)
	for _, c := range []cred{credWrongPass, credUnknown} {
		t.Run(c.name, func(t *testing.T) {
			r := tkGet(t, s.sidecarURL, c, tkQuery("service", "mreg", "scope", "repository:a:pull"))
			tkChallenge(t, r, `Basic realm="mreg"`)
		})
	}
}

func TestTokenAnonymousWithoutAnonymousRead(t *testing.T) {
	s := newStack(t)
	tok := tkToken(t, s, credAnon, "repository:a:pull", "registry:catalog:*")
	tkCheckAccessJWT(t, tok, "", nil)
	for _, path := range []string{"/v2/a/manifests/latest", "/v2/a/tags/list", "/v2/_catalog"} {
		t.Run(path, func(t *testing.T) {
			before := s.upstreamHit.Load()
			r := tkBearer(t, "GET", s.sidecarURL+path, tok)
			n, _ := requiredAccess("GET", path)
			tkChallenge(t, r, tkRealm(s)+`,scope="`+n.scope.String()+`"`)
			if s.upstreamHit.Load() != before {
				t.Fatal("request reached the registry")
			}
		})
	}
	t.Run("push", func(t *testing.T) {
		r := tkBearer(t, "POST", s.sidecarURL+"/v2/a/blobs/uploads/", tok)
		tkChallenge(t, r, tkRealm(s)+`,scope="repository:a:pull,push"`)
	})
}

func TestTokenAnonymousWithAnonymousRead(t *testing.T) {
	s := newStack(t, withAnonymousRead)
	tok := tkToken(t, s, credAnon, "repository:a:pull,push")
	tkCheckAccessJWT(t, tok, "", []string{"repository:a:pull"})
	before := s.upstreamHit.Load()
	r := tkBearer(t, "GET", s.sidecarURL+"/v2/a/tags/list", tok)
	if s.upstreamHit.Load() == before || r.StatusCode == 401 || r.StatusCode == 403 {
		t.Fatalf("anonymous pull with token: %d %s, want it forwarded", r.StatusCode, r.body)
	}
	// Another repository: the role allows it, the token does not cover it.
	r = tkBearer(t, "GET", s.sidecarURL+"/v2/b/tags/list", tok)
	tkChallenge(t, r, tkRealm(s)+`,scope="repository:b:pull",error="insufficient_scope"`)
	// A push: the anonymous role never allows it.
	r = tkBearer(t, "POST", s.sidecarURL+"/v2/a/blobs/uploads/", tok)
	tkChallenge(t, r, tkRealm(s)+`,scope="repository:a:pull,push"`)
}

func TestTokenUse(t *testing.T) {
	s := newStack(t)
	adminAB := tkToken(t, s, credAdmin, "repository:team/a:pull,push")
	adminPull := tkToken(t, s, credAdmin, "repository:team/a:pull")
	userTok := tkToken(t, s, credUser, "repository:team/a:pull,push", "registry:catalog:*")
	tkCheckAccessJWT(t, userTok, userName, []string{"repository:team/a:pull", "registry:catalog:*"})
	adminAll := tkToken(t, s, credAdmin, "repository:team/a:*")
	catalogless := tkToken(t, s, credUser, "repository:team/a:pull")

	const (
		fwd  = 0
		deny = 403
	)
	insufficient := func(scope string) string {
		return tkRealm(s) + `,scope="` + scope + `",error="insufficient_scope"`
	}
	tests := []struct {
		name, token, method, path string
		status                    int    // fwd: reached the registry
		challenge                 string // for 401
	}{
		{"admin push covered", adminAB, "POST", "/v2/team/a/blobs/uploads/", 202, ""},
		{"admin pull covered", adminAB, "GET", "/v2/team/a/tags/list", fwd, ""},
		{"admin push other repo", adminAB, "POST", "/v2/team/b/blobs/uploads/", 401, insufficient("repository:team/b:pull,push")},
		{"admin pull other repo", adminAB, "GET", "/v2/team/b/tags/list", 401, insufficient("repository:team/b:pull")},
		{"admin push with pull token", adminPull, "POST", "/v2/team/a/blobs/uploads/", 401, insufficient("repository:team/a:pull,push")},
		{"admin delete not covered", adminAB, "DELETE", "/v2/team/a/manifests/sha256:" + strings.Repeat("a", 64), 401, insufficient("repository:team/a:delete")},
		{"admin star covers push", adminAll, "POST", "/v2/team/a/blobs/uploads/", 202, ""},
		{"admin star covers delete", adminAll, "DELETE", "/v2/team/a/manifests/sha256:" + strings.Repeat("a", 64), fwd, ""},
		{"admin catalog not covered", adminAB, "GET", "/v2/_catalog", 401, insufficient("registry:catalog:*")},
		{"admin name prefix not covered", adminAB, "GET", "/v2/team/a/b/tags/list", 401, insufficient("repository:team/a/b:pull")},
		{"user pull covered", userTok, "GET", "/v2/team/a/tags/list", fwd, ""},
		{"user catalog covered", userTok, "GET", "/v2/_catalog", fwd, ""},
		{"user catalog not covered", catalogless, "GET", "/v2/_catalog", 401, insufficient("registry:catalog:*")},
		{"user pull other repo", userTok, "GET", "/v2/team/b/tags/list", 401, insufficient("repository:team/b:pull")},
		{"user push denied", userTok, "POST", "/v2/team/a/blobs/uploads/", deny, ""},
		{"user push other repo denied", userTok, "POST", "/v2/team/b/blobs/uploads/", deny, ""},
		{"user delete denied", userTok, "DELETE", "/v2/team/a/manifests/sha256:" + strings.Repeat("a", 64), deny, ""},
		{"base with token", userTok, "GET", "/v2/", 200, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := s.upstreamHit.Load()
			r := tkBearer(t, tt.method, s.sidecarURL+tt.path, tt.token)
			reached := s.upstreamHit.Load() > before
			switch tt.status {
			case fwd:
				if !reached || r.StatusCode == 401 || r.StatusCode == 403 {
					t.Fatalf("%d %s: want forwarded", r.StatusCode, r.body)
				}
			case 401:
				tkChallenge(t, r, tt.challenge)
				if reached {
					t.Fatal("reached the registry")
				}
			case deny:
				if r.StatusCode != 403 || reached {
					t.Fatalf("%d %s (reached %v), want 403 from the sidecar", r.StatusCode, r.body, reached)
				}
				if ch := r.Header.Get("WWW-Authenticate"); ch != "" {
					t.Errorf("403 with challenge %q", ch)
				}
				checkEnvelope(t, bytes.NewReader(r.body), codeDenied)
			default:
				if r.StatusCode != tt.status || !reached {
					t.Fatalf("%d %s (reached %v), want %d", r.StatusCode, r.body, reached, tt.status)
				}
			}
		})
	}
}
