package sidecar

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"time"
)

type ctxKey int

const identityKey ctxKey = iota

// identityFrom returns the identity the authenticate middleware stored.
func identityFrom(ctx context.Context) Identity {
	id, _ := ctx.Value(identityKey).(Identity)
	return id
}

// reqInfo is filled in by the inner middleware for the access log.
type reqInfo struct {
	user string
}

const reqInfoKey ctxKey = iota + 1

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
// header. Missing credentials leave the request anonymous; bad ones are
// answered with 401 right here.
func (s *Server) authenticate(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		header := r.Header.Get("Authorization")
		var id Identity
		if header != "" {
			user, password, err := parseBasic(header)
			if err == nil {
				id, err = s.auth.Basic(r.Context(), user, password)
			}
			if err != nil {
				s.authFailed(w, r, user, err)
				return
			}
		}
		if info, ok := r.Context().Value(reqInfoKey).(*reqInfo); ok {
			info.user = id.Name
		}
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), identityKey, id)))
	})
}

func (s *Server) authFailed(w http.ResponseWriter, r *http.Request, user string, err error) {
	switch {
	case errors.Is(err, ErrBusy):
		errTooMany().write(w, r)
	case errors.Is(err, context.Canceled):
		// The client went away while its password was being checked.
	default:
		s.log.InfoContext(r.Context(), "authentication failed",
			"user", user, "remote", r.RemoteAddr, "reason", err.Error())
		errUnauthorized(s.challenge(), "authentication required").write(w, r)
	}
}

// authorize applies role × method, then limits forwarding to /v2/.
func (s *Server) authorize(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := identityFrom(r.Context())
		if !allowed(id, required(r.Method), s.cfg.AnonymousRead) {
			if id.Anonymous() {
				errUnauthorized(s.challenge(), "authentication required").write(w, r)
				return
			}
			errDenied("requested access to the resource is denied").write(w, r)
			return
		}
		if !isRegistryPath(r.URL.Path) {
			errNotFound(r.URL.Path).write(w, r)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// challenge is the WWW-Authenticate value of 401 responses.
func (s *Server) challenge() string {
	return `Basic realm="` + s.cfg.Realm + `"`
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

// accessLog writes one line per request. It logs the path only: query
// strings of upload URLs carry state tokens.
func (s *Server) accessLog(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		info := &reqInfo{}
		sw := &statusWriter{ResponseWriter: w}
		next.ServeHTTP(sw, r.WithContext(context.WithValue(r.Context(), reqInfoKey, info)))
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
			slog.String("user", info.user),
			slog.String("remote", r.RemoteAddr),
			slog.String("proto", r.Proto),
		)
	})
}
