package main

import (
	"bufio"
	"encoding/json"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// scrape returns the samples of a Prometheus text page: "name{labels}" → value.
func scrape(t *testing.T, url string) map[string]float64 {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("scrape %s: %d", url, resp.StatusCode)
	}
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err == nil {
			out[line[:i]] = v
		}
	}
	return out
}

// sum adds the samples whose series name and labels contain all parts.
func sum(samples map[string]float64, metric string, parts ...string) float64 {
	var total float64
next:
	for k, v := range samples {
		if !strings.HasPrefix(k, metric+"{") && k != metric {
			continue
		}
		for _, p := range parts {
			if !strings.Contains(k, p) {
				continue next
			}
		}
		total += v
	}
	return total
}

// auditEvents parses the audit lines (msg "audit") of a JSON log.
func auditEvents(log string) []map[string]any {
	var out []map[string]any
	for _, line := range strings.Split(log, "\n") {
		var rec map[string]any
		if json.Unmarshal([]byte(line), &rec) == nil && rec["msg"] == "audit" {
			out = append(out, rec)
		}
	}
	return out
}

func findEvent(events []map[string]any, event string, fields map[string]string) map[string]any {
	for _, e := range events {
		if e["event"] != event {
			continue
		}
		ok := true
		for k, v := range fields {
			if s, _ := e[k].(string); s != v {
				ok = false
			}
		}
		if ok {
			return e
		}
	}
	return nil
}

func TestMetricsAndAuditLog(t *testing.T) {
	p := startPair(t)
	before := scrape(t, p.metrics)
	p.manageUser(t, "root-secret-pw\n", "add", "--admin", "--cost", "4", "root")
	p.manageUser(t, "alice-secret-pw\n", "add", "--cost", "4", "alice")
	admin, alice := basic("root", "root-secret-pw"), basic("alice", "alice-secret-pw")

	img, _ := random.Image(64<<10, 2)
	ref := mustRef(t, p.host+"/obs/app:v1", name.Insecure)
	if err := remote.Write(ref, img, admin); err != nil {
		t.Fatal(err)
	}
	if err := remote.Tag(mustRef(t, p.host+"/obs/app:v2", name.Insecure).(name.Tag), img, admin); err != nil {
		t.Fatal(err)
	}
	pulled, err := remote.Image(ref, alice)
	if err != nil {
		t.Fatal(err)
	}
	sameImage(t, img, pulled) // reads every layer: blob GETs
	if _, err := remote.Image(ref, basic("alice", "wrong-password-xyz")); err == nil {
		t.Fatal("wrong password accepted")
	}
	// Plain Basic requests, as curl sends them: the cache answers repeats.
	for range 3 {
		req, _ := http.NewRequest(http.MethodHead, "http://"+p.host+"/v2/obs/app/manifests/v1", nil)
		req.SetBasicAuth("alice", "alice-secret-pw")
		req.Header.Set("Accept", "application/vnd.docker.distribution.manifest.v2+json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("HEAD with Basic: %v %v", err, resp.Status)
		}
		resp.Body.Close()
	}
	digest, _ := img.Digest()
	if err := remote.Delete(mustRef(t, p.host+"/obs/app:v2", name.Insecure), admin); err != nil {
		t.Fatalf("tag delete: %v", err)
	}
	if err := remote.Delete(mustRef(t, p.host+"/obs/app@"+digest.String(), name.Insecure), admin); err != nil {
		t.Fatalf("manifest delete: %v", err)
	}

	after := scrape(t, p.metrics)
	moved := func(metric string, parts ...string) {
		t.Helper()
		if d := sum(after, metric, parts...) - sum(before, metric, parts...); d <= 0 {
			t.Errorf("%s%v did not move (%v → %v)", metric, parts, sum(before, metric, parts...), sum(after, metric, parts...))
		}
	}
	moved("mreg_http_requests_total", `method="PUT"`, `route="manifests"`, `status="201"`)
	moved("mreg_http_requests_total", `method="GET"`, `route="blobs"`, `status="200"`)
	moved("mreg_http_requests_total", `route="token"`)
	moved("mreg_http_request_duration_seconds_count", `route="manifests"`)
	moved("mreg_http_request_bytes_total", `route="uploads"`)
	moved("mreg_http_response_bytes_total", `route="blobs"`)
	moved("mreg_auth_total", `outcome="bad_credentials"`)
	moved("mreg_auth_total", `scheme="bearer"`, `outcome="ok"`)
	moved("mreg_credential_cache_hits_total")
	moved("mreg_credential_cache_misses_total")
	moved("mreg_tokens_issued_total", `grant="get"`)
	moved("registry_http_requests_total") // the registry's own metrics
	if after["mreg_registry_metrics_up"] != 1 {
		t.Error("registry metrics not appended")
	}

	// Audit lines: wait for the user store poll to report the users too.
	deadline := time.Now().Add(5 * time.Second)
	var events []map[string]any
	for {
		events = auditEvents(p.sidecar.output())
		if findEvent(events, "user.add", map[string]string{"user": "alice"}) != nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	checks := []struct {
		event  string
		fields map[string]string
	}{
		{"manifest.push", map[string]string{"user": "root", "repository": "obs/app", "tag": "v1", "digest": digest.String(), "remote": "127.0.0.1"}},
		{"blob.upload", map[string]string{"user": "root", "repository": "obs/app"}},
		{"tag.delete", map[string]string{"user": "root", "repository": "obs/app", "tag": "v2"}},
		{"manifest.delete", map[string]string{"user": "root", "repository": "obs/app", "digest": digest.String()}},
		{"auth.failure", map[string]string{"user": "alice", "remote": "127.0.0.1", "outcome": "denied"}},
		{"user.add", map[string]string{"user": "alice", "role": "user"}},
	}
	if testing.Verbose() {
		for _, e := range events {
			t.Logf("audit: %v", e)
		}
	}
	for _, c := range checks {
		if findEvent(events, c.event, c.fields) == nil {
			t.Errorf("no audit line %s %v", c.event, c.fields)
		}
	}
	log := p.sidecar.output() + p.registry.output()
	for _, secret := range []string{"root-secret-pw", "alice-secret-pw", "wrong-password-xyz"} {
		if strings.Contains(log, secret) {
			t.Errorf("a password appears in the logs")
		}
	}
	_, _ = io.Discard.Write(nil)
}
