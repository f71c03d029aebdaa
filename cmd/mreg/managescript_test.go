package main

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// The tests in this file run scripts/mreg-manage (POSIX sh, curl, jq) as a
// process against a live registry+sidecar pair, through a curl wrapper that
// records every argv so the password can be shown never to reach one.

// msEnv runs the script.
type msEnv struct {
	script  string // scripts/mreg-manage
	pathDir string // holds the recording curl wrapper
	argvLog string // one argument per line, "--END--" after each call
}

func msSetup(t *testing.T) *msEnv {
	t.Helper()
	var realCurl string
	for _, tool := range []string{"jq", "curl"} {
		p, err := exec.LookPath(tool)
		if err != nil {
			if os.Getenv("CI") != "" {
				t.Fatalf("%s not installed; scripts/test installs jq and curl (apt-get install jq curl)", tool)
			}
			t.Skipf("%s not installed (apt-get install jq curl)", tool)
		}
		if tool == "curl" {
			realCurl = p
		}
	}
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	e := &msEnv{script: filepath.Join(root, "scripts", "mreg-manage"), pathDir: t.TempDir()}
	e.argvLog = filepath.Join(e.pathDir, "argv.log")
	if _, err := os.Stat(e.script); err != nil {
		t.Fatal(err)
	}
	wrapper := "#!/bin/sh\n" +
		"{ for a in \"$@\"; do printf '%s\\n' \"$a\"; done; echo --END--; } >>\"$MS_ARGV_LOG\"\n" +
		"exec '" + realCurl + "' \"$@\"\n"
	if err := os.WriteFile(filepath.Join(e.pathDir, "curl"), []byte(wrapper), 0o755); err != nil {
		t.Fatal(err)
	}
	// Syntax check with dash (Debian's sh), which rejects most bash-isms.
	if dash, err := exec.LookPath("dash"); err == nil {
		if out, err := exec.Command(dash, "-n", e.script).CombinedOutput(); err != nil {
			t.Fatalf("dash -n: %v\n%s", err, out)
		}
	}
	return e
}

// run runs `sh scripts/mreg-manage args…` with env added to a clean
// environment, stdin at /dev/null and no controlling terminal (new
// session), so /dev/tty cannot be opened. It fails the test when the exit
// status differs from wantOK and returns stdout and stderr.
func (e *msEnv) run(t *testing.T, env []string, wantOK bool, args ...string) (string, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "sh", append([]string{e.script}, args...)...)
	for _, kv := range os.Environ() {
		if k, _, _ := strings.Cut(kv, "="); strings.HasPrefix(k, "MREG_") || k == "PATH" {
			continue
		}
		cmd.Env = append(cmd.Env, kv)
	}
	cmd.Env = append(cmd.Env,
		"PATH="+e.pathDir+string(os.PathListSeparator)+os.Getenv("PATH"),
		"MS_ARGV_LOG="+e.argvLog,
		"NO_PROXY=127.0.0.1,localhost", "no_proxy=127.0.0.1,localhost",
	)
	cmd.Env = append(cmd.Env, env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if (err == nil) != wantOK {
		t.Fatalf("mreg-manage %v: err=%v, want ok=%v\nstdout: %s\nstderr: %s", args, err, wantOK, stdout.String(), stderr.String())
	}
	if err != nil {
		if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 {
			t.Fatalf("mreg-manage %v: %v, want exit status 1\nstderr: %s", args, err, stderr.String())
		}
	}
	return stdout.String(), stderr.String()
}

// argvs returns the recorded curl command lines.
func (e *msEnv) argvs(t *testing.T) [][]string {
	t.Helper()
	b, err := os.ReadFile(e.argvLog)
	if err != nil {
		t.Fatal(err)
	}
	var all [][]string
	var cur []string
	for _, l := range strings.Split(string(b), "\n") {
		if l == "--END--" {
			all = append(all, cur)
			cur = nil
			continue
		}
		cur = append(cur, l)
	}
	return all
}

// msNoSecrets checks that no curl argv held any of the secrets.
func msNoSecrets(t *testing.T, e *msEnv, secrets ...string) {
	t.Helper()
	calls := e.argvs(t)
	if len(calls) == 0 {
		t.Fatal("the curl wrapper recorded nothing")
	}
	for _, argv := range calls {
		for _, a := range argv {
			for _, s := range secrets {
				if strings.Contains(a, s) {
					t.Fatalf("secret %q on curl's command line: %q", s, argv)
				}
			}
		}
	}
}

func msEnvFor(user, pass string) []string {
	return []string{"MREG_USER=" + user, "MREG_PASSWORD=" + pass, "MREG_PAGE_SIZE=2"}
}

// msLines returns the non-empty lines of s, sorted.
func msLines(s string) []string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if l != "" {
			out = append(out, l)
		}
	}
	sort.Strings(out)
	return out
}

func msWantList(t *testing.T, got string, want ...string) {
	t.Helper()
	sort.Strings(want)
	if g := msLines(got); strings.Join(g, "\n") != strings.Join(want, "\n") {
		t.Fatalf("ls:\n%s\nwant:\n%s", strings.Join(g, "\n"), strings.Join(want, "\n"))
	}
}

func msContains(t *testing.T, what, got string, want ...string) {
	t.Helper()
	for _, w := range want {
		if !strings.Contains(got, w) {
			t.Fatalf("%s: %q does not contain %q", what, got, w)
		}
	}
}

func msPush(t *testing.T, host string, auth remote.Option, img v1.Image, refs ...string) {
	t.Helper()
	for _, r := range refs {
		if err := remote.Write(mustRef(t, host+"/"+r, name.Insecure), img, auth); err != nil {
			t.Fatalf("push %s: %v", r, err)
		}
	}
}

func msImage(t *testing.T) v1.Image {
	t.Helper()
	img, err := random.Image(1024, 1)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

func msDigest(t *testing.T, img v1.Image) string {
	t.Helper()
	d, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return d.String()
}

// msResolves checks that ref resolves to digest ("" = must be 404).
func msResolves(t *testing.T, host, ref, digest string, auth remote.Option, opts ...remote.Option) {
	t.Helper()
	desc, err := remote.Head(mustRef(t, host+"/"+ref, name.Insecure), append([]remote.Option{auth}, opts...)...)
	if digest == "" {
		wantStatus(t, ref, err, 404)
		return
	}
	if err != nil {
		t.Fatalf("%s: %v", ref, err)
	}
	if desc.Digest.String() != digest {
		t.Fatalf("%s resolves to %s, want %s", ref, desc.Digest, digest)
	}
}

func TestManageScriptAgainstSidecar(t *testing.T) {
	e := msSetup(t)
	p := startPair(t)
	// Quotes, a backslash and a dollar: the curl config must escape them.
	const rootPW, readerPW, wrongPW = `r"o\ot pw$1-secret`, "reader-pw-7731", "wrong-secret-4242"
	p.manageUser(t, rootPW+"\n", "add", "--admin", "--cost", "4", "root")
	p.manageUser(t, readerPW+"\n", "add", "--cost", "4", "reader")
	admin := basic("root", rootPW)
	url := "http://" + p.host

	img1, img2, img3, img4, img5, img6 := msImage(t), msImage(t), msImage(t), msImage(t), msImage(t), msImage(t)
	msPush(t, p.host, admin, img1, "app:v1", "app:v1-alias", "app:stable")
	msPush(t, p.host, admin, img2, "app:v2")
	msPush(t, p.host, admin, img5, "b/one:1.0", "b/two:1.0")
	msPush(t, p.host, admin, img3, "dig:x", "dig:y")
	msPush(t, p.host, admin, img4, "dig:z")
	// A repository whose only tag is gone: in the catalog, without tags.
	msPush(t, p.host, admin, img6, "empty:only")
	if err := remote.Delete(mustRef(t, p.host+"/empty:only", name.Insecure), admin); err != nil {
		t.Fatal(err)
	}
	d1, d3, d4 := msDigest(t, img1), msDigest(t, img3), msDigest(t, img4)

	t.Run("help", func(t *testing.T) {
		out, _ := e.run(t, nil, true, "--help")
		msContains(t, "--help", out, "usage: mreg-manage", "ls HOST", "REPO@DIGEST", "--cacert")
	})

	t.Run("ls", func(t *testing.T) {
		out, errOut := e.run(t, []string{"MREG_PASSWORD=" + readerPW, "MREG_PAGE_SIZE=2"}, true, "-u", "reader", "ls", url)
		msWantList(t, out, "app:stable", "app:v1", "app:v1-alias", "app:v2", "b/one:1.0", "b/two:1.0", "dig:x", "dig:y", "dig:z")
		msContains(t, "ls stderr", errOut, "empty has no tags")
		// Both paginations were followed (page size 2: 5 repositories, 4 tags in app).
		var catalogNext, tagsNext bool
		for _, argv := range e.argvs(t) {
			u := argv[len(argv)-1]
			catalogNext = catalogNext || strings.Contains(u, "/v2/_catalog?") && strings.Contains(u, "last=")
			tagsNext = tagsNext || strings.Contains(u, "/v2/app/tags/list?") && strings.Contains(u, "last=")
		}
		if !catalogNext || !tagsNext {
			t.Fatalf("pagination not followed: catalog %v, tags %v", catalogNext, tagsNext)
		}
	})

	t.Run("reader may not delete", func(t *testing.T) {
		_, errOut := e.run(t, msEnvFor("reader", readerPW), false, "rm", url, "app:v1")
		msContains(t, "rm as reader", errOut, "permission denied: reader may not delete (admins only)")
		msResolves(t, p.host, "app:v1", d1, admin)
	})

	t.Run("wrong password", func(t *testing.T) {
		_, errOut := e.run(t, msEnvFor("root", wrongPW), false, "ls", url)
		msContains(t, "wrong password", errOut, "authentication failed for root")
	})

	t.Run("no password without a terminal", func(t *testing.T) {
		_, errOut := e.run(t, []string{"MREG_USER=root"}, false, "ls", url)
		msContains(t, "no password", errOut, "no password for root")
	})

	t.Run("rm tag", func(t *testing.T) {
		out, _ := e.run(t, msEnvFor("root", rootPW), true, "rm", url, "app:v1-alias")
		msContains(t, "rm tag", out, "removed tag app:v1-alias")
		msResolves(t, p.host, "app:v1-alias", "", admin)
		msResolves(t, p.host, "app:v1", d1, admin)
		msResolves(t, p.host, "app:stable", d1, admin)
		msResolves(t, p.host, "app@"+d1, d1, admin)

		_, errOut := e.run(t, msEnvFor("root", rootPW), false, "rm", url, "app:nope")
		msContains(t, "rm missing tag", errOut, "not found: app:nope")
	})

	t.Run("rm digest without -y and without a terminal is refused", func(t *testing.T) {
		out, errOut := e.run(t, msEnvFor("root", rootPW), false, "rm", url, "dig@"+d3)
		msContains(t, "rm digest stdout", out, "these tags will disappear: dig:x dig:y")
		msContains(t, "rm digest stderr", errOut, "refusing", "-y")
		msResolves(t, p.host, "dig:x", d3, admin)
	})

	t.Run("rm digest -y", func(t *testing.T) {
		out, _ := e.run(t, msEnvFor("root", rootPW), true, "rm", url, "dig@"+d3, "-y")
		msContains(t, "rm digest", out, "these tags will disappear: dig:x dig:y", "deleted dig@"+d3)
		if strings.Contains(out, "dig:z") {
			t.Fatalf("dig:z listed as disappearing: %q", out)
		}
		msResolves(t, p.host, "dig:x", "", admin)
		msResolves(t, p.host, "dig:y", "", admin)
		msResolves(t, p.host, "dig@"+d3, "", admin)
		msResolves(t, p.host, "dig:z", d4, admin)

		_, errOut := e.run(t, msEnvFor("root", rootPW), false, "-y", "rm", url, "dig@"+d3)
		msContains(t, "rm deleted digest", errOut, "not found: dig@"+d3)

		out, _ = e.run(t, msEnvFor("root", rootPW), true, "ls", url)
		msWantList(t, out, "app:stable", "app:v1", "app:v2", "b/one:1.0", "b/two:1.0", "dig:z")
	})

	t.Run("unreachable", func(t *testing.T) {
		closed := "http://127.0.0.1:" + strconv.Itoa(freePort(t))
		_, errOut := e.run(t, msEnvFor("root", rootPW), false, "ls", closed)
		msContains(t, "closed port", errOut, "cannot reach "+closed)
		// A bare host means HTTPS; the sidecar speaks plain HTTP here.
		_, errOut = e.run(t, msEnvFor("root", rootPW), false, "ls", p.host)
		msContains(t, "https to http", errOut, "cannot reach "+p.host, "--http")
		out, _ := e.run(t, msEnvFor("root", rootPW), true, "--http", "ls", p.host)
		msContains(t, "--http", out, "dig:z")
	})

	t.Run("tls", func(t *testing.T) {
		p.manageTLS(t, "", "generate", "127.0.0.1", "localhost")
		crt := filepath.Join(p.authDir, "tls.crt")
		port := strings.TrimPrefix(p.host, "127.0.0.1:")
		for _, host := range []string{p.host, "https://localhost:" + port + "/"} {
			out, _ := e.run(t, msEnvFor("reader", readerPW), true, "ls", "--cacert", crt, host)
			msWantList(t, out, "app:stable", "app:v1", "app:v2", "b/one:1.0", "b/two:1.0", "dig:z")
		}
		_, errOut := e.run(t, msEnvFor("reader", readerPW), false, "ls", p.host)
		msContains(t, "untrusted certificate", errOut, "cannot reach "+p.host, "--cacert")
		_, errOut = e.run(t, msEnvFor("reader", readerPW), false, "ls", "http://"+p.host)
		msContains(t, "http to https", errOut, "HTTP 400", "an HTTPS registry?")
		out, _ := e.run(t, msEnvFor("reader", readerPW), true, "--insecure", "ls", p.host)
		msContains(t, "--insecure", out, "dig:z")

		out, _ = e.run(t, msEnvFor("root", rootPW), true, "--cacert="+crt, "rm", p.host, "b/two:1.0")
		msContains(t, "rm over TLS", out, "removed tag b/two:1.0")
	})

	msNoSecrets(t, e, rootPW, readerPW, wrongPW)
}

// TestManageScriptBasicMode runs the script against a sidecar challenging
// with Basic (TestManageScriptAgainstSidecar covers the default token mode).
func TestManageScriptBasicMode(t *testing.T) {
	e := msSetup(t)
	p := startPair(t, "--auth", "basic")
	const rootPW, readerPW = "basic-root-pw-1", "basic-reader-pw-2"
	p.manageUser(t, rootPW+"\n", "add", "--admin", "--cost", "4", "root")
	p.manageUser(t, readerPW+"\n", "add", "--cost", "4", "reader")
	admin := basic("root", rootPW)
	img := msImage(t)
	msPush(t, p.host, admin, img, "lib/a:t1", "lib/a:t2")
	url := "http://" + p.host
	env := msEnvFor("root", rootPW)
	out, _ := e.run(t, env, true, "ls", url)
	msWantList(t, out, "lib/a:t1", "lib/a:t2")
	out, _ = e.run(t, env, true, "rm", url, "lib/a:t1")
	msContains(t, "rm in basic mode", out, "removed tag lib/a:t1")
	out, _ = e.run(t, env, true, "ls", url)
	msWantList(t, out, "lib/a:t2")
	_, errOut := e.run(t, msEnvFor("reader", readerPW), false, "rm", url, "lib/a:t2")
	msContains(t, "reader rm in basic mode", errOut, "permission denied")
	_, errOut = e.run(t, msEnvFor("root", "wrong-basic-pw"), false, "ls", url)
	msContains(t, "wrong password in basic mode", errOut, "authentication failed for root")
	msNoSecrets(t, e, rootPW, readerPW, "wrong-basic-pw")
}
