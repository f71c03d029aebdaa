package sidecar

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"

	"github.com/mreg-dev/mreg/internal/users"
)

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
