package sidecar

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
)

type cred struct {
	name       string
	user, pass string
}

var (
	credAnon      = cred{name: "anonymous"}
	credWrongPass = cred{name: "wrong-password", user: userName, pass: "nope"}
	credUnknown   = cred{name: "unknown-user", user: "mallory", pass: "whatever"}
	credUser      = cred{name: "user", user: userName, pass: userPassword}
	credAdmin     = cred{name: "admin", user: adminName, pass: adminPassword}
)

// outcome is what the sidecar does with a request.
type outcome int

const (
	forwarded  outcome = iota // reached the registry
	unauth                    // 401 from the sidecar
	denied                    // 403 from the sidecar
	notAllowed                // 405 from the sidecar
)

func (o outcome) String() string {
	return [...]string{"forwarded", "401", "403", "405"}[o]
}

// expected is the authorization matrix of the design.
func expected(c cred, method string, anonymousRead bool) outcome {
	switch method {
	case http.MethodGet, http.MethodHead:
	case http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete:
	default:
		return notAllowed
	}
	switch c {
	case credAnon:
		if anonymousRead && (method == http.MethodGet || method == http.MethodHead) {
			return forwarded
		}
		return unauth
	case credWrongPass, credUnknown:
		return unauth
	case credUser:
		if method == http.MethodGet || method == http.MethodHead {
			return forwarded
		}
		return denied
	}
	return forwarded
}

func TestAuthorizationMatrix(t *testing.T) {
	creds := []cred{credAnon, credWrongPass, credUnknown, credUser, credAdmin}
	methods := []string{"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"}
	paths := map[string]string{
		"base":      "/v2/",
		"catalog":   "/v2/_catalog",
		"manifests": "/v2/team/app/manifests/latest",
		"blobs":     "/v2/team/app/blobs/sha256:" + strings.Repeat("a", 64),
		"uploads":   "/v2/team/app/blobs/uploads/",
		"tags":      "/v2/team/app/tags/list",
	}
	for _, mode := range []string{AuthBasic, AuthToken} {
		for _, anonymousRead := range []bool{false, true} {
			opts := []stackOpt{func(c *Config) { c.AuthMode = mode }}
			if anonymousRead {
				opts = append(opts, withAnonymousRead)
			}
			s := newStack(t, opts...)
			for _, c := range creds {
				for _, m := range methods {
					for pname, path := range paths {
						name := fmt.Sprintf("%s/anon=%v/%s/%s/%s", mode, anonymousRead, c.name, m, pname)
						t.Run(name, func(t *testing.T) {
							want := expected(c, m, anonymousRead)
							before := s.upstreamHit.Load()
							resp := doReq(t, m, s.sidecarURL+path, c)
							reached := s.upstreamHit.Load() > before
							checkOutcome(t, resp, want, reached)
							if ch := resp.Header.Get("WWW-Authenticate"); want == unauth && (mode == AuthBasic) != strings.HasPrefix(ch, "Basic ") {
								t.Errorf("mode %s: challenge %q", mode, ch)
							}
						})
					}
				}
			}
		}
	}
}

func doReq(t *testing.T, method, url string, c cred) *http.Response {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if c.user != "" {
		req.SetBasicAuth(c.user, c.pass)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return resp
}

func checkOutcome(t *testing.T, resp *http.Response, want outcome, reached bool) {
	t.Helper()
	if want == forwarded {
		if !reached {
			t.Fatalf("status %d: request did not reach the registry", resp.StatusCode)
		}
		// The registry has no auth of its own: a 401 or 403 can only
		// have come from the sidecar. (405 can be the registry's answer.)
		if resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden {
			t.Fatalf("forwarded request answered %d", resp.StatusCode)
		}
		return
	}
	if reached {
		t.Fatalf("want %v, but the request reached the registry (status %d)", want, resp.StatusCode)
	}
	wantStatus := map[outcome]int{unauth: 401, denied: 403, notAllowed: 405}[want]
	wantCode := map[outcome]string{unauth: "UNAUTHORIZED", denied: "DENIED", notAllowed: "UNSUPPORTED"}[want]
	if resp.StatusCode != wantStatus {
		t.Fatalf("status = %d, want %d", resp.StatusCode, wantStatus)
	}
	if got := resp.Header.Get("Docker-Distribution-API-Version"); got != "registry/2.0" {
		t.Errorf("Docker-Distribution-API-Version = %q", got)
	}
	ch := resp.Header.Get("WWW-Authenticate")
	if want == unauth && ch != `Basic realm="mreg"` && !strings.HasPrefix(ch, `Bearer realm="http://127.0.0.1:`) {
		t.Errorf("WWW-Authenticate = %q", ch)
	}
	if want != unauth && ch != "" {
		t.Errorf("unexpected WWW-Authenticate %q on %d", ch, resp.StatusCode)
	}
	if want == notAllowed && resp.Header.Get("Allow") == "" {
		t.Error("405 without Allow header")
	}
	if resp.Request.Method == http.MethodHead {
		return
	}
	checkEnvelope(t, resp.Body, wantCode)
}

// checkEnvelope decodes the registry JSON error envelope and checks its code.
func checkEnvelope(t *testing.T, body io.Reader, wantCode string) {
	t.Helper()
	var env struct {
		Errors []struct {
			Code    string          `json:"code"`
			Message string          `json:"message"`
			Detail  json.RawMessage `json:"detail"`
		} `json:"errors"`
	}
	if err := json.NewDecoder(body).Decode(&env); err != nil {
		t.Fatalf("error body is not the registry envelope: %v", err)
	}
	if len(env.Errors) != 1 || env.Errors[0].Code != wantCode || env.Errors[0].Message == "" {
		t.Fatalf("envelope = %+v, want one error with code %s", env, wantCode)
	}
}

func TestNonRegistryPathsNotForwarded(t *testing.T) {
	s := newStack(t)
	for _, path := range []string{"/", "/debug/pprof/", "/metrics", "/v20/x"} {
		t.Run(path, func(t *testing.T) {
			before := s.upstreamHit.Load()
			resp := doReq(t, "GET", s.sidecarURL+path, credAnon)
			if resp.StatusCode != 401 {
				t.Errorf("anonymous %s: %d, want 401", path, resp.StatusCode)
			}
			resp = doReq(t, "GET", s.sidecarURL+path, credAdmin)
			if resp.StatusCode != 404 {
				t.Errorf("admin %s: %d, want 404", path, resp.StatusCode)
			}
			if s.upstreamHit.Load() != before {
				t.Errorf("%s reached the registry", path)
			}
		})
	}
}
