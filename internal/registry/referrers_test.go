package registry

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/mreg-dev/mreg/internal/testutil"
)

func startTestRegistry(t *testing.T) string {
	t.Helper()
	cfg, err := LoadConfig(Options{Addr: "127.0.0.1:0", Root: t.TempDir(), LogLevel: "error"})
	if err != nil {
		t.Fatal(err)
	}
	srv, err := New(context.Background(), cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(srv.Handler())
	t.Cleanup(ts.Close)
	return ts.URL
}

func sha(b []byte) string { return fmt.Sprintf("sha256:%x", sha256.Sum256(b)) }

func do(t *testing.T, method, url, ctype string, body []byte) *http.Response {
	t.Helper()
	req, _ := http.NewRequest(method, url, bytes.NewReader(body))
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return resp
}

// pushBlob uploads b to repo.
func pushBlob(t *testing.T, base, repo string, b []byte) string {
	t.Helper()
	testutil.UploadBlob(t, nil, base, repo, bytes.NewReader(b), int64(len(b)), sha(b), nil)
	return sha(b)
}

// pushManifest PUTs an OCI image manifest (config "{}" + one layer) with
// optional artifactType and subject, and returns digest and response.
func pushManifest(t *testing.T, base, repo, ref, artifactType, subject, layer string) (string, *http.Response) {
	t.Helper()
	cfg := pushBlob(t, base, repo, []byte("{}"))
	l := pushBlob(t, base, repo, []byte(layer))
	m := map[string]any{
		"schemaVersion": 2,
		"mediaType":     "application/vnd.oci.image.manifest.v1+json",
		"config":        map[string]any{"mediaType": "application/vnd.oci.empty.v1+json", "digest": cfg, "size": 2},
		"layers":        []any{map[string]any{"mediaType": "application/octet-stream", "digest": l, "size": len(layer)}},
		"annotations":   map[string]string{"org.example.layer": layer},
	}
	if artifactType != "" {
		m["artifactType"] = artifactType
	}
	if subject != "" {
		m["subject"] = map[string]any{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": subject, "size": 100}
	}
	body, _ := json.Marshal(m)
	if ref == "" {
		ref = sha(body)
	}
	resp := do(t, "PUT", base+"/v2/"+repo+"/manifests/"+ref, "application/vnd.oci.image.manifest.v1+json", body)
	if resp.StatusCode != 201 {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("manifest put: %d %s", resp.StatusCode, b)
	}
	return sha(body), resp
}

type refIndex struct {
	MediaType string `json:"mediaType"`
	Manifests []struct {
		Digest       string            `json:"digest"`
		ArtifactType string            `json:"artifactType"`
		Annotations  map[string]string `json:"annotations"`
	} `json:"manifests"`
}

func listReferrers(t *testing.T, base, repo, subject, query string) (refIndex, *http.Response) {
	t.Helper()
	resp := do(t, "GET", base+"/v2/"+repo+"/referrers/"+subject+query, "", nil)
	var idx refIndex
	if resp.StatusCode == 200 {
		if err := json.NewDecoder(resp.Body).Decode(&idx); err != nil {
			t.Fatal(err)
		}
	}
	return idx, resp
}

func TestReferrers(t *testing.T) {
	base := startTestRegistry(t)
	subject, resp := pushManifest(t, base, "r/app", "v1", "", "", "subject-layer")
	if resp.Header.Get("OCI-Subject") != "" {
		t.Error("OCI-Subject on a manifest without subject")
	}
	sig, resp := pushManifest(t, base, "r/app", "", "application/vnd.example.sig", subject, "sig")
	if got := resp.Header.Get("OCI-Subject"); got != subject {
		t.Fatalf("OCI-Subject = %q, want %q", got, subject)
	}
	sbom, _ := pushManifest(t, base, "r/app", "", "", subject, "sbom") // artifactType from config
	// A referrer of a subject that does not exist (yet) is accepted.
	ghost := sha([]byte("not pushed yet"))
	early, _ := pushManifest(t, base, "r/app", "", "application/vnd.example.sig", ghost, "early")

	idx, resp := listReferrers(t, base, "r/app", subject, "")
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != mediaTypeOCIIndex || idx.MediaType != mediaTypeOCIIndex {
		t.Fatalf("list: %d %q", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	got := map[string]string{}
	for _, m := range idx.Manifests {
		got[m.Digest] = m.ArtifactType
		if m.Annotations["org.example.layer"] == "" {
			t.Errorf("annotations not carried over for %s", m.Digest)
		}
	}
	want := map[string]string{sig: "application/vnd.example.sig", sbom: "application/vnd.oci.empty.v1+json"}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("referrers = %v, want %v", got, want)
	}

	idx, resp = listReferrers(t, base, "r/app", subject, "?artifactType=application/vnd.example.sig")
	if resp.Header.Get("OCI-Filters-Applied") != "artifactType" || len(idx.Manifests) != 1 || idx.Manifests[0].Digest != sig {
		t.Fatalf("filtered: %+v %q", idx, resp.Header.Get("OCI-Filters-Applied"))
	}
	if idx, _ := listReferrers(t, base, "r/app", ghost, ""); len(idx.Manifests) != 1 || idx.Manifests[0].Digest != early {
		t.Fatalf("referrer of a missing subject: %+v", idx)
	}
	for _, tc := range []struct{ repo, subject string }{
		{"r/app", sha([]byte("nothing refers to this"))},
		{"no/such/repo", subject},
	} {
		if idx, resp := listReferrers(t, base, tc.repo, tc.subject, ""); resp.StatusCode != 200 || idx.Manifests == nil || len(idx.Manifests) != 0 {
			t.Fatalf("%s %s: %d %+v, want 200 and an empty list", tc.repo, tc.subject, resp.StatusCode, idx)
		}
	}
	if _, resp := listReferrers(t, base, "r/app", "sha256:nothex", ""); resp.StatusCode != 400 {
		t.Fatalf("invalid digest: %d, want 400", resp.StatusCode)
	}
	// Deleting a referrer removes it from the list at once.
	if resp := do(t, "DELETE", base+"/v2/r/app/manifests/"+sig, "", nil); resp.StatusCode != 202 {
		t.Fatalf("delete: %d", resp.StatusCode)
	}
	if idx, _ := listReferrers(t, base, "r/app", subject, ""); len(idx.Manifests) != 1 || idx.Manifests[0].Digest != sbom {
		t.Fatalf("after delete: %+v", idx)
	}
}
