package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// proc is a long-running mreg process; its stdout and stderr (one JSON
// line per request) go straight to a log file.
type proc struct {
	name   string
	cmd    *exec.Cmd
	log    string
	exited chan struct{}
	err    error
}

func (p *proc) pid() int { return p.cmd.Process.Pid }

func startProc(bin, name, logPath string, args ...string) (*proc, error) {
	f, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, args...)
	cmd.Env = childEnv()
	cmd.Stdout, cmd.Stderr = f, f
	// If the bench dies, so do its servers.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		f.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	f.Close() // the child holds its own descriptor
	p := &proc{name: name, cmd: cmd, log: logPath, exited: make(chan struct{})}
	go func() { p.err = cmd.Wait(); close(p.exited) }()
	return p, nil
}

// alive returns an error (with the log's tail) if the process has exited.
func (p *proc) alive() error {
	select {
	case <-p.exited:
		return fmt.Errorf("%s exited: %v\n%s", p.name, p.err, tail(p.log, 20))
	default:
		return nil
	}
}

// stop asks the process to shut down (SIGINT, as on Ctrl-C) and kills it
// after 15 s.
func (p *proc) stop() error {
	if err := p.alive(); err != nil {
		return err
	}
	_ = p.cmd.Process.Signal(os.Interrupt)
	select {
	case <-p.exited:
		if p.err != nil {
			return fmt.Errorf("%s: %v", p.name, p.err)
		}
		return nil
	case <-time.After(15 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.exited
		return fmt.Errorf("%s did not stop on SIGINT within 15s", p.name)
	}
}

// childEnv is this environment without MREG_* variables, so that only the
// flags given here configure the servers.
func childEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "MREG_") {
			env = append(env, kv)
		}
	}
	return env
}

func tail(path string, lines int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	l := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(l) > lines {
		l = l[len(l)-lines:]
	}
	return "  " + strings.Join(l, "\n  ")
}

// runOnce runs a one-shot mreg command with stdin.
func runOnce(ctx context.Context, bin, stdin string, args ...string) error {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = childEnv()
	cmd.Stdin = strings.NewReader(stdin)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("mreg %s: %v\n%s", strings.Join(args, " "), err, out.String())
	}
	return nil
}

func freeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return "127.0.0.1:" + strconv.Itoa(ln.Addr().(*net.TCPAddr).Port), nil
}

// Users created with manage-user in both auth directories.
const (
	userName  = "bench-user"  // pulls
	adminName = "bench-admin" // pushes
)

// stack is the registry and two sidecars in front of it: one plain HTTP,
// one whose auth directory holds a generated certificate (HTTPS).
type stack struct {
	dir                 string
	root                string // the registry's storage
	registry            *proc
	sidecar, sidecarTLS *proc
	regAddr             string
	sideAddr, tlsAddr   string
	roots               *x509.CertPool
	userPass, adminPass string
}

func (s *stack) procs() []*proc { return []*proc{s.registry, s.sidecar, s.sidecarTLS} }

// alive reports the first process that has died.
func (s *stack) alive() error {
	for _, p := range s.procs() {
		if p != nil {
			if err := p.alive(); err != nil {
				return err
			}
		}
	}
	return nil
}

func (s *stack) stop() error {
	var errs []error
	for _, p := range []*proc{s.sidecarTLS, s.sidecar, s.registry} {
		if p != nil {
			errs = append(errs, p.stop())
		}
	}
	return errors.Join(errs...)
}

// startStack prepares fresh storage and auth directories under dir and
// starts the three servers on loopback.
func startStack(ctx context.Context, cfg *config, dir string) (*stack, error) {
	s := &stack{dir: dir, userPass: rand.Text(), adminPass: rand.Text()}
	root := filepath.Join(dir, "registry")
	s.root = root
	auth := filepath.Join(dir, "auth")
	authTLS := filepath.Join(dir, "auth-tls")
	for _, d := range []string{root, auth, authTLS} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, err
		}
	}
	cost := strconv.Itoa(cfg.cost)
	for _, d := range []string{auth, authTLS} {
		if err := runOnce(ctx, cfg.mreg, s.userPass+"\n", "manage-user", "add", "--auth-dir", d, "--cost", cost, userName); err != nil {
			return nil, err
		}
		if err := runOnce(ctx, cfg.mreg, s.adminPass+"\n", "manage-user", "add", "--auth-dir", d, "--cost", cost, "--admin", adminName); err != nil {
			return nil, err
		}
	}
	if err := runOnce(ctx, cfg.mreg, "", "manage-tls", "generate", "--auth-dir", authTLS, "127.0.0.1"); err != nil {
		return nil, err
	}
	pem, err := os.ReadFile(filepath.Join(authTLS, "tls.crt"))
	if err != nil {
		return nil, err
	}
	s.roots = x509.NewCertPool()
	if !s.roots.AppendCertsFromPEM(pem) {
		return nil, errors.New("tls.crt: no certificate")
	}

	addrs := make([]string, 6)
	for i := range addrs {
		if addrs[i], err = freeAddr(); err != nil {
			return nil, err
		}
	}
	s.regAddr, s.sideAddr, s.tlsAddr = addrs[0], addrs[1], addrs[2]
	regMetrics := addrs[3]
	s.registry, err = startProc(cfg.mreg, "registry", filepath.Join(dir, "registry.log"),
		"registry", "--addr", s.regAddr, "--root", root, "--metrics-addr", regMetrics)
	if err != nil {
		return nil, err
	}
	sidecar := func(name, addr, authDir, metrics string) (*proc, error) {
		return startProc(cfg.mreg, name, filepath.Join(dir, name+".log"),
			"sidecar", "--addr", addr, "--upstream", "http://"+s.regAddr, "--auth-dir", authDir,
			"--metrics-addr", metrics, "--registry-metrics-url", "http://"+regMetrics+"/metrics")
	}
	if s.sidecar, err = sidecar("sidecar", s.sideAddr, auth, addrs[4]); err != nil {
		_ = s.stop()
		return nil, err
	}
	if s.sidecarTLS, err = sidecar("sidecar-tls", s.tlsAddr, authTLS, addrs[5]); err != nil {
		_ = s.stop()
		return nil, err
	}
	if err := s.waitReady(ctx); err != nil {
		_ = s.stop()
		return nil, err
	}
	return s, nil
}

// waitReady polls /v2/ until the registry answers 200 and both sidecars
// 401 (they are up and challenge).
func (s *stack) waitReady(ctx context.Context) error {
	hc := &http.Client{Timeout: time.Second, Transport: newTransport(s.roots, nil)}
	defer hc.CloseIdleConnections()
	check := map[string]int{
		"http://" + s.regAddr + "/v2/":  http.StatusOK,
		"http://" + s.sideAddr + "/v2/": http.StatusUnauthorized,
		"https://" + s.tlsAddr + "/v2/": http.StatusUnauthorized,
	}
	deadline := time.Now().Add(20 * time.Second)
	for url, want := range check {
		for {
			if err := s.alive(); err != nil {
				return err
			}
			got := 0
			if req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil); err == nil {
				if resp, err := hc.Do(req); err == nil {
					got = resp.StatusCode
					resp.Body.Close()
				}
			}
			if got == want {
				break
			}
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("%s: not ready after 20s (last status %d)", url, got)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	return nil
}

// dropBlobs deletes blobs the bench pushed and will not read again straight
// from the registry's storage (outside any timing), so that a run's disk use
// and page-cache writeback stay small. Their repository links dangle, which
// nothing reads.
func (s *stack) dropBlobs(digests ...string) error {
	for _, d := range digests {
		hex, ok := strings.CutPrefix(d, "sha256:")
		if !ok || len(hex) != 64 {
			return fmt.Errorf("drop blob: bad digest %q", d)
		}
		if err := os.RemoveAll(filepath.Join(s.root, "docker", "registry", "v2", "blobs", "sha256", hex[:2], hex)); err != nil {
			return err
		}
	}
	return nil
}
