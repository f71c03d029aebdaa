package sidecar

import (
	"fmt"
	"reflect"
	"strings"
	"testing"
)

func TestScopeParse(t *testing.T) {
	long := "repository:" + strings.Repeat("a", maxScopeLen) + ":pull"
	atLimit := "repository:" + strings.Repeat("a", maxScopeLen-len("repository::pull")) + ":pull"
	tests := []struct {
		in   string
		want Scope
		ok   bool
	}{
		{"repository:foo:pull", Scope{"repository", "foo", []string{"pull"}}, true},
		{"repository:team/app:pull,push", Scope{"repository", "team/app", []string{"pull", "push"}}, true},
		{"repository:team/app:push,pull", Scope{"repository", "team/app", []string{"push", "pull"}}, true},
		{"repository:foo:pull,pull,push,pull", Scope{"repository", "foo", []string{"pull", "push"}}, true},
		{"repository:foo:pull,,push,", Scope{"repository", "foo", []string{"pull", "push"}}, true},
		{"repository:foo: pull , push", Scope{"repository", "foo", []string{"pull", "push"}}, true},
		{"repository:foo:*", Scope{"repository", "foo", []string{"*"}}, true},
		{"repository:foo:delete", Scope{"repository", "foo", []string{"delete"}}, true},
		{"registry:catalog:*", Scope{"registry", "catalog", []string{"*"}}, true},
		{"repository:localhost:5000/foo:pull", Scope{"repository", "localhost:5000/foo", []string{"pull"}}, true},
		{"repository:[::1]:5000/foo:pull,push", Scope{"repository", "[::1]:5000/foo", []string{"pull", "push"}}, true},
		{"repository(plugin):x:pull", Scope{"repository", "x", []string{"pull"}}, true},
		{"repository(plugin):localhost:5000/x:pull", Scope{"repository", "localhost:5000/x", []string{"pull"}}, true},
		{"foo:bar:baz", Scope{"foo", "bar", []string{"baz"}}, true},
		{atLimit, Scope{"repository", strings.Repeat("a", maxScopeLen-len("repository::pull")), []string{"pull"}}, true},

		{"", Scope{}, false},
		{"repository", Scope{}, false},
		{"repository:foo", Scope{}, false},
		{"repository::pull", Scope{}, false},
		{":foo:pull", Scope{}, false},
		{"a:b:", Scope{}, false},
		{"a:b:,", Scope{}, false},
		{"a:b: , ", Scope{}, false},
		{"::", Scope{}, false},
		{":::", Scope{}, false},
		{long, Scope{}, false},
	}
	for _, tt := range tests {
		name := tt.in
		if len(name) > 60 {
			name = fmt.Sprintf("len%d", len(name))
		}
		t.Run(name, func(t *testing.T) {
			got, ok := ParseScope(tt.in)
			if ok != tt.ok {
				t.Fatalf("ParseScope(%q) ok = %v, want %v (got %+v)", tt.in, ok, tt.ok, got)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("ParseScope(%q) = %#v, want %#v", tt.in, got, tt.want)
			}
		})
	}
}

func TestScopeParseMany(t *testing.T) {
	tests := []struct {
		name   string
		params []string
		want   []Scope
	}{
		{"none", nil, nil},
		{"empty param", []string{""}, nil},
		{"one", []string{"repository:a:pull"}, []Scope{{"repository", "a", []string{"pull"}}}},
		{"several params", []string{"repository:a:pull", "repository:b:pull,push", "registry:catalog:*"},
			[]Scope{{"repository", "a", []string{"pull"}}, {"repository", "b", []string{"pull", "push"}}, {"registry", "catalog", []string{"*"}}}},
		{"space separated", []string{"repository:a:pull repository:b:push"},
			[]Scope{{"repository", "a", []string{"pull"}}, {"repository", "b", []string{"push"}}}},
		{"mixed and extra whitespace", []string{"  repository:a:pull\trepository:b:push  ", "registry:catalog:*"},
			[]Scope{{"repository", "a", []string{"pull"}}, {"repository", "b", []string{"push"}}, {"registry", "catalog", []string{"*"}}}},
		{"malformed skipped", []string{"repository repository:a:pull bogus", "a:b:", "repository::pull"},
			[]Scope{{"repository", "a", []string{"pull"}}}},
		{"port in name", []string{"repository:localhost:5000/foo:pull"},
			[]Scope{{"repository", "localhost:5000/foo", []string{"pull"}}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := ParseScopes(tt.params); !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("ParseScopes(%q) = %#v, want %#v", tt.params, got, tt.want)
			}
		})
	}
}

func TestScopeRequiredAccess(t *testing.T) {
	const dg = "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
	type want struct {
		ok      bool
		typ     string
		name    string
		action  string
		actions []string
		write   bool
	}
	pull := func(name string) want {
		return want{true, "repository", name, "pull", []string{"pull"}, false}
	}
	push := func(name string) want {
		return want{true, "repository", name, "push", []string{"pull", "push"}, true}
	}
	del := func(name string) want {
		return want{true, "repository", name, "delete", []string{"delete"}, true}
	}
	tests := []struct {
		method, path string
		want         want
	}{
		// Base.
		{"GET", "/v2/", want{ok: true}},
		{"HEAD", "/v2/", want{ok: true}},
		{"GET", "/v2", want{ok: true}},
		{"POST", "/v2/", want{ok: true, write: true}},
		{"DELETE", "/v2/", want{ok: true, write: true}},
		// Catalog.
		{"GET", "/v2/_catalog", want{true, "registry", "catalog", "*", []string{"*"}, false}},
		{"POST", "/v2/_catalog", want{true, "registry", "catalog", "*", []string{"*"}, true}},
		// Manifests.
		{"GET", "/v2/foo/manifests/latest", pull("foo")},
		{"HEAD", "/v2/team/app/manifests/" + dg, pull("team/app")},
		{"PUT", "/v2/team/app/manifests/v1", push("team/app")},
		{"DELETE", "/v2/team/app/manifests/" + dg, del("team/app")},
		// Blobs.
		{"GET", "/v2/team/app/blobs/" + dg, pull("team/app")},
		{"HEAD", "/v2/a/blobs/" + dg, pull("a")},
		{"DELETE", "/v2/a/blobs/" + dg, del("a")},
		// Uploads.
		{"POST", "/v2/team/app/blobs/uploads/", push("team/app")},
		{"PATCH", "/v2/team/app/blobs/uploads/0b7d1a5e-1c1d-4c36-9e58-1a2b3c4d5e6f", push("team/app")},
		{"PUT", "/v2/team/app/blobs/uploads/abc", push("team/app")},
		{"GET", "/v2/team/app/blobs/uploads/abc", pull("team/app")},
		{"DELETE", "/v2/team/app/blobs/uploads/abc", del("team/app")},
		// Tags and referrers.
		{"GET", "/v2/team/app/tags/list", pull("team/app")},
		{"GET", "/v2/team/app/referrers/" + dg, pull("team/app")},
		// Names with route words as components: matched from the end.
		{"GET", "/v2/a/blobs/b/manifests/latest", pull("a/blobs/b")},
		{"GET", "/v2/manifests/manifests/latest", pull("manifests")},
		{"GET", "/v2/a/manifests/b/blobs/" + dg, pull("a/manifests/b")},
		{"POST", "/v2/blobs/uploads/blobs/uploads/", push("blobs/uploads")},
		{"GET", "/v2/a/tags/list/tags/list", pull("a/tags/list")},
		{"GET", "/v2/a/referrers/x/manifests/v1", pull("a/referrers/x")},
		{"PUT", "/v2/a/blobs/uploads/x/manifests/v1", push("a/blobs/uploads/x")},
		{"GET", "/v2/localhost/5000/manifests/v1", pull("localhost/5000")},
		// Not registry routes.
		{"GET", "/", want{}},
		{"GET", "/token", want{}},
		{"GET", "/v2/foo", want{}},
		{"GET", "/v2/foo/", want{}},
		{"GET", "/v2/foo/manifests/", want{}},
		{"GET", "/v2/foo/manifests/a/b", want{}},
		{"GET", "/v2/foo/tags/list/", want{}},
		{"GET", "/v2/foo/tags", want{}},
		{"GET", "/v2//manifests/x", want{}},
		{"GET", "/v2/_catalog/", want{}},
		{"GET", "/v20/foo/manifests/x", want{}},
		{"GET", "/v2/foo/blobs/uploads/a/b", want{}},
	}
	for _, tt := range tests {
		t.Run(tt.method+" "+tt.path, func(t *testing.T) {
			n, ok := requiredAccess(tt.method, tt.path)
			if ok != tt.want.ok {
				t.Fatalf("ok = %v, want %v (need %+v)", ok, tt.want.ok, n)
			}
			if !ok {
				return
			}
			if n.scope.Type != tt.want.typ || n.scope.Name != tt.want.name || n.action != tt.want.action ||
				!reflect.DeepEqual(n.scope.Actions, tt.want.actions) || n.write != tt.want.write {
				t.Fatalf("need = {type %q name %q actions %q action %q write %v}, want {type %q name %q actions %q action %q write %v}",
					n.scope.Type, n.scope.Name, n.scope.Actions, n.action, n.write,
					tt.want.typ, tt.want.name, tt.want.actions, tt.want.action, tt.want.write)
			}
		})
	}
}

func TestScopeGrant(t *testing.T) {
	type role struct {
		name     string
		id       Identity
		anonRead bool
	}
	anon := role{"anonymous", Identity{}, false}
	anonRead := role{"anonymous+anonread", Identity{}, true}
	user := role{"user", Identity{Name: userName}, false}
	userAR := role{"user+anonread", Identity{Name: userName}, true}
	admin := role{"admin", Identity{Name: adminName, Admin: true}, false}
	roles := []role{anon, anonRead, user, userAR, admin}

	sc := func(s string) Scope {
		t.Helper()
		x, ok := ParseScope(s)
		if !ok {
			t.Fatalf("bad scope %q in test", s)
		}
		return x
	}
	tests := []struct {
		request []string
		want    map[string][]string // role name → granted, formatted
	}{
		{[]string{"repository:a:pull"}, map[string][]string{
			anon.name: nil, anonRead.name: {"repository:a:pull"}, user.name: {"repository:a:pull"},
			userAR.name: {"repository:a:pull"}, admin.name: {"repository:a:pull"}}},
		{[]string{"repository:a:push"}, map[string][]string{
			anon.name: nil, anonRead.name: nil, user.name: nil, userAR.name: nil, admin.name: {"repository:a:push"}}},
		{[]string{"repository:a:pull,push"}, map[string][]string{
			anon.name: nil, anonRead.name: {"repository:a:pull"}, user.name: {"repository:a:pull"},
			userAR.name: {"repository:a:pull"}, admin.name: {"repository:a:pull,push"}}},
		{[]string{"repository:a:push,pull"}, map[string][]string{
			anon.name: nil, anonRead.name: {"repository:a:pull"}, user.name: {"repository:a:pull"},
			userAR.name: {"repository:a:pull"}, admin.name: {"repository:a:push,pull"}}},
		{[]string{"repository:a:delete"}, map[string][]string{
			anon.name: nil, anonRead.name: nil, user.name: nil, userAR.name: nil, admin.name: {"repository:a:delete"}}},
		{[]string{"repository:a:pull,push,delete"}, map[string][]string{
			anon.name: nil, anonRead.name: {"repository:a:pull"}, user.name: {"repository:a:pull"},
			userAR.name: {"repository:a:pull"}, admin.name: {"repository:a:pull,push,delete"}}},
		// "*" on a repository is all actions: only a role with all of
		// them (admin) gets it.
		{[]string{"repository:a:*"}, map[string][]string{
			anon.name: nil, anonRead.name: nil, user.name: nil, userAR.name: nil, admin.name: {"repository:a:*"}}},
		{[]string{"registry:catalog:*"}, map[string][]string{
			anon.name: nil, anonRead.name: {"registry:catalog:*"}, user.name: {"registry:catalog:*"},
			userAR.name: {"registry:catalog:*"}, admin.name: {"registry:catalog:*"}}},
		// Only registry:catalog is a registry resource mreg grants.
		{[]string{"registry:catalog:pull"}, map[string][]string{
			anon.name: nil, anonRead.name: nil, user.name: nil, userAR.name: nil, admin.name: nil}},
		{[]string{"registry:other:*"}, map[string][]string{
			anon.name: nil, anonRead.name: nil, user.name: nil, userAR.name: nil, admin.name: nil}},
		{[]string{"foo:bar:baz"}, map[string][]string{
			anon.name: nil, anonRead.name: nil, user.name: nil, userAR.name: nil, admin.name: nil}},
		{[]string{"foo:bar:pull"}, map[string][]string{
			anon.name: nil, anonRead.name: nil, user.name: nil, userAR.name: nil, admin.name: nil}},
		{[]string{"repository:a:bogus,pull"}, map[string][]string{
			anon.name: nil, anonRead.name: {"repository:a:pull"}, user.name: {"repository:a:pull"},
			userAR.name: {"repository:a:pull"}, admin.name: {"repository:a:pull"}}},
		{[]string{"repository(plugin):p:pull"}, map[string][]string{
			anon.name: nil, anonRead.name: {"repository:p:pull"}, user.name: {"repository:p:pull"},
			userAR.name: {"repository:p:pull"}, admin.name: {"repository:p:pull"}}},
		// Several at once: each is intersected on its own, unknown ones dropped.
		{[]string{"repository:a:pull,push", "foo:bar:baz", "repository:b:pull", "registry:catalog:*", "repository:c:delete"}, map[string][]string{
			anon.name:     nil,
			anonRead.name: {"repository:a:pull", "repository:b:pull", "registry:catalog:*"},
			user.name:     {"repository:a:pull", "repository:b:pull", "registry:catalog:*"},
			userAR.name:   {"repository:a:pull", "repository:b:pull", "registry:catalog:*"},
			admin.name:    {"repository:a:pull,push", "repository:b:pull", "registry:catalog:*", "repository:c:delete"}}},
	}
	for _, tt := range tests {
		var req []Scope
		for _, s := range tt.request {
			req = append(req, sc(s))
		}
		for _, r := range roles {
			want, present := tt.want[r.name]
			if !present {
				t.Fatalf("test %q lacks role %s", tt.request, r.name)
			}
			t.Run(strings.Join(tt.request, "+")+"/"+r.name, func(t *testing.T) {
				var got []string
				for _, g := range grant(r.id, r.anonRead, req) {
					got = append(got, g.String())
				}
				if !reflect.DeepEqual(got, want) {
					t.Fatalf("grant = %q, want %q", got, want)
				}
			})
		}
	}
}

func TestScopeCovers(t *testing.T) {
	granted := []Scope{
		{"repository", "a", []string{"pull"}},
		{"repository", "b", []string{"*"}},
		{"registry", "catalog", []string{"*"}},
	}
	tests := []struct {
		method, path string
		want         bool
	}{
		{"GET", "/v2/a/manifests/x", true},
		{"PUT", "/v2/a/manifests/x", false},
		{"DELETE", "/v2/a/manifests/x", false},
		{"GET", "/v2/a/b/manifests/x", false},
		{"GET", "/v2/c/manifests/x", false},
		{"GET", "/v2/b/manifests/x", true},
		{"PUT", "/v2/b/manifests/x", true},
		{"DELETE", "/v2/b/manifests/x", true},
		{"GET", "/v2/_catalog", true},
	}
	for _, tt := range tests {
		t.Run(tt.method+" "+tt.path, func(t *testing.T) {
			n, ok := requiredAccess(tt.method, tt.path)
			if !ok {
				t.Fatal("not a route")
			}
			if got := covers(granted, n); got != tt.want {
				t.Fatalf("covers = %v, want %v", got, tt.want)
			}
		})
	}
}

func FuzzParseScope(f *testing.F) {
	for _, s := range []string{
		"repository:foo:pull", "repository:a/b:pull,push", "repository:localhost:5000/foo:pull",
		"repository(plugin):x:pull", "registry:catalog:*", "a:b:", "repository::pull", "::", ":a:b",
		"repository:foo:pull,,pull", "a(b):c:d", "x():y:z", "(x):y:z", "a:b: c ,d",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		sc, ok := ParseScope(in)
		if !ok {
			if sc.Type != "" || sc.Name != "" || sc.Actions != nil {
				t.Fatalf("ParseScope(%q) failed but returned %#v", in, sc)
			}
			return
		}
		if len(in) > maxScopeLen {
			t.Fatalf("ParseScope accepted %d bytes", len(in))
		}
		if sc.Type == "" || sc.Name == "" || len(sc.Actions) == 0 {
			t.Fatalf("ParseScope(%q) = %#v: empty part", in, sc)
		}
		seen := map[string]bool{}
		for _, a := range sc.Actions {
			if a == "" || strings.Contains(a, ",") || strings.TrimSpace(a) != a {
				t.Fatalf("ParseScope(%q): bad action %q", in, a)
			}
			if seen[a] {
				t.Fatalf("ParseScope(%q): duplicate action %q", in, a)
			}
			seen[a] = true
		}
		if strings.Contains(sc.Type, ":") || strings.Contains(sc.Actions[len(sc.Actions)-1], ":") {
			t.Fatalf("ParseScope(%q) = %#v: colon in type or action", in, sc)
		}
		if strings.ContainsAny(in[:strings.IndexByte(in, ':')], "()") {
			return // a "(class)" is dropped, so the string differs
		}
		again, ok := ParseScope(sc.String())
		if !ok || !reflect.DeepEqual(again, sc) {
			t.Fatalf("ParseScope(%q) = %#v; String() = %q re-parses to %#v, %v", in, sc, sc.String(), again, ok)
		}
	})
}
