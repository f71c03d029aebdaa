package main

import (
	"archive/tar"
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// toolBin finds a client installed by scripts/install-test-tools (or on
// PATH). CI installs them, so there a missing tool fails the test.
func toolBin(t *testing.T, name string) string {
	t.Helper()
	if p, err := filepath.Abs(filepath.Join("..", "..", "bin", "tools", name)); err == nil {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	if os.Getenv("CI") != "" {
		t.Fatalf("%s not installed; scripts/test runs scripts/install-test-tools", name)
	}
	t.Skipf("%s not installed (scripts/install-test-tools)", name)
	return ""
}

// client runs a tool with its own HOME/DOCKER_CONFIG (so logins of
// different users do not mix) and optional extra environment.
type client struct {
	t    *testing.T
	bin  string
	home string
	env  []string
}

func newClient(t *testing.T, bin string, env ...string) *client {
	home := t.TempDir()
	return &client{t: t, bin: bin, home: home, env: append([]string{"HOME=" + home, "DOCKER_CONFIG=" + filepath.Join(home, ".docker")}, env...)}
}

func (c *client) run(stdin string, wantOK bool, args ...string) string {
	c.t.Helper()
	cmd := exec.Command(c.bin, args...)
	cmd.Env = append(os.Environ(), c.env...)
	cmd.Stdin = strings.NewReader(stdin)
	out, err := cmd.CombinedOutput()
	if (err == nil) != wantOK {
		c.t.Fatalf("%s %s: err=%v want ok=%v\n%s", filepath.Base(c.bin), strings.Join(args, " "), err, wantOK, out)
	}
	return string(out)
}

// layerTar is a one-file tar for `crane append`.
func layerTar(t *testing.T, content string) string {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	if err := tw.WriteHeader(&tar.Header{Name: "hello.txt", Mode: 0o644, Size: int64(len(content))}); err != nil {
		t.Fatal(err)
	}
	_, _ = tw.Write([]byte(content))
	tw.Close()
	p := filepath.Join(t.TempDir(), "layer.tar")
	if err := os.WriteFile(p, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestCraneAndRegctlTokenMode drives the sidecar in token mode (the
// default) with crane and regctl, over HTTP and over verified HTTPS.
func TestCraneAndRegctlTokenMode(t *testing.T) {
	crane, regctl := toolBin(t, "crane"), toolBin(t, "regctl")
	for _, tlsOn := range []bool{false, true} {
		name := "http"
		if tlsOn {
			name = "https"
		}
		t.Run(name, func(t *testing.T) {
			p := startPair(t, "--auth", "token")
			p.manageUser(t, "root-pw\n", "add", "--admin", "--cost", "4", "root")
			p.manageUser(t, "alice-pw\n", "add", "--cost", "4", "alice")
			var craneFlags []string
			var env []string
			tlsMode := "disabled"
			if tlsOn {
				p.manageTLS(t, "", "generate", "127.0.0.1", "localhost")
				// Go clients read extra roots from SSL_CERT_FILE.
				env = append(env, "SSL_CERT_FILE="+filepath.Join(p.authDir, "tls.crt"))
				tlsMode = "enabled"
			} else {
				craneFlags = []string{"--insecure"}
			}
			cflags := func(args ...string) []string { return append(args, craneFlags...) }

			admin := newClient(t, crane, env...)
			admin.run("root-pw", true, "auth", "login", p.host, "-u", "root", "--password-stdin")
			ref := p.host + "/crane/app:v1"
			admin.run("", true, cflags("append", "-f", layerTar(t, "hello "+name), "-t", ref)...)
			digest := strings.TrimSpace(admin.run("", true, cflags("digest", ref)...))
			if !strings.HasPrefix(digest, "sha256:") {
				t.Fatalf("crane digest: %q", digest)
			}
			if ls := admin.run("", true, cflags("ls", p.host+"/crane/app")...); strings.TrimSpace(ls) != "v1" {
				t.Fatalf("crane ls: %q", ls)
			}
			if cat := admin.run("", true, cflags("catalog", p.host)...); !strings.Contains(cat, "crane/app") {
				t.Fatalf("crane catalog: %q", cat)
			}

			user := newClient(t, crane, env...)
			user.run("alice-pw", true, "auth", "login", p.host, "-u", "alice", "--password-stdin")
			user.run("", true, cflags("pull", ref, filepath.Join(t.TempDir(), "img.tar"))...)
			if out := user.run("", false, cflags("delete", p.host+"/crane/app@"+digest)...); !strings.Contains(out, "DENIED") && !strings.Contains(out, "403") {
				t.Fatalf("user delete refused without DENIED: %s", out)
			}
			user.run("", false, cflags("tag", ref, "v2")...)
			wrong := newClient(t, crane, env...)
			wrong.run("nope", true, "auth", "login", p.host, "-u", "alice", "--password-stdin") // crane stores without checking
			wrong.run("", false, cflags("digest", ref)...)

			// regctl: copy between repositories as admin, list, refused as user.
			radmin := newClient(t, regctl, env...)
			radmin.run("", true, "registry", "set", p.host, "--tls", tlsMode)
			radmin.run("root-pw", true, "registry", "login", p.host, "-u", "root", "--pass-stdin")
			radmin.run("", true, "image", "copy", ref, p.host+"/regctl/app:v1")
			if got := strings.TrimSpace(radmin.run("", true, "image", "digest", p.host+"/regctl/app:v1")); got != digest {
				t.Fatalf("regctl digest %q, want %q", got, digest)
			}
			if tags := radmin.run("", true, "tag", "ls", p.host+"/regctl/app"); strings.TrimSpace(tags) != "v1" {
				t.Fatalf("regctl tag ls: %q", tags)
			}
			ruser := newClient(t, regctl, env...)
			ruser.run("", true, "registry", "set", p.host, "--tls", tlsMode)
			ruser.run("alice-pw", true, "registry", "login", p.host, "-u", "alice", "--pass-stdin")
			ruser.run("", true, "manifest", "get", p.host+"/regctl/app:v1")
			ruser.run("", false, "image", "copy", ref, p.host+"/regctl/evil:v1")
			radmin.run("", true, "tag", "delete", p.host+"/regctl/app:v1")
			ruser.run("", false, "manifest", "head", p.host+"/regctl/app:v1")

			// The clients really went through the token endpoint.
			if log := p.sidecar.output(); !strings.Contains(log, `"path":"/token"`) {
				t.Fatalf("no request to /token in the sidecar log:\n%s", log)
			}
		})
	}
}
