package main

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// The end-to-end tests run the real binary as separate processes, the way
// the pod does: `mreg registry`, `mreg sidecar`, and `manage-user` /
// `manage-tls` as one-shot processes against the same auth directory.

var (
	buildOnce sync.Once
	binDir    string
	buildErr  error
)

// mregBin builds the binary once per test run and returns its path. The
// directory also holds manage-user and manage-tls links to it.
func mregBin(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		binDir, buildErr = os.MkdirTemp("", "mreg-e2e-bin-")
		if buildErr != nil {
			return
		}
		out, err := exec.Command("go", "build", "-o", filepath.Join(binDir, "mreg"), ".").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
			return
		}
		for _, l := range []string{"manage-user", "manage-tls"} {
			if err := os.Symlink("mreg", filepath.Join(binDir, l)); err != nil {
				buildErr = err
				return
			}
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return filepath.Join(binDir, "mreg")
}

func freePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// proc is a long-running mreg process.
type proc struct {
	cmd *exec.Cmd
	out *bytes.Buffer
	w   *lockedWriter
}

// output is what the process has written so far (stdout and stderr).
func (p *proc) output() string {
	p.w.mu.Lock()
	defer p.w.mu.Unlock()
	return p.out.String()
}

// Pid is the process id.
func (p *proc) Pid() int { return p.cmd.Process.Pid }

// startProc starts bin with args and stops it (SIGTERM) at cleanup.
func startProc(t testing.TB, env []string, bin string, args ...string) *proc {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), env...)
	out := &bytes.Buffer{}
	lw := &lockedWriter{w: out}
	cmd.Stdout, cmd.Stderr = lw, lw
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &proc{cmd: cmd, out: out, w: lw}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(os.Interrupt)
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case err := <-done:
			if err != nil && !t.Failed() {
				t.Errorf("%s %s exited: %v\n%s", filepath.Base(bin), args[0], err, out)
			}
		case <-time.After(25 * time.Second):
			_ = cmd.Process.Kill()
			t.Errorf("%s did not stop on SIGINT", args[0])
		}
		if t.Failed() && os.Getenv("MREG_TEST_LOG") != "" {
			t.Logf("%s output:\n%s", args[0], out)
		}
	})
	return p
}

type lockedWriter struct {
	mu sync.Mutex
	w  *bytes.Buffer
}

func (l *lockedWriter) Write(b []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(b)
}

// pair is a registry and sidecar running as processes.
type pair struct {
	bin      string
	authDir  string
	root     string
	host     string // sidecar host:port
	metrics  string // sidecar metrics URL
	registry *proc
	sidecar  *proc
}

func startPair(t testing.TB, sidecarArgs ...string) *pair {
	t.Helper()
	bin := mregBin(t)
	p := &pair{bin: bin, authDir: t.TempDir(), root: t.TempDir()}
	rport, sport := freePort(t), freePort(t)
	rmetrics, smetrics := "127.0.0.1:"+strconv.Itoa(freePort(t)), "127.0.0.1:"+strconv.Itoa(freePort(t))
	p.host = "127.0.0.1:" + strconv.Itoa(sport)
	p.metrics = "http://" + smetrics + "/metrics"
	p.registry = startProc(t, nil, bin, "registry", "--addr", "127.0.0.1:"+strconv.Itoa(rport), "--root", p.root,
		"--metrics-addr", rmetrics)
	// The sidecar gets its settings from MREG_* variables, as in the pod.
	env := []string{
		"MREG_ADDR=" + p.host,
		"MREG_UPSTREAM=http://127.0.0.1:" + strconv.Itoa(rport),
		"MREG_AUTH_DIR=" + p.authDir,
		"MREG_METRICS_ADDR=" + smetrics,
		"MREG_REGISTRY_METRICS_URL=http://" + rmetrics + "/metrics",
	}
	p.sidecar = startProc(t, env, bin, append([]string{"sidecar"}, sidecarArgs...)...)
	waitHealthy(t, bin, "http://127.0.0.1:"+strconv.Itoa(rport)+"/v2/")
	waitHealthy(t, bin, "http://"+p.host+"/v2/")
	return p
}

func waitHealthy(t testing.TB, bin, url string) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		out, err := exec.Command(bin, "healthcheck", "--url", url, "--timeout", "1s").CombinedOutput()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not healthy: %v %s", url, err, out)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// run runs a one-shot command of the binary (or one of its links) with
// stdin and returns its stdout; it fails the test when the exit status
// differs from wantOK.
func run(t testing.TB, bin, stdin string, wantOK bool, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Stdin = strings.NewReader(stdin)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if (err == nil) != wantOK {
		t.Fatalf("%s %v: err=%v, want ok=%v\nstdout: %s\nstderr: %s", filepath.Base(bin), args, err, wantOK, stdout.String(), stderr.String())
	}
	return stdout.String() + stderr.String()
}

// manageUser runs the manage-user link as its own process, as
// `kubectl exec … -- manage-user …` would.
func (p *pair) manageUser(t testing.TB, stdin string, args ...string) string {
	t.Helper()
	bin := filepath.Join(filepath.Dir(p.bin), "manage-user")
	return run(t, bin, stdin, true, append(args, "--auth-dir", p.authDir)...)
}

func (p *pair) manageTLS(t testing.TB, stdin string, args ...string) string {
	t.Helper()
	bin := filepath.Join(filepath.Dir(p.bin), "manage-tls")
	return run(t, bin, stdin, true, append(args, "--auth-dir", p.authDir)...)
}

// peakRSS returns VmHWM (peak resident set) of pid in bytes.
func peakRSS(t testing.TB, pid int) int64 {
	return procStatus(t, pid, "VmHWM:")
}

// rss returns VmRSS of pid in bytes.
func rss(t testing.TB, pid int) int64 {
	return procStatus(t, pid, "VmRSS:")
}

func procStatus(t testing.TB, pid int, field string) int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, field) {
			f := strings.Fields(line)
			kb, _ := strconv.ParseInt(f[1], 10, 64)
			return kb << 10
		}
	}
	t.Fatalf("%s not in /proc/%d/status", field, pid)
	return 0
}
