package sidecar

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"time"
)

type ctxKey int

const stateKey ctxKey = 0

// reqState is what the middleware learns about a request: stored once in
// its context by withOrigin (one request copy per request, not one per
// middleware) and filled in as the request goes down the chain.
type reqState struct {
	origin origin   // set by withOrigin
	id     Identity // set by authenticate or the token endpoint
}

func stateFrom(ctx context.Context) *reqState {
	if st, ok := ctx.Value(stateKey).(*reqState); ok {
		return st
	}
	return &reqState{}
}

// identityFrom returns the identity the authenticate middleware stored.
func identityFrom(ctx context.Context) Identity { return stateFrom(ctx).id }

// methods refuses methods the registry API does not use, before any
// credential check: they are answered the same for everyone.
func (s *Server) methods(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if required(r.Method) == accessNone {
			errMethod(r.Method).write(w, r)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// authenticate resolves the request's identity from its Authorization
// header: Basic (always accepted, so curl scripts work in token mode too)
// or a Bearer token this sidecar issued. Missing credentials leave the
// request anonymous; bad ones are answered with 401 right here.
func (s *Server) authenticate(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id, rerr := s.identify(r)
		if rerr != nil {
			rerr.write(w, r)
			return
		}
		stateFrom(r.Context()).id = id
		next.ServeHTTP(w, r)
	})
}

func (s *Server) identify(r *http.Request) (Identity, *regError) {
	header := r.Header.Get("Authorization")
	if header == "" {
		return Identity{}, nil
	}
	scheme, rest, _ := strings.Cut(header, " ")
	if strings.EqualFold(scheme, "Bearer") && s.tokens != nil {
		id, err := s.bearer(r.Context(), strings.TrimSpace(rest))
		if err != nil {
			s.metrics.authResult("bearer", "invalid_token")
			s.auditAuthFailure(r, "bearer", "", err.Error())
			n, _ := requiredAccess(r.Method, r.URL.Path)
			return Identity{}, errUnauthorized(s.challenge(r, n, "invalid_token"), "invalid or expired token")
		}
		s.metrics.authResult("bearer", "ok")
		return id, nil
	}
	user, password, err := parseBasic(header)
	if err == nil {
		var id Identity
		if id, err = s.login(r, user, password); err == nil {
			return id, nil
		}
	}
	return Identity{}, s.loginFailed(r, user, err)
}

// login verifies a password; the one place every password check goes
// through (request path and token endpoint alike).
// The brute-force throttle comes first, even for a credential that is
// cached: otherwise a throttled address could keep guessing and tell a
// right guess (200 from the cache) from a wrong one (429) at full speed.
func (s *Server) login(r *http.Request, user, password string) (Identity, error) {
	ctx := r.Context()
	addr := originFrom(ctx).client
	if wait, ok := s.throttle.Check(addr, user); !ok {
		return Identity{}, &throttledError{wait: wait}
	}
	id, err := s.auth.Basic(ctx, user, password)
	switch {
	case err == nil:
		s.throttle.Success(addr, user)
		s.metrics.authResult("basic", "ok")
	case errors.Is(err, ErrBadCredentials):
		s.throttle.Failure(addr, user)
	}
	return id, err
}

// throttledError: the brute-force throttle refused the attempt.
type throttledError struct{ wait time.Duration }

func (e *throttledError) Error() string { return "too many failed logins from this address" }

// loginFailed logs a failed login (user and address, never the password)
// and returns the answer for it.
func (s *Server) loginFailed(r *http.Request, user string, err error) *regError {
	var te *throttledError
	switch {
	case errors.As(err, &te):
		s.metrics.authResult("basic", "throttled")
		s.metrics.throttle()
		s.auditAuthFailure(r, "basic", user, err.Error())
		return errThrottled(te.wait)
	case errors.Is(err, ErrBusy):
		s.metrics.authResult("basic", "busy")
		return errTooMany()
	case errors.Is(err, context.Canceled):
		// The client went away while its password was being checked.
		return &regError{status: 499, code: codeUnauthorized, message: "client went away"}
	}
	s.metrics.authResult("basic", "bad_credentials")
	s.auditAuthFailure(r, "basic", user, err.Error())
	n, _ := requiredAccess(r.Method, r.URL.Path)
	return errUnauthorized(s.challenge(r, n, ""), "authentication required")
}

// bearer verifies an access token. The user must still exist, and its
// current role bounds what the token grants: removal and demotion are in
// force on the next request, not only when the token expires.
func (s *Server) bearer(ctx context.Context, raw string) (Identity, error) {
	c, err := s.tokens.verify(raw, kindAccess)
	if err != nil {
		return Identity{}, err
	}
	id := Identity{Name: c.Subject, Bearer: true, Scopes: c.scopes()}
	if c.Subject == "" {
		return id, nil
	}
	snap, err := s.auth.Store().Current(ctx)
	if err != nil {
		s.log.WarnContext(ctx, "user store reload failed, using previous state", "err", err)
	}
	u, ok := snap.Lookup(c.Subject)
	if !ok {
		return Identity{}, errors.New("token subject is no longer a user")
	}
	id.Admin = u.Admin
	return id, nil
}

// decide is the authorization decision for an identified request.
func (s *Server) decide(id Identity, n need) bool {
	if n.write && (id.Anonymous() || !id.Admin) {
		return false
	}
	if n.scope.Type == "" { // the /v2/ base: any valid identity
		return !id.Anonymous() || id.Bearer || s.cfg.AnonymousRead
	}
	role := roleActions(id, s.cfg.AnonymousRead, n.scope.Type, n.scope.Name)
	roleOK := slices.Contains(role, n.action)
	if !id.Bearer {
		return roleOK
	}
	return roleOK && covers(id.Scopes, n)
}

// authorize applies the decision. Refusals: 401 with a challenge for
// anonymous requests and for tokens that lack a scope the role would allow
// (the token spec's insufficient_scope, so the client fetches a better
// token), 403 DENIED when the user's role does not allow it at all.
func (s *Server) authorize(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := identityFrom(r.Context())
		n, ok := requiredAccess(r.Method, r.URL.Path)
		if !ok {
			if id.Anonymous() && !s.cfg.AnonymousRead && !id.Bearer {
				errUnauthorized(s.challenge(r, need{}, ""), "authentication required").write(w, r)
				return
			}
			errNotFound(r.URL.Path).write(w, r)
			return
		}
		if !s.decide(id, n) {
			switch {
			case id.Bearer && s.decide(Identity{Name: id.Name, Admin: id.Admin}, n):
				// The role allows it, the token does not cover it: the
				// client asks for a token with this scope and retries.
				errUnauthorized(s.challenge(r, n, "insufficient_scope"), "insufficient scope").write(w, r)
			case id.Anonymous():
				errUnauthorized(s.challenge(r, n, ""), "authentication required").write(w, r)
			default:
				errDenied("requested access to the resource is denied").write(w, r)
			}
			return
		}
		s.guardMount(r, id)
		next.ServeHTTP(w, r)
	})
}

// guardMount drops a cross-repository blob mount (?mount=…&from=REPO) when
// the identity may not pull from REPO, so a push cannot copy a blob out of a
// repository it cannot read; the registry then starts a normal upload.
func (s *Server) guardMount(r *http.Request, id Identity) {
	if r.Method != http.MethodPost {
		return
	}
	q := r.URL.Query()
	from := q.Get("from")
	if from == "" {
		return
	}
	n := need{scope: Scope{Type: typeRepository, Name: from, Actions: []string{actionPull}}, action: actionPull}
	if s.decide(id, n) {
		return
	}
	q.Del("mount")
	q.Del("from")
	r.URL.RawQuery = q.Encode()
}

// challenge is the WWW-Authenticate value of a 401 for a request needing n.
func (s *Server) challenge(r *http.Request, n need, errCode string) string {
	// The token endpoint itself takes Basic credentials.
	if s.tokens == nil || s.cfg.AuthMode == AuthBasic || r.URL.Path == tokenPath {
		return `Basic realm="` + s.cfg.Realm + `"`
	}
	var b strings.Builder
	b.WriteString(`Bearer realm="`)
	b.WriteString(originFrom(r.Context()).baseURL())
	b.WriteString(`/token",service="`)
	b.WriteString(s.tokens.opts.Service)
	b.WriteString(`"`)
	if n.scope.Type != "" {
		b.WriteString(`,scope="`)
		b.WriteString(n.scope.String())
		b.WriteString(`"`)
	}
	if errCode != "" {
		b.WriteString(`,error="`)
		b.WriteString(errCode)
		b.WriteString(`"`)
	}
	return b.String()
}

// statusWriter records status and size for the access log. It forwards
// Flush (streaming) and Unwrap (http.ResponseController).
type statusWriter struct {
	http.ResponseWriter
	status int
	bytes  int64
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	n, err := w.ResponseWriter.Write(b)
	w.bytes += int64(n)
	return n, err
}

func (w *statusWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// ReadFrom passes the underlying writer's ReadFrom through (it splices
// socket to socket), counting the bytes.
func (w *statusWriter) ReadFrom(src io.Reader) (int64, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	var n int64
	var err error
	if rf, ok := w.ResponseWriter.(io.ReaderFrom); ok {
		n, err = rf.ReadFrom(src)
	} else {
		n, err = io.Copy(w.ResponseWriter, src)
	}
	w.bytes += n
	return n, err
}

// accessLog writes one line per request. It logs the path only: query
// strings of upload URLs carry state tokens.
func (s *Server) accessLog(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		sw := &statusWriter{ResponseWriter: w}
		next.ServeHTTP(sw, r)
		user := identityFrom(r.Context()).Name
		s.metrics.observe(r, sw.status, r.ContentLength, sw.bytes, time.Since(start))
		s.auditRequest(r, sw.status, sw.Header(), user)
		if !s.log.Enabled(r.Context(), slog.LevelInfo) {
			return
		}
		s.log.LogAttrs(r.Context(), slog.LevelInfo, "request",
			slog.String("method", r.Method),
			slog.String("path", r.URL.Path),
			slog.Int("status", sw.status),
			slog.Int64("bytes_out", sw.bytes),
			slog.Int64("bytes_in", r.ContentLength),
			slog.Float64("ms", float64(time.Since(start).Microseconds())/1000),
			slog.String("user", user),
			slog.String("remote", originFrom(r.Context()).client),
			slog.String("proto", r.Proto),
		)
	})
}
