package sidecar

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/mreg-dev/mreg/internal/users"
)

// tkClock is a token clock a test can move: time.Now plus an offset.
type tkClock struct{ off atomic.Int64 }

func (c *tkClock) now() time.Time      { return time.Now().Add(time.Duration(c.off.Load())) }
func (c *tkClock) set(d time.Duration) { c.off.Store(int64(d)) }
func (c *tkClock) reset()              { c.off.Store(0) }
func (c *tkClock) String() string      { return time.Duration(c.off.Load()).String() }
func tkUsersPath(s *stack) string      { return filepath.Join(s.authDir, users.FileName) }
func tkHost(s *stack) string           { return strings.TrimPrefix(s.sidecarURL, "http://") }
func tkRealm(s *stack) string          { return `Bearer realm="` + s.sidecarURL + `/token",service="mreg"` }
func tkB64(b []byte) string            { return base64.RawURLEncoding.EncodeToString(b) }
func tkUnB64(s string) ([]byte, error) { return base64.RawURLEncoding.DecodeString(s) }
func tkForm(kv ...string) url.Values   { v := url.Values{}; tkAddPairs(v, kv); return v }
func tkQuery(kv ...string) url.Values  { return tkForm(kv...) }
func tkAddPairs(v url.Values, kv []string) {
	for i := 0; i+1 < len(kv); i += 2 {
		v.Add(kv[i], kv[i+1])
	}
}

// newClockStack is newStack with a movable token clock. The clock is
// installed before the server starts serving, so the race detector sees
// the write happen before every read.
func newClockStack(t *testing.T, opts ...stackOpt) (*stack, *tkClock) {
	t.Helper()
	clock := &tkClock{}
	opts = append(opts, func(c *Config) {
		c.Token.Now = clock.now
		c.Throttle = ThrottleOptions{} // the clock tests run with the real throttle
	})
	return newStack(t, opts...), clock
}

// tkResp is a response with its body read.
type tkResp struct {
	*http.Response
	body []byte
}

func tkDo(t *testing.T, req *http.Request) tkResp {
	t.Helper()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return tkResp{resp, b}
}

// tkGet asks GET /token with credentials c and query q.
func tkGet(t *testing.T, base string, c cred, q url.Values) tkResp {
	t.Helper()
	req, err := http.NewRequest("GET", base+"/token?"+q.Encode(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if c.user != "" {
		req.SetBasicAuth(c.user, c.pass)
	}
	return tkDo(t, req)
}

// tkPost posts the OAuth2 form to /token.
func tkPost(t *testing.T, base string, form url.Values) tkResp {
	t.Helper()
	req, err := http.NewRequest("POST", base+"/token", strings.NewReader(form.Encode()))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	return tkDo(t, req)
}

// tkBearer sends a request with a bearer token.
func tkBearer(t *testing.T, method, url, token string) tkResp {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	return tkDo(t, req)
}

// tkTokenBody is the JSON of a token response, with presence tracking.
type tkTokenBody struct {
	Token        *string `json:"token"`
	AccessToken  string  `json:"access_token"`
	ExpiresIn    *int    `json:"expires_in"`
	IssuedAt     string  `json:"issued_at"`
	RefreshToken string  `json:"refresh_token"`
	Scope        string  `json:"scope"`
}

func tkDecodeTokenBody(t *testing.T, r tkResp) tkTokenBody {
	t.Helper()
	if r.StatusCode != http.StatusOK {
		t.Fatalf("token endpoint: %d %s", r.StatusCode, r.body)
	}
	if ct := r.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type = %q", ct)
	}
	if cc := r.Header.Get("Cache-Control"); cc != "no-store" {
		t.Errorf("Cache-Control = %q, want no-store", cc)
	}
	var b tkTokenBody
	if err := json.Unmarshal(r.body, &b); err != nil {
		t.Fatalf("token body %q: %v", r.body, err)
	}
	if b.AccessToken == "" {
		t.Fatalf("no access_token in %s", r.body)
	}
	if b.ExpiresIn == nil || *b.ExpiresIn != 300 {
		t.Errorf("expires_in = %v, want 300", b.ExpiresIn)
	}
	if _, err := time.Parse(time.RFC3339, b.IssuedAt); err != nil || !strings.HasSuffix(b.IssuedAt, "Z") {
		t.Errorf("issued_at %q is not RFC 3339 UTC: %v", b.IssuedAt, err)
	}
	return b
}

// tkJWT is a decoded (unverified) JWT.
type tkJWT struct {
	header map[string]any
	claims struct {
		Iss    string          `json:"iss"`
		Sub    string          `json:"sub"`
		Aud    json.RawMessage `json:"aud"`
		Exp    int64           `json:"exp"`
		Nbf    int64           `json:"nbf"`
		Iat    int64           `json:"iat"`
		Jti    string          `json:"jti"`
		Access json.RawMessage `json:"access"`
		Kind   string          `json:"kind"`
		PwFP   string          `json:"pwfp"`
	}
	access []string // formatted "type:name:a,b"
}

func tkDecodeJWT(t *testing.T, raw string) tkJWT {
	t.Helper()
	parts := strings.Split(raw, ".")
	if len(parts) != 3 {
		t.Fatalf("token %q has %d parts", raw, len(parts))
	}
	var j tkJWT
	h, err := tkUnB64(parts[0])
	if err != nil {
		t.Fatalf("header: %v", err)
	}
	if err := json.Unmarshal(h, &j.header); err != nil {
		t.Fatalf("header %s: %v", h, err)
	}
	p, err := tkUnB64(parts[1])
	if err != nil {
		t.Fatalf("payload: %v", err)
	}
	if err := json.Unmarshal(p, &j.claims); err != nil {
		t.Fatalf("payload %s: %v", p, err)
	}
	if len(j.claims.Access) > 0 && string(j.claims.Access) != "null" {
		var acc []struct {
			Type    string   `json:"type"`
			Name    string   `json:"name"`
			Actions []string `json:"actions"`
		}
		if err := json.Unmarshal(j.claims.Access, &acc); err != nil {
			t.Fatalf("access claim %s: %v", j.claims.Access, err)
		}
		for _, a := range acc {
			j.access = append(j.access, a.Type+":"+a.Name+":"+strings.Join(a.Actions, ","))
		}
	}
	return j
}

// tkCheckAccessJWT checks an access token's header and claims.
func tkCheckAccessJWT(t *testing.T, raw, sub string, access []string) tkJWT {
	t.Helper()
	j := tkDecodeJWT(t, raw)
	if j.header["alg"] != "ES256" {
		t.Errorf("alg = %v, want ES256", j.header["alg"])
	}
	if j.header["typ"] != "JWT" {
		t.Errorf("typ = %v, want JWT", j.header["typ"])
	}
	if kid, _ := j.header["kid"].(string); kid == "" {
		t.Errorf("no kid in header %v", j.header)
	}
	c := j.claims
	if c.Iss != "mreg" {
		t.Errorf("iss = %q, want mreg", c.Iss)
	}
	if c.Sub != sub {
		t.Errorf("sub = %q, want %q", c.Sub, sub)
	}
	var aud any
	_ = json.Unmarshal(c.Aud, &aud)
	if aud != "mreg" && !reflect.DeepEqual(aud, []any{"mreg"}) {
		t.Errorf("aud = %s, want mreg", c.Aud)
	}
	if c.Exp-c.Iat != 300 {
		t.Errorf("exp-iat = %d, want 300", c.Exp-c.Iat)
	}
	if c.Nbf > c.Iat {
		t.Errorf("nbf %d after iat %d", c.Nbf, c.Iat)
	}
	if c.Jti == "" {
		t.Error("no jti")
	}
	if c.Kind != "" || c.PwFP != "" {
		t.Errorf("access token has kind %q pwfp %q", c.Kind, c.PwFP)
	}
	// The spec's access claim is an array, also when empty.
	if s := string(c.Access); s == "" || s == "null" {
		t.Errorf("access claim = %q, want a JSON array", s)
	}
	if !reflect.DeepEqual(j.access, access) {
		t.Errorf("access = %q, want %q", j.access, access)
	}
	return j
}

// tkChallenge checks a 401 and its WWW-Authenticate.
func tkChallenge(t *testing.T, r tkResp, want string) {
	t.Helper()
	if r.StatusCode != http.StatusUnauthorized {
		t.Fatalf("status %d %s, want 401", r.StatusCode, r.body)
	}
	if got := r.Header.Get("WWW-Authenticate"); got != want {
		t.Fatalf("WWW-Authenticate = %q\n                  want %q", got, want)
	}
	if r.Request.Method != "HEAD" {
		checkEnvelope(t, bytes.NewReader(r.body), "UNAUTHORIZED")
	}
}

// tkToken gets an access token with GET /token.
func tkToken(t *testing.T, s *stack, c cred, scopes ...string) string {
	t.Helper()
	q := tkQuery("service", "mreg")
	for _, sc := range scopes {
		q.Add("scope", sc)
	}
	return tkDecodeTokenBody(t, tkGet(t, s.sidecarURL, c, q)).AccessToken
}

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

func TestTokenExpired(t *testing.T) {
	s, clock := newClockStack(t)
	invalid := tkRealm(s) + `,scope="repository:a:pull",error="invalid_token"`

	t.Run("issued in the past", func(t *testing.T) {
		clock.set(-time.Hour)
		tok := tkToken(t, s, credUser, "repository:a:pull")
		clock.reset()
		tkChallenge(t, tkBearer(t, "GET", s.sidecarURL+"/v2/a/tags/list", tok), invalid)
	})
	t.Run("expires after use", func(t *testing.T) {
		tok := tkToken(t, s, credUser, "repository:a:pull")
		if r := tkBearer(t, "GET", s.sidecarURL+"/v2/a/tags/list", tok); r.StatusCode == 401 {
			t.Fatalf("fresh token refused: %s", r.body)
		}
		clock.set(5*time.Minute + time.Second)
		defer clock.reset()
		// Now from the verified-token cache.
		tkChallenge(t, tkBearer(t, "GET", s.sidecarURL+"/v2/a/tags/list", tok), invalid)
	})
	t.Run("just before expiry", func(t *testing.T) {
		tok := tkToken(t, s, credUser, "repository:a:pull")
		clock.set(5*time.Minute - 5*time.Second)
		defer clock.reset()
		if r := tkBearer(t, "GET", s.sidecarURL+"/v2/a/tags/list", tok); r.StatusCode == 401 {
			t.Fatalf("token refused before expiry: %s", r.body)
		}
	})
	t.Run("issued in the future", func(t *testing.T) {
		clock.set(time.Hour)
		tok := tkToken(t, s, credUser, "repository:a:pull")
		clock.reset()
		tkChallenge(t, tkBearer(t, "GET", s.sidecarURL+"/v2/a/tags/list", tok), invalid)
	})
	t.Run("expired refresh token", func(t *testing.T) {
		r := tkPost(t, s.sidecarURL, tkForm("grant_type", "password", "username", userName, "password", userPassword,
			"service", "mreg", "client_id", "t", "access_type", "offline"))
		rt := tkDecodeTokenBody(t, r).RefreshToken
		clock.set(7*24*time.Hour + time.Minute)
		defer clock.reset()
		r = tkPost(t, s.sidecarURL, tkForm("grant_type", "refresh_token", "refresh_token", rt, "service", "mreg", "client_id", "t"))
		tkOAuthError(t, r, 400, "invalid_grant")
	})
}

// tkTamper returns variants of a valid token that must all be refused.
func tkTamper(t *testing.T, tok string) map[string]string {
	t.Helper()
	parts := strings.Split(tok, ".")
	sig, err := tkUnB64(parts[2])
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, i := range []int{0, 10, 31, 32, 63} {
		s := bytes.Clone(sig)
		s[i] ^= 0x01
		out[fmt.Sprintf("signature byte %d", i)] = parts[0] + "." + parts[1] + "." + tkB64(s)
	}
	out["signature truncated"] = parts[0] + "." + parts[1] + "." + tkB64(sig[:63])
	out["signature empty"] = parts[0] + "." + parts[1] + "."
	out["signature of zeros"] = parts[0] + "." + parts[1] + "." + tkB64(make([]byte, 64))

	payload, _ := tkUnB64(parts[1])
	var claims map[string]any
	if err := json.Unmarshal(payload, &claims); err != nil {
		t.Fatal(err)
	}
	mod := func(name string, f func(map[string]any)) {
		c := map[string]any{}
		for k, v := range claims {
			c[k] = v
		}
		f(c)
		b, _ := json.Marshal(c)
		out[name] = parts[0] + "." + tkB64(b) + "." + parts[2]
	}
	mod("payload: more access", func(c map[string]any) {
		c["access"] = []any{map[string]any{"type": "repository", "name": "a", "actions": []string{"pull", "push", "delete"}}}
	})
	mod("payload: other subject", func(c map[string]any) { c["sub"] = adminName })
	mod("payload: later expiry", func(c map[string]any) { c["exp"] = time.Now().Add(time.Hour * 24).Unix() })

	hdr := func(alg string) string {
		h, _ := json.Marshal(map[string]string{"alg": alg, "typ": "JWT"})
		return tkB64(h)
	}
	out["alg none"] = hdr("none") + "." + parts[1] + "."
	out["alg none with signature"] = hdr("none") + "." + parts[1] + "." + parts[2]
	out["alg HS256 header"] = hdr("HS256") + "." + parts[1] + "." + parts[2]
	out["two parts"] = parts[0] + "." + parts[1]
	out["garbage"] = "not-a-token"
	return out
}

func TestTokenTampered(t *testing.T) {
	s := newStack(t)
	tok := tkToken(t, s, credAdmin, "repository:a:pull")
	if r := tkBearer(t, "GET", s.sidecarURL+"/v2/a/tags/list", tok); r.StatusCode == 401 || r.StatusCode == 403 {
		t.Fatalf("valid token refused: %d", r.StatusCode)
	}
	invalid := tkRealm(s) + `,scope="repository:a:pull",error="invalid_token"`
	for name, bad := range tkTamper(t, tok) {
		t.Run(name, func(t *testing.T) {
			before := s.upstreamHit.Load()
			tkChallenge(t, tkBearer(t, "GET", s.sidecarURL+"/v2/a/tags/list", bad), invalid)
			if s.upstreamHit.Load() != before {
				t.Fatal("reached the registry")
			}
		})
	}
	t.Run("HS256 signed with the public key", func(t *testing.T) {
		// The classic algorithm confusion: an HMAC keyed with the
		// (public) verification key.
		pub := s.server.tokens.key.PublicKey
		der, _ := pub.ECDH()
		c := jwt.MapClaims{"iss": "mreg", "aud": "mreg", "sub": adminName, "exp": time.Now().Add(time.Hour).Unix(),
			"iat": time.Now().Unix(), "access": []any{map[string]any{"type": "repository", "name": "a", "actions": []string{"pull"}}}}
		bad, err := jwt.NewWithClaims(jwt.SigningMethodHS256, c).SignedString(der.Bytes())
		if err != nil {
			t.Fatal(err)
		}
		tkChallenge(t, tkBearer(t, "GET", s.sidecarURL+"/v2/a/tags/list", bad), invalid)
	})
	t.Run("ES256 by another key", func(t *testing.T) {
		k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		c := jwt.MapClaims{"iss": "mreg", "aud": "mreg", "sub": adminName, "exp": time.Now().Add(time.Hour).Unix(),
			"iat": time.Now().Unix(), "access": []any{map[string]any{"type": "repository", "name": "a", "actions": []string{"pull"}}}}
		tk := jwt.NewWithClaims(jwt.SigningMethodES256, c)
		tk.Header["kid"] = s.server.tokens.kid
		bad, err := tk.SignedString(k)
		if err != nil {
			t.Fatal(err)
		}
		tkChallenge(t, tkBearer(t, "GET", s.sidecarURL+"/v2/a/tags/list", bad), invalid)
	})
	t.Run("valid token still accepted", func(t *testing.T) {
		if r := tkBearer(t, "GET", s.sidecarURL+"/v2/a/tags/list", tok); r.StatusCode == 401 || r.StatusCode == 403 {
			t.Fatalf("valid token refused after tampering attempts: %d", r.StatusCode)
		}
	})
}

// Base64url has more than one spelling of the last character of a
// segment whose length is not a multiple of 3 bytes (the 64-byte ES256
// signature leaves 2 unused bits). Only the canonical spelling — what
// the signer wrote — should be accepted, or every token has four
// valid spellings (jwt.WithStrictDecoding).
func TestTokenNonCanonicalSignatureRefused(t *testing.T) {
	s := newStack(t)
	tok := tkToken(t, s, credUser, "repository:a:pull")
	i := strings.LastIndexByte(tok, '.')
	sig := tok[i+1:]
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
	last := strings.IndexByte(alphabet, sig[len(sig)-1])
	if last < 0 || len(sig)%4 != 2 {
		t.Fatalf("unexpected signature encoding %q", sig)
	}
	var accepted []string
	for d := 1; d < 16; d++ { // 86 chars for 64 bytes: the last one has 4 unused bits
		alt := last ^ d
		bad := tok[:i+1] + sig[:len(sig)-1] + alphabet[alt:alt+1]
		dec, err := tkUnB64(sig[:len(sig)-1] + alphabet[alt:alt+1])
		orig, _ := tkUnB64(sig)
		if err != nil || !bytes.Equal(dec, orig) {
			continue // differs in the decoded bytes: covered by TestTokenTampered
		}
		r := tkBearer(t, "GET", s.sidecarURL+"/v2/a/tags/list", bad)
		if r.StatusCode != http.StatusUnauthorized {
			accepted = append(accepted, alphabet[alt:alt+1])
		}
	}
	if len(accepted) > 0 {
		t.Errorf("token accepted with the signature's last character %q changed to any of %q (non-canonical base64url)",
			sig[len(sig)-1:], accepted)
	}
}

func TestTokenFromAnotherKeyRefused(t *testing.T) {
	s1 := newStack(t)
	s2 := newStack(t)
	foreign := tkToken(t, s2, credAdmin, "repository:a:pull,push")
	tkCheckAccessJWT(t, foreign, adminName, []string{"repository:a:pull,push"})
	r := tkBearer(t, "GET", s1.sidecarURL+"/v2/a/tags/list", foreign)
	tkChallenge(t, r, tkRealm(s1)+`,scope="repository:a:pull",error="invalid_token"`)
	r = tkBearer(t, "POST", s1.sidecarURL+"/v2/a/blobs/uploads/", foreign)
	tkChallenge(t, r, tkRealm(s1)+`,scope="repository:a:pull,push",error="invalid_token"`)
	// And the refresh token of the other stack is no good either.
	rr := tkPost(t, s2.sidecarURL, tkForm("grant_type", "password", "username", adminName, "password", adminPassword,
		"service", "mreg", "client_id", "t", "access_type", "offline"))
	rt := tkDecodeTokenBody(t, rr).RefreshToken
	tkOAuthError(t, tkPost(t, s1.sidecarURL, tkForm("grant_type", "refresh_token", "refresh_token", rt, "client_id", "t")), 400, "invalid_grant")
}

func TestTokenKindsNotInterchangeable(t *testing.T) {
	s := newStack(t)
	r := tkPost(t, s.sidecarURL, tkForm("grant_type", "password", "username", adminName, "password", adminPassword,
		"service", "mreg", "client_id", "t", "access_type", "offline", "scope", "repository:a:pull"))
	b := tkDecodeTokenBody(t, r)
	if b.RefreshToken == "" {
		t.Fatal("no refresh token")
	}
	t.Run("refresh token as bearer", func(t *testing.T) {
		r := tkBearer(t, "GET", s.sidecarURL+"/v2/a/tags/list", b.RefreshToken)
		tkChallenge(t, r, tkRealm(s)+`,scope="repository:a:pull",error="invalid_token"`)
		r = tkBearer(t, "GET", s.sidecarURL+"/v2/", b.RefreshToken)
		tkChallenge(t, r, tkRealm(s)+`,error="invalid_token"`)
	})
	t.Run("access token as refresh token", func(t *testing.T) {
		r := tkPost(t, s.sidecarURL, tkForm("grant_type", "refresh_token", "refresh_token", b.AccessToken, "client_id", "t"))
		tkOAuthError(t, r, 400, "invalid_grant")
	})
	t.Run("refresh token as password", func(t *testing.T) {
		r := tkPost(t, s.sidecarURL, tkForm("grant_type", "password", "username", adminName, "password", b.RefreshToken, "client_id", "t"))
		tkOAuthError(t, r, 400, "invalid_grant")
	})
}

func tkOAuthError(t *testing.T, r tkResp, status int, code string) {
	t.Helper()
	if r.StatusCode != status {
		t.Fatalf("status %d %s, want %d %s", r.StatusCode, r.body, status, code)
	}
	var e struct {
		Error string `json:"error"`
	}
	if err := json.Unmarshal(r.body, &e); err != nil || e.Error != code {
		t.Fatalf("body %s: want error %q (%v)", r.body, code, err)
	}
	if strings.Contains(string(r.body), "access_token") {
		t.Fatalf("error response carries a token: %s", r.body)
	}
}

func TestTokenPOST(t *testing.T) {
	s := newStack(t)
	password := func(user, pass string, extra ...string) url.Values {
		f := tkForm("grant_type", "password", "username", user, "password", pass, "service", "mreg", "client_id", "mreg-test")
		tkAddPairs(f, extra)
		return f
	}
	refresh := func(rt string, extra ...string) url.Values {
		f := tkForm("grant_type", "refresh_token", "refresh_token", rt, "service", "mreg", "client_id", "mreg-test")
		tkAddPairs(f, extra)
		return f
	}

	t.Run("password grant", func(t *testing.T) {
		b := tkDecodeTokenBody(t, tkPost(t, s.sidecarURL, password(adminName, adminPassword,
			"access_type", "offline", "scope", "repository:a:pull,push registry:catalog:*", "scope", "repository:b:delete")))
		tkCheckAccessJWT(t, b.AccessToken, adminName, []string{"repository:a:pull,push", "registry:catalog:*", "repository:b:delete"})
		if b.RefreshToken == "" {
			t.Fatal("access_type=offline: no refresh_token")
		}
		if b.Scope != "repository:a:pull,push registry:catalog:* repository:b:delete" {
			t.Errorf("scope = %q", b.Scope)
		}
	})
	t.Run("password grant without offline", func(t *testing.T) {
		b := tkDecodeTokenBody(t, tkPost(t, s.sidecarURL, password(userName, userPassword, "scope", "repository:a:pull,push")))
		tkCheckAccessJWT(t, b.AccessToken, userName, []string{"repository:a:pull"})
		if b.RefreshToken != "" {
			t.Fatal("refresh_token without access_type=offline")
		}
	})
	t.Run("errors", func(t *testing.T) {
		tests := []struct {
			name   string
			form   url.Values
			status int
			code   string
		}{
			{"wrong password", password(userName, "nope", "access_type", "offline"), 400, "invalid_grant"},
			{"unknown user", password("mallory", "x"), 400, "invalid_grant"},
			{"empty password", password(userName, ""), 400, "invalid_grant"},
			{"unknown service", tkForm("grant_type", "password", "username", userName, "password", userPassword, "service", "x"), 400, "invalid_request"},
			{"unknown service refresh", tkForm("grant_type", "refresh_token", "refresh_token", "x", "service", "x"), 400, "invalid_request"},
			{"no grant type", tkForm("username", userName, "password", userPassword), 400, "unsupported_grant_type"},
			{"client_credentials", tkForm("grant_type", "client_credentials", "client_id", "a", "client_secret", "b"), 400, "unsupported_grant_type"},
			{"authorization_code", tkForm("grant_type", "authorization_code", "code", "x"), 400, "unsupported_grant_type"},
			{"empty refresh token", refresh(""), 400, "invalid_grant"},
			{"garbage refresh token", refresh("a.b.c"), 400, "invalid_grant"},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				tkOAuthError(t, tkPost(t, s.sidecarURL, tt.form), tt.status, tt.code)
			})
		}
	})
	t.Run("oversized form", func(t *testing.T) {
		f := password(userName, userPassword, "scope", strings.Repeat("x", 32<<10))
		r := tkPost(t, s.sidecarURL, f)
		if r.StatusCode != 400 {
			t.Fatalf("oversized form: %d", r.StatusCode)
		}
	})

	// The refresh lifecycle, on users of their own.
	const bob, bobPass = "bob", "bob-secret"
	addUser(t, s.authDir, bob, bobPass, true)
	var rt, accessPush string
	t.Run("refresh grant", func(t *testing.T) {
		b := tkDecodeTokenBody(t, tkPost(t, s.sidecarURL, password(bob, bobPass, "access_type", "offline", "scope", "repository:a:pull,push")))
		rt, accessPush = b.RefreshToken, b.AccessToken
		r := tkPost(t, s.sidecarURL, refresh(rt, "scope", "repository:b:pull,push,delete"))
		b2 := tkDecodeTokenBody(t, r)
		tkCheckAccessJWT(t, b2.AccessToken, bob, []string{"repository:b:pull,push,delete"})
		if b2.RefreshToken != "" {
			t.Errorf("refresh grant returned a new refresh token")
		}
		if b2.AccessToken == b.AccessToken {
			t.Error("refresh returned the same access token")
		}
		// Refresh without service is fine too, and can be used again.
		b3 := tkDecodeTokenBody(t, tkPost(t, s.sidecarURL, tkForm("grant_type", "refresh_token", "refresh_token", rt, "scope", "repository:a:push")))
		tkCheckAccessJWT(t, b3.AccessToken, bob, []string{"repository:a:push"})
	})
	t.Run("demoted: refresh gets the current role", func(t *testing.T) {
		if admin, err := users.Toggle(context.Background(), tkUsersPath(s), bob); err != nil || admin {
			t.Fatalf("toggle: admin=%v %v", admin, err)
		}
		b := tkDecodeTokenBody(t, tkPost(t, s.sidecarURL, refresh(rt, "scope", "repository:a:pull,push")))
		tkCheckAccessJWT(t, b.AccessToken, bob, []string{"repository:a:pull"})
		// The push token issued while admin no longer pushes.
		r := tkBearer(t, "POST", s.sidecarURL+"/v2/a/blobs/uploads/", accessPush)
		if r.StatusCode != 403 {
			t.Fatalf("demoted user's old push token: %d %s, want 403", r.StatusCode, r.body)
		}
		if admin, err := users.Toggle(context.Background(), tkUsersPath(s), bob); err != nil || !admin {
			t.Fatalf("toggle back: admin=%v %v", admin, err)
		}
		b = tkDecodeTokenBody(t, tkPost(t, s.sidecarURL, refresh(rt, "scope", "repository:a:pull,push")))
		tkCheckAccessJWT(t, b.AccessToken, bob, []string{"repository:a:pull,push"})
	})
	t.Run("password changed: old refresh token void", func(t *testing.T) {
		addUser(t, s.authDir, bob, "bob-new-secret", false)
		tkOAuthError(t, tkPost(t, s.sidecarURL, refresh(rt, "scope", "repository:a:pull")), 400, "invalid_grant")
		// Setting the same password again gives a new hash: still void.
		addUser(t, s.authDir, bob, bobPass, false)
		tkOAuthError(t, tkPost(t, s.sidecarURL, refresh(rt)), 400, "invalid_grant")
		// The access token is not bound to the password.
		if r := tkBearer(t, "POST", s.sidecarURL+"/v2/a/blobs/uploads/", accessPush); r.StatusCode != 202 {
			t.Fatalf("access token after password change: %d", r.StatusCode)
		}
	})
	t.Run("removed: refresh and access refused", func(t *testing.T) {
		b := tkDecodeTokenBody(t, tkPost(t, s.sidecarURL, password(bob, bobPass, "access_type", "offline", "scope", "repository:a:pull")))
		if r := tkBearer(t, "GET", s.sidecarURL+"/v2/a/tags/list", b.AccessToken); r.StatusCode == 401 || r.StatusCode == 403 {
			t.Fatalf("fresh token refused: %d", r.StatusCode)
		}
		if err := users.Remove(context.Background(), tkUsersPath(s), bob); err != nil {
			t.Fatal(err)
		}
		tkOAuthError(t, tkPost(t, s.sidecarURL, refresh(b.RefreshToken, "scope", "repository:a:pull")), 400, "invalid_grant")
		// The access token was verified (and cached) before the removal.
		r := tkBearer(t, "GET", s.sidecarURL+"/v2/a/tags/list", b.AccessToken)
		tkChallenge(t, r, tkRealm(s)+`,scope="repository:a:pull",error="invalid_token"`)
		r = tkBearer(t, "GET", s.sidecarURL+"/v2/", b.AccessToken)
		tkChallenge(t, r, tkRealm(s)+`,error="invalid_token"`)
	})
}

func TestTokenKeyPersists(t *testing.T) {
	dir := t.TempDir()
	t1, err := newTokens(dir, TokenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	info, err := os.Stat(filepath.Join(dir, TokenKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	if m := info.Mode().Perm(); m != 0o600 {
		t.Errorf("%s mode %v, want 0600", TokenKeyFile, m)
	}
	tok, _, err := t1.issue(userName, []Scope{{"repository", "a", []string{"pull"}}})
	if err != nil {
		t.Fatal(err)
	}
	t2, err := newTokens(dir, TokenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !t1.key.Equal(t2.key) || t1.kid != t2.kid {
		t.Fatal("second start made a new key")
	}
	c, err := t2.verify(tok, kindAccess)
	if err != nil {
		t.Fatalf("token of the first instance: %v", err)
	}
	if c.Subject != userName || !reflect.DeepEqual(c.scopes(), []Scope{{"repository", "a", []string{"pull"}}}) {
		t.Fatalf("claims = %+v", c)
	}
	// Another directory, another key.
	t3, err := newTokens(t.TempDir(), TokenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := t3.verify(tok, kindAccess); err == nil {
		t.Fatal("token verified with another directory's key")
	}
	// Another service or issuer refuses it too.
	for _, o := range []TokenOptions{{Service: "other"}, {Issuer: "other"}} {
		tx, err := newTokens(dir, o)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := tx.verify(tok, kindAccess); err == nil {
			t.Fatalf("token verified with options %+v", o)
		}
	}
	t.Run("corrupt key file", func(t *testing.T) {
		d := t.TempDir()
		if err := os.WriteFile(filepath.Join(d, TokenKeyFile), []byte("not a key"), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := newTokens(d, TokenOptions{}); err == nil {
			t.Fatal("corrupt key file accepted")
		}
	})
	t.Run("new directory", func(t *testing.T) {
		d := filepath.Join(t.TempDir(), "auth")
		if _, err := newTokens(d, TokenOptions{}); err != nil {
			t.Fatal(err)
		}
		if _, err := os.Stat(filepath.Join(d, TokenKeyFile)); err != nil {
			t.Fatal(err)
		}
	})
}

// Several sidecars starting at once on a shared auth directory (or a
// restart racing a manage-user run) must agree on one key, and none may
// fail: the loser of O_EXCL must not read the winner's half-written file.
func TestTokenKeyConcurrentCreate(t *testing.T) {
	for round := range 30 {
		dir := t.TempDir()
		const n = 8
		var (
			wg   sync.WaitGroup
			keys [n]*tokens
			errs [n]error
		)
		start := make(chan struct{})
		for i := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				keys[i], errs[i] = newTokens(dir, TokenOptions{})
			}()
		}
		close(start)
		wg.Wait()
		for i := range n {
			if errs[i] != nil {
				t.Fatalf("round %d: instance %d: %v", round, i, errs[i])
			}
			if !keys[i].key.Equal(keys[0].key) {
				t.Fatalf("round %d: instances 0 and %d use different keys", round, i)
			}
		}
	}
}

func TestTokenVerifyUnit(t *testing.T) {
	tk, err := newTokens(t.TempDir(), TokenOptions{TTL: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	tk.now = func() time.Time { return now }
	acc, _, err := tk.issue(userName, nil)
	if err != nil {
		t.Fatal(err)
	}
	ref, err := tk.issueRefresh(userName, []byte("hash"))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		raw  string
		kind string
		at   time.Duration
		ok   bool
	}{
		{"access", acc, kindAccess, 0, true},
		{"access cached", acc, kindAccess, 30 * time.Second, true},
		{"access expired", acc, kindAccess, time.Minute + time.Second, false},
		{"access as refresh", acc, kindRefresh, 0, false},
		{"refresh", ref, kindRefresh, 0, true},
		{"refresh after a day", ref, kindRefresh, 24 * time.Hour, true},
		{"refresh expired", ref, kindRefresh, 7*24*time.Hour + time.Second, false},
		{"refresh as access", ref, kindAccess, 0, false},
		{"too long", acc + strings.Repeat("A", 16<<10), kindAccess, 0, false},
		{"empty", "", kindAccess, 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tk.now = func() time.Time { return now.Add(tt.at) }
			c, err := tk.verify(tt.raw, tt.kind)
			if (err == nil) != tt.ok {
				t.Fatalf("verify: %v, want ok=%v", err, tt.ok)
			}
			if err == nil && c.Subject != userName {
				t.Fatalf("subject %q", c.Subject)
			}
		})
	}
}

func TestChallengeHeaders(t *testing.T) {
	tokenMode := newStack(t)
	basicMode := newStack(t, func(c *Config) { c.AuthMode = AuthBasic })
	dg := "sha256:" + strings.Repeat("b", 64)
	tests := []struct {
		method, path, scope string
	}{
		{"GET", "/v2/", ""},
		{"HEAD", "/v2/", ""},
		{"GET", "/v2", ""},
		{"GET", "/v2/team/app/manifests/latest", "repository:team/app:pull"},
		{"HEAD", "/v2/team/app/manifests/" + dg, "repository:team/app:pull"},
		{"GET", "/v2/team/app/blobs/" + dg, "repository:team/app:pull"},
		{"GET", "/v2/team/app/tags/list", "repository:team/app:pull"},
		{"GET", "/v2/team/app/referrers/" + dg, "repository:team/app:pull"},
		{"GET", "/v2/a/blobs/b/manifests/latest", "repository:a/blobs/b:pull"},
		{"GET", "/v2/_catalog", "registry:catalog:*"},
		{"POST", "/v2/team/app/blobs/uploads/", "repository:team/app:pull,push"},
		{"PUT", "/v2/team/app/manifests/v1", "repository:team/app:pull,push"},
		{"PATCH", "/v2/team/app/blobs/uploads/abc", "repository:team/app:pull,push"},
		{"DELETE", "/v2/team/app/manifests/" + dg, "repository:team/app:delete"},
		{"GET", "/v2/not/a/route", ""},
		{"GET", "/", ""},
	}
	for _, tt := range tests {
		t.Run("token/"+tt.method+" "+tt.path, func(t *testing.T) {
			want := tkRealm(tokenMode)
			if tt.scope != "" {
				want += `,scope="` + tt.scope + `"`
			}
			req, _ := http.NewRequest(tt.method, tokenMode.sidecarURL+tt.path, nil)
			tkChallenge(t, tkDo(t, req), want)
			// Wrong Basic credentials get the same challenge.
			req, _ = http.NewRequest(tt.method, tokenMode.sidecarURL+tt.path, nil)
			req.SetBasicAuth(userName, "wrong")
			tkChallenge(t, tkDo(t, req), want)
		})
		t.Run("basic/"+tt.method+" "+tt.path, func(t *testing.T) {
			req, _ := http.NewRequest(tt.method, basicMode.sidecarURL+tt.path, nil)
			tkChallenge(t, tkDo(t, req), `Basic realm="mreg"`)
		})
	}
	t.Run("token/Host as the client sent it", func(t *testing.T) {
		_, port, _ := net.SplitHostPort(tkHost(tokenMode))
		req, _ := http.NewRequest("GET", tokenMode.sidecarURL+"/v2/", nil)
		req.Host = "localhost:" + port
		tkChallenge(t, tkDo(t, req), `Bearer realm="http://localhost:`+port+`/token",service="mreg"`)
	})
	t.Run("token/custom service", func(t *testing.T) {
		s := newStack(t, func(c *Config) { c.Token.Service = "registry.example" })
		req, _ := http.NewRequest("GET", s.sidecarURL+"/v2/x/tags/list", nil)
		tkChallenge(t, tkDo(t, req), `Bearer realm="`+s.sidecarURL+`/token",service="registry.example",scope="repository:x:pull"`)
		// And the token endpoint wants that service.
		if r := tkGet(t, s.sidecarURL, credUser, tkQuery("service", "mreg")); r.StatusCode != 400 {
			t.Fatalf("service mreg at a registry.example sidecar: %d", r.StatusCode)
		}
		b := tkDecodeTokenBody(t, tkGet(t, s.sidecarURL, credUser, tkQuery("service", "registry.example", "scope", "repository:x:pull")))
		j := tkDecodeJWT(t, b.AccessToken)
		if string(j.claims.Aud) != `["registry.example"]` && string(j.claims.Aud) != `"registry.example"` {
			t.Fatalf("aud = %s", j.claims.Aud)
		}
		if r := tkBearer(t, "GET", s.sidecarURL+"/v2/x/tags/list", b.AccessToken); r.StatusCode == 401 {
			t.Fatalf("token refused: %s", r.body)
		}
	})
	t.Run("basic/bearer still accepted", func(t *testing.T) {
		tok := tkToken(t, basicMode, credUser, "repository:x:pull")
		if r := tkBearer(t, "GET", basicMode.sidecarURL+"/v2/x/tags/list", tok); r.StatusCode == 401 || r.StatusCode == 403 {
			t.Fatalf("token in basic mode: %d", r.StatusCode)
		}
		r := tkBearer(t, "GET", basicMode.sidecarURL+"/v2/x/tags/list", tok+"x")
		tkChallenge(t, r, `Basic realm="mreg"`)
	})
}

// FuzzTokenVerify: arbitrary strings and mutations of a valid token never
// panic, and never verify unless what was signed (header, claims and
// signature bytes) is unchanged.
func FuzzTokenVerify(f *testing.F) {
	dir := f.TempDir()
	tk, err := newTokens(dir, TokenOptions{})
	if err != nil {
		f.Fatal(err)
	}
	valid, _, err := tk.issue(userName, []Scope{{"repository", "a", []string{"pull", "push"}}})
	if err != nil {
		f.Fatal(err)
	}
	refresh, err := tk.issueRefresh(userName, []byte("hash"))
	if err != nil {
		f.Fatal(err)
	}
	vp := strings.Split(valid, ".")
	f.Add(valid, uint16(0), byte(0), uint8(0))
	f.Add(valid, uint16(len(valid)-1), byte(1), uint8(1))
	f.Add(valid, uint16(len(vp[0])+3), byte(0x20), uint8(1))
	f.Add(refresh, uint16(0), byte(0), uint8(0))
	f.Add("", uint16(0), byte(0), uint8(2))
	f.Add("a.b.c", uint16(1), byte(1), uint8(2))
	f.Add("eyJhbGciOiJub25lIn0.e30.", uint16(0), byte(0), uint8(2))
	f.Fuzz(func(t *testing.T, s string, pos uint16, x byte, mode uint8) {
		var raw string
		switch mode % 3 {
		case 0: // the valid token, one byte changed
			b := []byte(valid)
			b[int(pos)%len(b)] ^= x
			raw = string(b)
		case 1: // the valid token with s spliced in
			p := int(pos) % (len(valid) + 1)
			raw = valid[:p] + s + valid[p:]
		default: // anything
			raw = s
		}
		for _, kind := range []string{kindAccess, kindRefresh} {
			c, err := tk.verify(raw, kind)
			if err != nil {
				if c != nil {
					t.Fatalf("verify returned claims with error %v", err)
				}
				continue
			}
			// Only the signing input and the signature bytes matter.
			orig := valid
			if kind == kindRefresh {
				orig = refresh
			}
			if !tkSameSigned(raw, orig) {
				t.Fatalf("mutated %q token verified: %q", kind, raw)
			}
			if c.Subject != userName || c.Kind != kind {
				t.Fatalf("claims = %+v", c)
			}
		}
	})
}

// tkSameSigned reports whether two tokens have the same signing input and
// the same signature bytes.
func tkSameSigned(a, b string) bool {
	pa, pb := strings.Split(a, "."), strings.Split(b, ".")
	if len(pa) != 3 || len(pb) != 3 || pa[0] != pb[0] || pa[1] != pb[1] {
		return false
	}
	sa, err1 := base64.RawURLEncoding.DecodeString(pa[2])
	sb, err2 := base64.RawURLEncoding.DecodeString(pb[2])
	return err1 == nil && err2 == nil && bytes.Equal(sa, sb)
}

// A cross-repository mount copies a blob out of the "from" repository, so
// the token must cover pulling from it; otherwise the mount is dropped and
// the registry starts a normal upload (202) instead of mounting (201).
func TestTokenCrossRepoMountNeedsSourceScope(t *testing.T) {
	s := newStack(t)
	body := []byte("a blob to mount")
	dg := fmt.Sprintf("sha256:%x", sha256.Sum256(body))
	pushBlob(t, http.DefaultClient, s.sidecarURL, bytes.NewReader(body), dg) // into team/app
	mount := "/v2/dest/blobs/uploads/?mount=" + dg + "&from=team/app"
	tests := []struct {
		name   string
		scopes []string
		status int
	}{
		{"destination only", []string{"repository:dest:pull,push"}, http.StatusAccepted},
		{"source push only", []string{"repository:dest:pull,push", "repository:team/app:push"}, http.StatusAccepted},
		{"source pull", []string{"repository:dest:pull,push", "repository:team/app:pull"}, http.StatusCreated},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tok := tkToken(t, s, credAdmin, tt.scopes...)
			r := tkBearer(t, "POST", s.sidecarURL+mount, tok)
			if r.StatusCode != tt.status {
				t.Fatalf("mount: %d %s, want %d", r.StatusCode, r.body, tt.status)
			}
		})
	}
}
