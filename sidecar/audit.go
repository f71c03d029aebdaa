package sidecar

import (
	"context"
	"log/slog"
	"net/http"
	"strings"

	"github.com/mreg-dev/mreg/internal/users"
)

// Audit lines are ordinary log records with msg "audit" and an "event"
// attribute, so `jq 'select(.msg=="audit")'` filters them out of the
// stream. They carry who, from where, what and the outcome; never secrets.
const auditMsg = "audit"

// auditRequest writes the audit line for a finished state-changing
// request that succeeded.
func (s *Server) auditRequest(r *http.Request, status int, h http.Header, user string) {
	if r.Method == http.MethodGet || r.Method == http.MethodHead || status < 200 || status > 299 {
		return
	}
	repo, kind, last, ok := splitRoute(r.URL.Path)
	if !ok {
		return
	}
	attrs := []slog.Attr{
		slog.String("user", user),
		slog.String("remote", originFrom(r.Context()).client),
		slog.String("repository", repo),
		slog.String("outcome", "success"),
	}
	var event string
	switch kind {
	case routeManifests:
		ref := last
		isDigest := strings.Contains(ref, ":")
		switch r.Method {
		case http.MethodPut:
			event = "manifest.push"
			if !isDigest {
				attrs = append(attrs, slog.String("tag", ref))
			}
			attrs = append(attrs, slog.String("digest", h.Get("Docker-Content-Digest")))
		case http.MethodDelete:
			if isDigest {
				event = "manifest.delete"
				attrs = append(attrs, slog.String("digest", ref))
			} else {
				event = "tag.delete"
				attrs = append(attrs, slog.String("tag", ref))
			}
		}
	case routeUploads:
		if r.Method == http.MethodPut || (r.Method == http.MethodPost && status == http.StatusCreated) {
			// A finished upload (PUT) or a monolithic POST or a
			// cross-repository mount (201 on POST).
			event = "blob.upload"
			attrs = append(attrs, slog.String("digest", h.Get("Docker-Content-Digest")))
		}
	case routeBlobs:
		if r.Method == http.MethodDelete {
			event = "blob.delete"
			attrs = append(attrs, slog.String("digest", last))
		}
	}
	if event == "" {
		return
	}
	s.log.LogAttrs(r.Context(), slog.LevelInfo, auditMsg, append([]slog.Attr{slog.String("event", event)}, attrs...)...)
}

// auditAuthFailure writes the audit line of a failed authentication.
func (s *Server) auditAuthFailure(r *http.Request, scheme, user, reason string) {
	s.log.LogAttrs(r.Context(), slog.LevelWarn, auditMsg,
		slog.String("event", "auth.failure"),
		slog.String("scheme", scheme),
		slog.String("user", user),
		slog.String("remote", originFrom(r.Context()).client),
		slog.String("path", r.URL.Path),
		slog.String("outcome", "denied"),
		slog.String("reason", reason),
	)
}

// auditUserChanges compares two snapshots of the user store and writes a
// line per change made with manage-user (which runs in another process,
// through exec, so its own output never reaches the pod's log).
func (s *Server) auditUserChanges(ctx context.Context, before, after *users.Snapshot) {
	for _, name := range after.Names() {
		u, _ := after.Lookup(name)
		old, existed := before.Lookup(name)
		switch {
		case !existed:
			s.auditUser(ctx, "user.add", name, u.Role())
		case old.Admin != u.Admin:
			s.auditUser(ctx, "user.role", name, u.Role())
		case string(old.Hash) != string(u.Hash):
			s.auditUser(ctx, "user.password", name, u.Role())
		}
	}
	for _, name := range before.Names() {
		if _, ok := after.Lookup(name); !ok {
			s.auditUser(ctx, "user.remove", name, "")
		}
	}
}

func (s *Server) auditUser(ctx context.Context, event, name, role string) {
	s.log.LogAttrs(ctx, slog.LevelInfo, auditMsg,
		slog.String("event", event), slog.String("user", name), slog.String("role", role),
		slog.String("actor", "manage-user"), slog.String("outcome", "success"))
}
