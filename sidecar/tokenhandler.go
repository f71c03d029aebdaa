package sidecar

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// tokenPath is the token endpoint, advertised as the realm of challenges.
const tokenPath = "/token"

// maxTokenForm bounds a POST body to the token endpoint.
const maxTokenForm = 16 << 10

// tokenResponse is the token spec's answer (both GET and OAuth2 POST).
type tokenResponse struct {
	Token        string `json:"token,omitempty"`
	AccessToken  string `json:"access_token"`
	ExpiresIn    int    `json:"expires_in"`
	IssuedAt     string `json:"issued_at"`
	RefreshToken string `json:"refresh_token,omitempty"`
	Scope        string `json:"scope,omitempty"`
}

// oauthError is the OAuth2 error body of the POST form.
type oauthError struct {
	Error       string `json:"error"`
	Description string `json:"error_description,omitempty"`
}

// serveToken implements the CNCF Distribution token endpoint: GET with
// Basic or no credentials, POST with the OAuth2 password and refresh_token
// grants. Granted access is what was asked ∩ what the role allows.
func (s *Server) serveToken(w http.ResponseWriter, r *http.Request) {
	switch r.Method {
	case http.MethodGet:
		s.tokenGET(w, r)
	case http.MethodPost:
		s.tokenPOST(w, r)
	default:
		errMethod(r.Method).write(w, r)
	}
}

func (s *Server) tokenGET(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	if svc := q.Get("service"); svc != "" && svc != s.tokens.opts.Service {
		(&regError{status: http.StatusBadRequest, code: codeUnsupported, message: "unknown service",
			detail: map[string]string{"service": svc}}).write(w, r)
		return
	}
	var id Identity
	if h := r.Header.Get("Authorization"); h != "" {
		user, password, err := parseBasic(h)
		if err == nil {
			id, err = s.login(r, user, password)
		}
		if err != nil {
			s.loginFailed(r, user, err).write(w, r)
			return
		}
	}
	if acct := q.Get("account"); acct != "" && !id.Anonymous() && acct != id.Name {
		(&regError{status: http.StatusBadRequest, code: codeDenied, message: "account does not match the credentials"}).write(w, r)
		return
	}
	stateFrom(r.Context()).id = id // for the access log
	granted := grant(id, s.cfg.AnonymousRead, ParseScopes(q["scope"]))
	resp, err := s.tokenFor(r.Context(), id, granted, q.Get("offline_token") == "true")
	if err != nil {
		s.log.ErrorContext(r.Context(), "issue token", "err", err)
		(&regError{status: http.StatusInternalServerError, code: "UNKNOWN", message: "could not issue token"}).write(w, r)
		return
	}
	resp.Token = resp.AccessToken
	s.metrics.tokenIssued("get")
	writeJSON(w, http.StatusOK, resp)
}

func (s *Server) tokenPOST(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, maxTokenForm)
	if err := r.ParseForm(); err != nil {
		writeJSON(w, http.StatusBadRequest, oauthError{Error: "invalid_request", Description: "bad form"})
		return
	}
	f := r.PostForm
	if svc := f.Get("service"); svc != "" && svc != s.tokens.opts.Service {
		writeJSON(w, http.StatusBadRequest, oauthError{Error: "invalid_request", Description: "unknown service"})
		return
	}
	var (
		id      Identity
		refresh bool
	)
	switch f.Get("grant_type") {
	case "password":
		user := f.Get("username")
		var err error
		if id, err = s.login(r, user, f.Get("password")); err != nil {
			rerr := s.loginFailed(r, user, err)
			if rerr.status == http.StatusTooManyRequests {
				w.Header().Set("Retry-After", rerr.header.Get("Retry-After"))
				writeJSON(w, http.StatusTooManyRequests, oauthError{Error: "slow_down"})
				return
			}
			writeJSON(w, http.StatusBadRequest, oauthError{Error: "invalid_grant", Description: "invalid username or password"})
			return
		}
		refresh = f.Get("access_type") == "offline"
	case "refresh_token":
		var err error
		if id, err = s.refreshIdentity(r, f.Get("refresh_token")); err != nil {
			s.metrics.authResult("refresh_token", "invalid_token")
			s.auditAuthFailure(r, "refresh_token", "", err.Error())
			writeJSON(w, http.StatusBadRequest, oauthError{Error: "invalid_grant", Description: "invalid refresh token"})
			return
		}
		refresh = true
	default:
		writeJSON(w, http.StatusBadRequest, oauthError{Error: "unsupported_grant_type"})
		return
	}
	stateFrom(r.Context()).id = id // for the access log
	granted := grant(id, s.cfg.AnonymousRead, ParseScopes(f["scope"]))
	resp, err := s.tokenFor(r.Context(), id, granted, refresh)
	if err != nil {
		s.log.ErrorContext(r.Context(), "issue token", "err", err)
		writeJSON(w, http.StatusInternalServerError, oauthError{Error: "server_error"})
		return
	}
	if f.Get("grant_type") == "refresh_token" {
		// The client keeps its refresh token; a new one is not needed.
		resp.RefreshToken = ""
	}
	s.metrics.tokenIssued(f.Get("grant_type"))
	writeJSON(w, http.StatusOK, resp)
}

// refreshIdentity checks a refresh token: signature, expiry, and that its
// user still exists with the password it had. The role is the current
// one, so removal or demotion cannot be bypassed with a refresh token.
func (s *Server) refreshIdentity(r *http.Request, raw string) (Identity, error) {
	c, err := s.tokens.verify(raw, kindRefresh)
	if err != nil {
		return Identity{}, err
	}
	snap, err := s.auth.Store().Current(r.Context())
	if err != nil {
		s.log.WarnContext(r.Context(), "user store reload failed, using previous state", "err", err)
	}
	u, ok := snap.Lookup(c.Subject)
	if !ok || c.Subject == "" {
		return Identity{}, errors.New("refresh token of a removed user")
	}
	if passwordFingerprint(u.Hash) != c.PasswordFP {
		return Identity{}, errors.New("password changed since the refresh token was issued")
	}
	return Identity{Name: u.Name, Admin: u.Admin}, nil
}

func (s *Server) tokenFor(ctx context.Context, id Identity, granted []Scope, withRefresh bool) (tokenResponse, error) {
	tok, issued, err := s.tokens.issue(id.Name, granted)
	if err != nil {
		return tokenResponse{}, err
	}
	scopes := make([]string, 0, len(granted))
	for _, g := range granted {
		scopes = append(scopes, g.String())
	}
	resp := tokenResponse{
		AccessToken: tok,
		ExpiresIn:   int(s.tokens.opts.TTL / time.Second),
		IssuedAt:    issued.UTC().Format(time.RFC3339),
		Scope:       strings.Join(scopes, " "),
	}
	if withRefresh && !id.Anonymous() {
		snap, _ := s.auth.Store().Current(ctx)
		if u, ok := snap.Lookup(id.Name); ok {
			if resp.RefreshToken, err = s.tokens.issueRefresh(id.Name, u.Hash); err != nil {
				return tokenResponse{}, err
			}
		}
	}
	return resp, nil
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, _ := json.Marshal(v)
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	h.Set("Content-Length", strconv.Itoa(len(b)+1))
	w.WriteHeader(status)
	_, _ = w.Write(append(b, '\n'))
}
