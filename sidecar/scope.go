package sidecar

import (
	"slices"
	"strings"
)

// Actions of the token specification.
const (
	actionPull   = "pull"
	actionPush   = "push"
	actionDelete = "delete"
	actionAll    = "*"
)

// Resource types of the token specification that mreg grants.
const (
	typeRepository = "repository"
	typeRegistry   = "registry"
	catalogName    = "catalog"
)

// Scope is one resource scope, "type:name:action[,action…]".
type Scope struct {
	Type    string
	Name    string
	Actions []string
}

// String formats s as in a scope parameter or challenge.
func (s Scope) String() string {
	return s.Type + ":" + s.Name + ":" + strings.Join(s.Actions, ",")
}

// maxScopeLen bounds a single scope; repository names are at most 255.
const maxScopeLen = 512

// ParseScope parses "type:name:actions". The name may itself contain
// colons (a registry host with a port), so type ends at the first colon
// and the actions start after the last. A "(class)" suffix on the type
// (repository(plugin)) is dropped. ok is false for malformed input.
func ParseScope(s string) (Scope, bool) {
	if len(s) > maxScopeLen {
		return Scope{}, false
	}
	i, j := strings.IndexByte(s, ':'), strings.LastIndexByte(s, ':')
	if i <= 0 || j <= i+1 || j == len(s)-1 {
		return Scope{}, false
	}
	typ := s[:i]
	if k := strings.IndexByte(typ, '('); k > 0 && strings.HasSuffix(typ, ")") {
		typ = typ[:k]
	}
	var actions []string
	for _, a := range strings.Split(s[j+1:], ",") {
		if a = strings.TrimSpace(a); a != "" && !slices.Contains(actions, a) {
			actions = append(actions, a)
		}
	}
	if len(actions) == 0 {
		return Scope{}, false
	}
	return Scope{Type: typ, Name: s[i+1 : j], Actions: actions}, true
}

// ParseScopes parses scope parameters, each of which may hold several
// space-separated scopes (the OAuth2 form). Malformed scopes are skipped.
func ParseScopes(params []string) []Scope {
	var out []Scope
	for _, p := range params {
		for _, f := range strings.Fields(p) {
			if sc, ok := ParseScope(f); ok {
				out = append(out, sc)
			}
		}
	}
	return out
}

// Route kinds of the registry API below a repository name.
const (
	routeManifests = "manifests"
	routeBlobs     = "blobs"
	routeUploads   = "uploads"
	routeTags      = "tags"
	routeReferrers = "referrers"
)

// splitRoute splits a registry API path into repository name, route kind
// and the last segment (reference, digest or upload id), matching from the
// end as Distribution's router does, so that a name containing "blobs" or
// "manifests" as a component is handled right. It runs on every request,
// so it is plain string work rather than a regular expression.
func splitRoute(path string) (name, kind, last string, ok bool) {
	p, found := strings.CutPrefix(path, "/v2/")
	if !found || strings.IndexByte(p, '\n') >= 0 {
		return "", "", "", false
	}
	if n, found := strings.CutSuffix(p, "/tags/list"); found && n != "" {
		return n, routeTags, "", true
	}
	i := strings.LastIndexByte(p, '/')
	if i <= 0 {
		return "", "", "", false
	}
	head, last := p[:i], p[i+1:]
	if n, found := strings.CutSuffix(head, "/blobs/uploads"); found && n != "" {
		return n, routeUploads, last, true
	}
	if last == "" {
		return "", "", "", false
	}
	for _, kind := range []string{routeManifests, routeBlobs, routeReferrers} {
		if n, found := strings.CutSuffix(head, "/"+kind); found && n != "" {
			return n, kind, last, true
		}
	}
	return "", "", "", false
}

// need is the access a request requires: nothing beyond authentication
// (the /v2/ base), or one action on one resource.
type need struct {
	scope  Scope // zero for the base endpoint
	action string
	// write: the method changes state (POST, PUT, PATCH, DELETE), which
	// only admins may do, whatever the path.
	write bool
}

// requiredAccess maps a registry API request to the access it needs; ok is
// false for paths that are not registry API routes.
func requiredAccess(method, path string) (need, bool) {
	write := required(method) == accessWrite
	if path == "/v2/" || path == "/v2" {
		return need{write: write}, true
	}
	if path == "/v2/_catalog" {
		return need{scope: Scope{Type: typeRegistry, Name: catalogName, Actions: []string{actionAll}}, action: actionAll, write: write}, true
	}
	name, _, _, ok := splitRoute(path)
	if !ok {
		return need{}, false
	}
	action := actionPull
	actions := []string{actionPull}
	switch method {
	case "POST", "PUT", "PATCH":
		action, actions = actionPush, []string{actionPull, actionPush}
	case "DELETE":
		action, actions = actionDelete, []string{actionDelete}
	}
	return need{scope: Scope{Type: typeRepository, Name: name, Actions: actions}, action: action, write: write}, true
}

// roleActions is what a role may do on a resource; the granted access is
// the intersection of this and what was asked.
func roleActions(id Identity, anonymousRead bool, typ, name string) []string {
	switch {
	case typ == typeRepository && !id.Anonymous() && id.Admin:
		return []string{actionPull, actionPush, actionDelete}
	case typ == typeRepository && (!id.Anonymous() || anonymousRead):
		return []string{actionPull}
	case typ == typeRegistry && name == catalogName && (!id.Anonymous() || anonymousRead):
		return []string{actionAll}
	}
	return nil
}

// grant intersects the requested scopes with what id may do. Unknown
// resource types are ignored, not errors.
func grant(id Identity, anonymousRead bool, requested []Scope) []Scope {
	var out []Scope
	for _, sc := range requested {
		allowed := roleActions(id, anonymousRead, sc.Type, sc.Name)
		var got []string
		for _, a := range sc.Actions {
			if slices.Contains(allowed, a) || (a == actionAll && sc.Type == typeRepository && len(allowed) == 3) {
				got = append(got, a)
			}
		}
		if len(got) > 0 {
			out = append(out, Scope{Type: sc.Type, Name: sc.Name, Actions: got})
		}
	}
	return out
}

// covers reports whether the granted scopes include action on the
// resource of n ("*" covers every action).
func covers(granted []Scope, n need) bool {
	for _, g := range granted {
		if g.Type == n.scope.Type && g.Name == n.scope.Name &&
			(slices.Contains(g.Actions, n.action) || slices.Contains(g.Actions, actionAll)) {
			return true
		}
	}
	return false
}
