package sidecar

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"path/filepath"
	"reflect"
	"strings"
	"sync/atomic"
	"testing"
	"time"

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
