package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/mreg-dev/mreg/gc"
	"github.com/mreg-dev/mreg/internal/storelock"
)

// Process-level tests of the storage lock between `mreg registry` and
// `mreg gc`, and of GC run by the real binary. The registries here are
// started with exec.Command directly (not startProc): some tests kill them
// with SIGKILL, which startProc's cleanup would report as a failure.

// gclBuffer is a goroutine-safe output buffer that can be read while the
// process still writes to it.
type gclBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (g *gclBuffer) Write(p []byte) (int, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.b.Write(p)
}

func (g *gclBuffer) String() string {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.b.String()
}

// gclProc is a long-running mreg process owned by one test.
type gclProc struct {
	cmd  *exec.Cmd
	out  *gclBuffer // stdout and stderr
	addr string     // host:port for registries
	done chan struct{}
	err  error // Wait's result, valid once done is closed
}

// gclStart starts bin with args; at cleanup a process still running is
// killed and reaped.
func gclStart(t *testing.T, bin string, args ...string) *gclProc {
	t.Helper()
	p := &gclProc{cmd: exec.Command(bin, args...), out: &gclBuffer{}, done: make(chan struct{})}
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			_ = p.cmd.Process.Kill()
			<-p.done
		}
		if t.Failed() {
			t.Logf("%s output:\n%s", strings.Join(args, " "), p.out)
		}
	})
	return p
}

// gclRegistry starts `mreg registry --root root` on a free port and waits
// until it answers.
func gclRegistry(t *testing.T, bin, root string, extra ...string) *gclProc {
	t.Helper()
	addr := "127.0.0.1:" + strconv.Itoa(freePort(t))
	p := gclStart(t, bin, append([]string{"registry", "--root", root, "--addr", addr, "--metrics-addr", ""}, extra...)...)
	p.addr = addr
	waitHealthy(t, bin, "http://"+addr+"/v2/")
	return p
}

// wait waits up to d for the process to exit and returns Wait's error.
func (p *gclProc) wait(t *testing.T, d time.Duration) error {
	t.Helper()
	select {
	case <-p.done:
		return p.err
	case <-time.After(d):
		t.Fatalf("process %d did not exit within %s\n%s", p.cmd.Process.Pid, d, p.out)
		return nil
	}
}

// kill sends SIGKILL and checks the process died of it.
func (p *gclProc) kill(t *testing.T) {
	t.Helper()
	if err := p.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	err := p.wait(t, 10*time.Second)
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		t.Fatalf("after SIGKILL: Wait err %v, want an exit error", err)
	}
	if ws, ok := ee.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		t.Fatalf("after SIGKILL: %v, want killed by SIGKILL", err)
	}
}

// stop sends SIGINT and requires a clean exit.
func (p *gclProc) stop(t *testing.T) {
	t.Helper()
	if err := p.cmd.Process.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	if err := p.wait(t, 25*time.Second); err != nil {
		t.Fatalf("after SIGINT: %v\n%s", err, p.out)
	}
}

// gclRunOut runs a one-shot command and returns its stdout and stderr
// separately; it fails the test when the exit status differs from wantOK.
func gclRunOut(t *testing.T, bin string, wantOK bool, args ...string) (stdout, stderr string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("%v: timed out\nstdout: %s\nstderr: %s", args, o.String(), e.String())
	}
	if (err == nil) != wantOK {
		t.Fatalf("%v: err=%v, want ok=%v\nstdout: %s\nstderr: %s", args, err, wantOK, o.String(), e.String())
	}
	return o.String(), e.String()
}

// gclReport is the "gc finished" log line of a GC run (the log line has
// the JSON names of gc.Stats).
type gclReport = gc.Stats

// gclParseReport finds the one "gc finished" JSON line in a log.
func gclParseReport(t *testing.T, log string) gclReport {
	t.Helper()
	var reps []gclReport
	sc := bufio.NewScanner(strings.NewReader(log))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "{") {
			continue
		}
		var m struct {
			Msg string `json:"msg"`
		}
		if json.Unmarshal([]byte(line), &m) != nil || m.Msg != "gc finished" {
			continue
		}
		var r gclReport
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			t.Fatalf("gc report %q: %v", line, err)
		}
		reps = append(reps, r)
	}
	if len(reps) != 1 {
		t.Fatalf("%d \"gc finished\" lines, want 1, in:\n%s", len(reps), log)
	}
	return reps[0]
}

// gclSummary returns the stdout line starting with "gc:".
func gclSummary(t *testing.T, stdout string) string {
	t.Helper()
	for _, line := range strings.Split(stdout, "\n") {
		if strings.HasPrefix(line, "gc:") {
			return line
		}
	}
	t.Fatalf("no summary line starting with \"gc:\" in:\n%s", stdout)
	return ""
}

// gclGarbage is what gclPushGarbage left in a registry.
type gclGarbage struct {
	live    []name.Reference    // tags that must survive GC
	images  map[string]v1.Image // pushed image by repository:tag
	dead    name.Reference      // digest of the manifest whose only tag was deleted
	layers  int                 // layers of the dead image
	uploads int                 // stale uploads started
}

// gclPushGarbage pushes three images to the registry at addr, deletes the
// only tag of one of them (leaving an untagged manifest and its unique
// blobs behind) and starts a blob upload that it never finishes.
func gclPushGarbage(t *testing.T, addr string) gclGarbage {
	t.Helper()
	g := gclGarbage{layers: 3, images: map[string]v1.Image{}}
	// Own client connections, closed when done: the Go client can leave a
	// connection dialled but never used, which an http.Server's graceful
	// Shutdown (the registry's SIGINT path) waits up to 5s for.
	tr := remote.DefaultTransport.(*http.Transport).Clone()
	defer tr.CloseIdleConnections()
	opt := remote.WithTransport(tr)
	ref := func(s string) name.Reference {
		r, err := name.ParseReference(addr+"/"+s, name.Insecure)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	push := func(s string, layers int) name.Reference {
		img, err := random.Image(4<<10, int64(layers))
		if err != nil {
			t.Fatal(err)
		}
		r := ref(s)
		if err := remote.Write(r, img, opt); err != nil {
			t.Fatalf("push %s: %v", r, err)
		}
		g.images[s] = img
		return r
	}
	g.live = append(g.live, push("gcl/app:v1", 2), push("gcl/other:v1", 2))
	deadTag := push("gcl/app:v2", g.layers)
	desc, err := remote.Head(deadTag, opt)
	if err != nil {
		t.Fatal(err)
	}
	g.dead = ref("gcl/app@" + desc.Digest.String())
	if err := remote.Delete(deadTag, opt); err != nil {
		t.Fatalf("delete tag %s: %v", deadTag, err)
	}
	if _, err := remote.Head(deadTag, opt); err == nil {
		t.Fatalf("tag %s still resolves after delete", deadTag)
	}
	if _, err := remote.Image(g.dead, opt); err != nil {
		t.Fatalf("untagged manifest %s should exist before GC: %v", g.dead, err)
	}

	resp, err := (&http.Client{Transport: tr}).Post("http://"+addr+"/v2/gcl/app/blobs/uploads/", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("start upload: %s", resp.Status)
	}
	g.uploads = 1
	return g
}

// check verifies after GC that the live images pull intact and the dead
// manifest is gone, through a registry at addr.
func (g gclGarbage) check(t *testing.T, addr string) {
	t.Helper()
	tr := remote.DefaultTransport.(*http.Transport).Clone()
	defer tr.CloseIdleConnections()
	for _, r := range append(g.live, g.dead) {
		r, err := name.ParseReference(addr+"/"+r.Context().RepositoryStr()+gclRefSuffix(r), name.Insecure)
		if err != nil {
			t.Fatal(err)
		}
		img, err := remote.Image(r, remote.WithTransport(tr))
		if _, isDigest := r.(name.Digest); isDigest {
			if err == nil {
				t.Errorf("%s: untagged manifest survived GC", r)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: pull after GC: %v", r, err)
			continue
		}
		want := g.images[r.Context().RepositoryStr()+":"+r.Identifier()]
		sameImage(t, want, img)
		wantCfg, _ := want.RawConfigFile()
		if gotCfg, err := img.RawConfigFile(); err != nil || !bytes.Equal(gotCfg, wantCfg) {
			t.Errorf("%s: config blob after GC differs (%v)", r, err)
		}
	}
}

func gclRefSuffix(r name.Reference) string {
	if _, ok := r.(name.Digest); ok {
		return "@" + r.Identifier()
	}
	return ":" + r.Identifier()
}

func TestGCLockRefusedWhileRegistryRunsAndFreeAfterKill(t *testing.T) {
	bin := mregBin(t)
	root := t.TempDir()
	reg := gclRegistry(t, bin, root)
	g := gclPushGarbage(t, reg.addr)

	// GC refuses beside the running registry and removes nothing.
	for _, args := range [][]string{{"gc", "--root", root}, {"gc", "--root", root, "--dry-run"}} {
		stdout, stderr := gclRunOut(t, bin, false, args...)
		out := stdout + stderr
		if !strings.Contains(out, "locked") {
			t.Fatalf("%v: output does not mention the lock:\n%s", args, out)
		}
		if want := fmt.Sprintf("mreg registry pid %d", reg.cmd.Process.Pid); !strings.Contains(out, want) {
			t.Errorf("%v: output does not name the holder %q:\n%s", args, want, out)
		}
		if strings.Contains(out, "gc finished") {
			t.Errorf("%v: gc ran although refused:\n%s", args, out)
		}
	}
	if _, err := remote.Image(g.dead); err != nil {
		t.Fatalf("refused gc removed the untagged manifest: %v", err)
	}

	// kill -9: the kernel drops the flock, the lock file stays behind and
	// does not block.
	reg.kill(t)
	if _, err := os.Stat(filepath.Join(root, storelock.FileName)); err != nil {
		t.Fatalf("lock file: %v", err)
	}
	stdout, stderr := gclRunOut(t, bin, true, "gc", "--root", root)
	sum := gclSummary(t, stdout)
	rep := gclParseReport(t, stderr)
	if !strings.HasPrefix(sum, "gc: removed 1 of 3 manifests") || rep.ManifestsRemoved != 1 || rep.UploadsRemoved != g.uploads {
		t.Errorf("gc after kill: %s\n%+v", sum, rep)
	}
	// And GC released the lock again: a registry starts.
	g.check(t, gclRegistry(t, bin, root).addr)
}

func TestGCLockRegistryRefusesWhileGCHoldsLock(t *testing.T) {
	bin := mregBin(t)
	root := t.TempDir()
	lock, err := storelock.Acquire(root, "test gc")
	if err != nil {
		t.Fatal(err)
	}
	holder := fmt.Sprintf("test gc pid %d", os.Getpid())

	addr := "127.0.0.1:" + strconv.Itoa(freePort(t))
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	start := time.Now()
	out, err := exec.CommandContext(ctx, bin, "registry", "--root", root, "--addr", addr, "--metrics-addr", "").CombinedOutput()
	if ctx.Err() != nil {
		t.Fatalf("registry did not exit within 15s while the lock was held:\n%s", out)
	}
	if err == nil {
		t.Fatalf("registry exited 0 while the lock was held:\n%s", out)
	}
	if !strings.Contains(string(out), "locked") || !strings.Contains(string(out), holder) {
		t.Fatalf("registry refusal does not mention the lock and %q:\n%s", holder, out)
	}
	t.Logf("registry refused in %s: %s", time.Since(start).Round(time.Millisecond), strings.TrimSpace(string(out)))

	// A second GC refuses too.
	stdout, stderr := gclRunOut(t, bin, false, "gc", "--root", root)
	if !strings.Contains(stdout+stderr, "locked") || !strings.Contains(stdout+stderr, holder) {
		t.Fatalf("gc refusal does not mention the lock and %q:\n%s%s", holder, stdout, stderr)
	}

	if err := lock.Release(); err != nil {
		t.Fatal(err)
	}
	reg := gclRegistry(t, bin, root)
	// The running registry now holds the lock against this process too.
	if l, err := storelock.Acquire(root, "test gc"); !errors.Is(err, storelock.ErrHeld) {
		l.Release()
		t.Fatalf("Acquire beside a running registry: %v, want ErrHeld", err)
	}
	reg.stop(t)
	l, err := storelock.Acquire(root, "test gc")
	if err != nil {
		t.Fatalf("Acquire after the registry stopped: %v", err)
	}
	l.Release()
}

func TestGCLockRegistryGCFlagCollectsBeforeServing(t *testing.T) {
	bin := mregBin(t)
	root := t.TempDir()
	reg := gclRegistry(t, bin, root)
	g := gclPushGarbage(t, reg.addr)
	reg.stop(t)

	reg = gclRegistry(t, bin, root, "--gc")
	out := reg.out.String()
	gcAt := strings.Index(out, `"msg":"gc finished"`)
	listenAt := strings.Index(out, `"msg":"registry listening"`)
	if gcAt < 0 {
		t.Fatalf("no \"gc finished\" line after the registry is healthy:\n%s", out)
	}
	if listenAt < 0 || gcAt > listenAt {
		t.Fatalf("\"gc finished\" (at %d) not before \"registry listening\" (at %d):\n%s", gcAt, listenAt, out)
	}
	rep := gclParseReport(t, out)
	want := gclReport{
		Repositories: 2, ManifestsScanned: 3, ManifestsRemoved: 1,
		BlobsRemoved: g.layers + 2, LayerLinksRemoved: g.layers + 1, UploadsRemoved: g.uploads,
	}
	rep.BlobsScanned, rep.BytesFreed = 0, 0
	if rep != want {
		t.Errorf("registry --gc report %+v, want %+v", rep, want)
	}
	g.check(t, reg.addr)
	reg.stop(t)
}

func TestGCDryRunReportsWhatRealRunRemoves(t *testing.T) {
	bin := mregBin(t)
	root := t.TempDir()
	reg := gclRegistry(t, bin, root)
	g := gclPushGarbage(t, reg.addr)
	reg.stop(t)

	dryOut, dryErr := gclRunOut(t, bin, true, "gc", "--root", root, "--dry-run")
	dry := gclParseReport(t, dryErr)
	drySum := gclSummary(t, dryOut)
	// A second dry run finds the same: nothing was removed.
	_, dryErr2 := gclRunOut(t, bin, true, "gc", "--root", root, "--dry-run")
	if again := gclParseReport(t, dryErr2); again != dry {
		t.Fatalf("second dry run %+v differs from first %+v", again, dry)
	}

	wetOut, wetErr := gclRunOut(t, bin, true, "gc", "--root", root)
	wet := gclParseReport(t, wetErr)
	wetSum := gclSummary(t, wetOut)
	t.Logf("dry run: %s", drySum)
	t.Logf("real run: %s", wetSum)

	if !dry.DryRun || wet.DryRun {
		t.Errorf("dry_run flags: dry %v, real %v", dry.DryRun, wet.DryRun)
	}
	if !strings.HasPrefix(drySum, "gc: would remove ") || !strings.HasPrefix(wetSum, "gc: removed ") {
		t.Errorf("summaries: %q, %q", drySum, wetSum)
	}
	dry.DryRun = false
	if dry != wet {
		t.Errorf("dry run reported %+v, real run did %+v", dry, wet)
	}
	// Summaries agree apart from the verb and the duration.
	strip := func(s string) string {
		s = strings.NewReplacer("would remove", "X", "removed", "X").Replace(s)
		return s[:strings.LastIndex(s, "; took")]
	}
	if strip(drySum) != strip(wetSum) {
		t.Errorf("summaries differ:\n%s\n%s", drySum, wetSum)
	}
	want := gclReport{
		Repositories: 2, ManifestsScanned: 3, ManifestsRemoved: 1,
		BlobsRemoved: g.layers + 2, LayerLinksRemoved: g.layers + 1, UploadsRemoved: g.uploads,
		BlobsScanned: wet.BlobsScanned, BytesFreed: wet.BytesFreed,
	}
	if wet != want || wet.BytesFreed <= 0 {
		t.Errorf("real run %+v, want %+v", wet, want)
	}

	// After the real run nothing is left to remove.
	_, afterErr := gclRunOut(t, bin, true, "gc", "--root", root, "--dry-run")
	after := gclParseReport(t, afterErr)
	if after.ManifestsRemoved+after.BlobsRemoved+after.LayerLinksRemoved+after.UploadsRemoved != 0 ||
		after.BlobsScanned != wet.BlobsScanned-wet.BlobsRemoved || after.ManifestsScanned != 2 {
		t.Errorf("dry run after GC: %+v", after)
	}
	g.check(t, gclRegistry(t, bin, root).addr)
}
