package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestQuickRun runs the whole program in -quick mode against a freshly
// built mreg: every scenario in every column must produce a number, the
// table and the JSON file must be written. The targets are not checked:
// small sizes on a busy test machine say little about them.
func TestQuickRun(t *testing.T) {
	if testing.Short() {
		t.Skip("starts mreg processes and moves data; skipped with -short")
	}
	bin := filepath.Join(t.TempDir(), "mreg")
	build := exec.Command("go", "build", "-o", bin, "./cmd/mreg")
	build.Dir = ".."
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	cfg := defaults(true)
	cfg.mreg = bin
	cfg.out = filepath.Join(t.TempDir(), "results", "bench.json")
	cfg.rateDur = 300 * time.Millisecond // keep the test well under 30 s
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var stdout, progress bytes.Buffer
	rep, err := run(ctx, &cfg, &stdout, &progress)
	if err != nil {
		t.Fatalf("run: %v\nprogress:\n%s", err, progress.String())
	}
	t.Log("\n" + stdout.String())

	b := &bench{cfg: &cfg}
	for _, sc := range b.scenarios() {
		for _, col := range columnKeys {
			r, ok := rep.find(sc.id, col)
			if !ok || r.speed() <= 0 {
				t.Errorf("%s / %s: no result (%+v)", sc.id, col, r)
			}
		}
	}
	if len(rep.Bursts) != 2 {
		t.Fatalf("bursts: %d, want 2", len(rep.Bursts))
	}
	for _, br := range rep.Bursts {
		if br.Status["401"] == 0 || br.CPU <= 0 {
			t.Errorf("%s: no refused password checks measured: %+v", br.Label, br)
		}
	}
	for _, name := range []string{"registry", "sidecar", "sidecar-tls"} {
		if rep.Memory.Idle[name].RSS <= 0 || rep.Memory.BlobPeak[name].HWM <= 0 {
			t.Errorf("%s: memory not measured: %+v %+v", name, rep.Memory.Idle[name], rep.Memory.BlobPeak[name])
		}
	}
	if len(rep.Checks) == 0 || !strings.Contains(stdout.String(), "targets met") {
		t.Error("no PASS/FAIL lines printed")
	}
	raw, err := os.ReadFile(cfg.out)
	if err != nil {
		t.Fatal(err)
	}
	var back report
	if err := json.Unmarshal(raw, &back); err != nil {
		t.Fatalf("results file: %v", err)
	}
	if len(back.Results) != len(rep.Results) || len(back.Checks) != len(rep.Checks) {
		t.Errorf("results file holds %d results and %d checks, want %d and %d",
			len(back.Results), len(back.Checks), len(rep.Results), len(rep.Checks))
	}
}
