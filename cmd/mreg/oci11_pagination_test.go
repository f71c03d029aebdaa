package main

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/url"
	"reflect"
	"regexp"
	"strconv"
	"testing"
)

// ociLink returns the target of a Link header with rel="next", "" without one.
func ociLink(t *testing.T, h http.Header) string {
	t.Helper()
	l := h.Get("Link")
	if l == "" {
		return ""
	}
	m := regexp.MustCompile(`^<([^>]+)>;\s*rel="next"$`).FindStringSubmatch(l)
	if m == nil {
		t.Fatalf("Link header %q is not <url>; rel=\"next\"", l)
	}
	return m[1]
}

// ociPage is one page of a catalog or tag list.
type ociPage struct {
	items []string
	raw   string // the list's JSON as sent ("[]", "null", …)
	next  string // the Link target
}

func (a *ociAPI) page(cred ociCred, path, field string) ociPage {
	a.t.Helper()
	resp, body := a.expect(http.StatusOK, cred, "GET", path, nil)
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(body, &raw); err != nil {
		a.t.Fatalf("GET %s: %v\n%s", path, err, body)
	}
	pg := ociPage{raw: string(raw[field]), next: ociLink(a.t, resp.Header)}
	if err := json.Unmarshal(raw[field], &pg.items); err != nil {
		a.t.Fatalf("GET %s: %s: %v\n%s", path, field, err, body)
	}
	return pg
}

// walk follows Link headers from path and returns everything listed, and
// fails when a page holds more than n entries or a page repeats.
func (a *ociAPI) walk(cred ociCred, path, field string, n int) []string {
	a.t.Helper()
	var all []string
	seen := map[string]bool{}
	for pages := 0; path != ""; pages++ {
		if seen[path] || pages > 50 {
			a.t.Fatalf("pagination loops at %s", path)
		}
		seen[path] = true
		pg := a.page(cred, path, field)
		if len(pg.items) > n {
			a.t.Errorf("GET %s: %d entries, more than n=%d", path, len(pg.items), n)
		}
		if pg.next != "" && len(pg.items) < n {
			a.t.Errorf("GET %s: %d entries with a Link header: the spec allows fewer than n only at the end", path, len(pg.items))
		}
		if pg.next != "" {
			u, err := url.Parse(pg.next)
			if err != nil || u.Query().Get("n") != strconv.Itoa(n) || (len(pg.items) > 0 && u.Query().Get("last") != pg.items[len(pg.items)-1]) {
				a.t.Errorf("GET %s: Link %q: want n=%d and last=<the page's last entry> (%v)", path, pg.next, n, err)
			}
		}
		all = append(all, pg.items...)
		path = pg.next
	}
	return all
}

// TestOCIPagination: catalog and tag lists through the sidecar, with n,
// last and Link headers as the distribution spec describes, and empty
// repositories.
func TestOCIPagination(t *testing.T) {
	p := startPair(t)
	admin, alice := ociUsers(t, p)
	a := ociNewAPI(t, p.host)

	tags := []string{"1.0", "latest", "v1", "v2", "v3"} // lexical (ASCII) order
	first := a.pushImage(admin, "pag/r1", tags[0], "r1")
	for _, tag := range tags[1:] {
		a.mustPutManifest(admin, "pag/r1", tag, first.m)
	}
	for _, r := range []string{"pag/r2", "pag/r3", "pag/r4", "pag/r5"} {
		a.pushImage(admin, r, "latest", r)
	}
	a.pushImage(admin, "pag/digest-only", "", "digest only")
	a.pushImage(admin, "pag/untagged", "gone", "untagged")
	a.expect(http.StatusAccepted, admin, "DELETE", "/v2/pag/untagged/manifests/gone", nil)
	repos := []string{"pag/digest-only", "pag/r1", "pag/r2", "pag/r3", "pag/r4", "pag/r5", "pag/untagged"}

	t.Run("catalog", func(t *testing.T) {
		a := *a
		a.t = t
		pg := a.page(alice, "/v2/_catalog?n=2", "repositories")
		if !reflect.DeepEqual(pg.items, repos[:2]) {
			t.Errorf("first page %v, want %v", pg.items, repos[:2])
		}
		if want := "/v2/_catalog?last=" + url.QueryEscape(repos[1]) + "&n=2"; pg.next != want {
			t.Errorf("first Link %q, want %q", pg.next, want)
		}
		if got := a.walk(alice, "/v2/_catalog?n=2", "repositories", 2); !reflect.DeepEqual(got, repos) {
			t.Errorf("catalog by pages of 2: %v, want %v", got, repos)
		}
		if got := a.walk(alice, "/v2/_catalog?n=3", "repositories", 3); !reflect.DeepEqual(got, repos) {
			t.Errorf("catalog by pages of 3: %v, want %v", got, repos)
		}
		if pg := a.page(alice, "/v2/_catalog", "repositories"); !reflect.DeepEqual(pg.items, repos) || pg.next != "" {
			t.Errorf("catalog without n: %v, Link %q", pg.items, pg.next)
		}
		// last is exclusive: the list starts after it.
		if pg := a.page(alice, "/v2/_catalog?last=pag/r3", "repositories"); !reflect.DeepEqual(pg.items, repos[4:]) || pg.next != "" {
			t.Errorf("catalog last=pag/r3: %v, Link %q, want %v", pg.items, pg.next, repos[4:])
		}
		if pg := a.page(alice, "/v2/_catalog?n=2&last=pag/r3", "repositories"); !reflect.DeepEqual(pg.items, repos[4:6]) {
			t.Errorf("catalog n=2 last=pag/r3: %v, want %v", pg.items, repos[4:6])
		}
		if pg := a.page(alice, "/v2/_catalog?n=0", "repositories"); len(pg.items) != 0 || pg.raw != "[]" || pg.next != "" {
			t.Errorf("catalog n=0: %s, Link %q; want [] without Link", pg.raw, pg.next)
		}
		a.expect(http.StatusUnauthorized, ociCred{}, "GET", "/v2/_catalog?n=2", nil)
		if _, body := a.expect(http.StatusBadRequest, alice, "GET", "/v2/_catalog?n=-1", nil); !reflect.DeepEqual(ociErrorCodes(body), []string{"PAGINATION_NUMBER_INVALID"}) {
			t.Errorf("catalog n=-1: %s", body)
		}
	})

	t.Run("tags", func(t *testing.T) {
		a := *a
		a.t = t
		const path = "/v2/pag/r1/tags/list"
		pg := a.page(alice, path+"?n=2", "tags")
		if !reflect.DeepEqual(pg.items, tags[:2]) {
			t.Errorf("first page %v, want %v", pg.items, tags[:2])
		}
		if want := path + "?last=" + tags[1] + "&n=2"; pg.next != want {
			t.Errorf("first Link %q, want %q", pg.next, want)
		}
		for _, n := range []int{1, 2, 3, 4} {
			if got := a.walk(alice, path+"?n="+strconv.Itoa(n), "tags", n); !reflect.DeepEqual(got, tags) {
				t.Errorf("tags by pages of %d: %v, want %v", n, got, tags)
			}
		}
		if pg := a.page(alice, path, "tags"); !reflect.DeepEqual(pg.items, tags) || pg.next != "" {
			t.Errorf("tags without n: %v, Link %q", pg.items, pg.next)
		}
		if pg := a.page(alice, path+"?n=10", "tags"); !reflect.DeepEqual(pg.items, tags) || pg.next != "" {
			t.Errorf("tags n=10: %v, Link %q", pg.items, pg.next)
		}
		// last without n (n is optional with last), and with n.
		if pg := a.page(alice, path+"?last=latest", "tags"); !reflect.DeepEqual(pg.items, tags[2:]) || pg.next != "" {
			t.Errorf("tags last=latest: %v, Link %q, want %v", pg.items, pg.next, tags[2:])
		}
		if pg := a.page(alice, path+"?n=2&last=1.0", "tags"); !reflect.DeepEqual(pg.items, tags[1:3]) {
			t.Errorf("tags n=2 last=1.0: %v, want %v", pg.items, tags[1:3])
		}
		// last need not be an existing tag: the list starts after it.
		if pg := a.page(alice, path+"?last=u", "tags"); !reflect.DeepEqual(pg.items, tags[2:]) {
			t.Errorf("tags last=u: %v, want %v", pg.items, tags[2:])
		}
		if pg := a.page(alice, path+"?last=v3", "tags"); len(pg.items) != 0 || pg.next != "" {
			t.Errorf("tags after the last one: %v, Link %q", pg.items, pg.next)
		}
		// "When n is zero, this endpoint MUST return an empty list, and
		// MUST NOT include a Link header."
		if pg := a.page(alice, path+"?n=0", "tags"); pg.raw != "[]" || pg.next != "" {
			t.Errorf("tags n=0: %s, Link %q; want [] without Link", pg.raw, pg.next)
		}
		a.expect(http.StatusUnauthorized, ociCred{}, "GET", path+"?n=2", nil)
	})

	// "Assuming a repository is found, this request MUST return a 200 OK
	// response code. The list of tags MAY be empty if there are no tags on
	// the repository." The format is a JSON list: [] rather than null.
	for _, repo := range []string{"pag/untagged", "pag/digest-only"} {
		t.Run("empty "+repo, func(t *testing.T) {
			a := *a
			a.t = t
			resp, body := a.do(alice, "GET", "/v2/"+repo+"/tags/list", nil)
			t.Logf("GET /v2/%s/tags/list: %s %s", repo, resp.Status, bytes.TrimSpace(body))
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("tags of a repository without tags (listed in the catalog): %s, want 200\n%s", resp.Status, body)
			}
			var raw map[string]json.RawMessage
			if err := json.Unmarshal(body, &raw); err != nil {
				t.Fatal(err)
			}
			if string(raw["tags"]) != "[]" || string(raw["name"]) != strconv.Quote(repo) {
				t.Errorf("tags of a repository without tags: %s, want name %q and tags []", body, repo)
			}
			if pg := a.page(alice, "/v2/"+repo+"/tags/list?n=2", "tags"); len(pg.items) != 0 || pg.next != "" {
				t.Errorf("n=2: %v, Link %q", pg.items, pg.next)
			}
		})
	}
	// A repository that does not exist at all: 404 NAME_UNKNOWN.
	if _, body := a.expect(http.StatusNotFound, alice, "GET", "/v2/pag/nothing/tags/list", nil); !reflect.DeepEqual(ociErrorCodes(body), []string{"NAME_UNKNOWN"}) {
		t.Errorf("tags of a missing repository: %s", body)
	}
}
