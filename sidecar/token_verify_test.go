package sidecar

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

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
