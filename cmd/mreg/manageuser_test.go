package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mreg-dev/mreg/internal/users"
)

// cliRun runs the command tree in-process with argv and stdin.
func cliRun(t *testing.T, argv []string, stdin string) (string, error) {
	t.Helper()
	cmd := newRootCmd(argv)
	var out bytes.Buffer
	cmd.SetIn(strings.NewReader(stdin))
	cmd.SetOut(&out)
	cmd.SetErr(&out)
	err := cmd.ExecuteContext(context.Background())
	return out.String(), err
}

func TestManageUserCLI(t *testing.T) {
	dir := t.TempDir()
	db := filepath.Join(dir, users.FileName)
	mu := func(stdin string, args ...string) (string, error) {
		args = append(args, "--auth-dir", dir)
		if len(args) > 0 && args[0] == "add" {
			args = append(args, "--cost", "4")
		}
		return cliRun(t, append([]string{"mreg", "manage-user"}, args...), stdin)
	}
	mustMU := func(stdin string, args ...string) string {
		t.Helper()
		out, err := mu(stdin, args...)
		if err != nil {
			t.Fatalf("manage-user %v: %v\n%s", args, err, out)
		}
		return out
	}
	if out := mustMU("pw-a\n", "add", "alice"); !strings.Contains(out, "added alice") {
		t.Fatalf("add: %q", out)
	}
	mustMU("pw-b\r\n", "add", "--admin", "bob")
	info, err := os.Stat(db)
	if err != nil || info.Mode().Perm() != 0o600 {
		t.Fatalf("users.db: %v mode %v", err, info.Mode().Perm())
	}
	if out := mustMU("pw-a2\n", "add", "alice"); !strings.Contains(out, "password changed for alice") {
		t.Fatalf("re-add: %q", out)
	}

	// ls: human and JSON.
	out := mustMU("", "ls")
	if !regexpLine(out, "alice", "user") || !regexpLine(out, "bob", "admin") {
		t.Fatalf("ls:\n%s", out)
	}
	var list []struct {
		Name  string `json:"name"`
		Admin bool   `json:"admin"`
		Role  string `json:"role"`
	}
	if err := json.Unmarshal([]byte(mustMU("", "ls", "--json")), &list); err != nil {
		t.Fatal(err)
	}
	if len(list) != 2 || list[0].Name != "alice" || list[0].Admin || !list[1].Admin || list[1].Role != "admin" {
		t.Fatalf("ls --json: %+v", list)
	}
	if strings.Contains(mustMU("", "ls", "--json"), "hash") {
		t.Fatal("ls --json leaks password hashes")
	}

	// The stored hash is bcrypt of the first stdin line, without CR/LF.
	snap, _ := users.List(context.Background(), db)
	if !bcryptMatches(snap[1].Hash, "pw-b") || !bcryptMatches(snap[0].Hash, "pw-a2") {
		t.Fatal("stored hashes do not match the passwords given on stdin")
	}

	mustMU("", "toggle", "alice")
	mustMU("", "rm", "bob")
	list = nil
	_ = json.Unmarshal([]byte(mustMU("", "ls", "--json")), &list)
	if len(list) != 1 || !list[0].Admin {
		t.Fatalf("after toggle+rm: %+v", list)
	}

	// Every failure is an error (non-zero exit) and changes nothing.
	before, _ := os.ReadFile(db)
	failures := []struct {
		stdin string
		args  []string
		want  error
	}{
		{"pw\n", []string{"add", "bad:name"}, users.ErrInvalidName},
		{"pw\n", []string{"add", "_under"}, users.ErrInvalidName},
		{"pw\n", []string{"add", strings.Repeat("a", 65)}, users.ErrInvalidName},
		{"\n", []string{"add", "carol"}, users.ErrEmptyPassword},
		{"", []string{"add", "carol"}, users.ErrEmptyPassword},
		{strings.Repeat("x", 73) + "\n", []string{"add", "carol"}, users.ErrPasswordTooLong},
		{"", []string{"toggle", "nobody"}, users.ErrNotFound},
		{"", []string{"rm", "nobody"}, users.ErrNotFound},
	}
	for _, f := range failures {
		if _, err := mu(f.stdin, f.args...); !errors.Is(err, f.want) {
			t.Errorf("manage-user %v: err = %v, want %v", f.args, err, f.want)
		}
	}
	for _, args := range [][]string{{"add"}, {"rm"}, {"toggle", "a", "b"}, {"frobnicate"}, {}} {
		if _, err := mu("", args...); err == nil {
			t.Errorf("manage-user %v: no error", args)
		}
	}
	if after, _ := os.ReadFile(db); !bytes.Equal(before, after) {
		t.Error("a failed command changed users.db")
	}
}

func TestArgv0AndEnvironment(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("MREG_AUTH_DIR", dir)
	// Invoked through a link named manage-user, with the auth dir from the
	// environment.
	if _, err := cliRun(t, []string{"/usr/local/bin/manage-user", "add", "--cost", "4", "dave"}, "pw\n"); err != nil {
		t.Fatal(err)
	}
	out, err := cliRun(t, []string{"manage-user", "ls"}, "")
	if err != nil || !strings.Contains(out, "dave") {
		t.Fatalf("ls via argv0 and MREG_AUTH_DIR: %v %q", err, out)
	}
	// A flag wins over the environment.
	other := t.TempDir()
	out, err = cliRun(t, []string{"mreg", "manage-user", "ls", "--auth-dir", other}, "")
	if err != nil || strings.Contains(out, "dave") {
		t.Fatalf("--auth-dir did not win over MREG_AUTH_DIR: %v %q", err, out)
	}
	// A bad value in the environment is a clear error.
	t.Setenv("MREG_COST", "many")
	if _, err := cliRun(t, []string{"mreg", "manage-user", "add", "erin"}, "pw\n"); err == nil || !strings.Contains(err.Error(), "MREG_COST") {
		t.Fatalf("bad MREG_COST: %v", err)
	}
}

func TestHelpShowsExamples(t *testing.T) {
	for _, sub := range []string{"registry", "sidecar", "manage-user", "manage-tls", "healthcheck"} {
		out, err := cliRun(t, []string{"mreg", sub, "--help"}, "")
		if err != nil || !strings.Contains(out, "Examples:") {
			t.Errorf("mreg %s --help: %v, no examples:\n%s", sub, err, out)
		}
	}
}

func TestHealthcheckFailsWithoutServer(t *testing.T) {
	port := freePort(t)
	_, err := cliRun(t, []string{"mreg", "healthcheck", "--url", "http://127.0.0.1:" + itoa(port) + "/v2/", "--timeout", "1s"}, "")
	if err == nil {
		t.Fatal("healthcheck succeeded with nothing listening")
	}
}

func TestVersion(t *testing.T) {
	out, err := cliRun(t, []string{"mreg", "version", "--json"}, "")
	if err != nil {
		t.Fatal(err)
	}
	var v versionInfo
	if err := json.Unmarshal([]byte(out), &v); err != nil {
		t.Fatalf("version --json: %v: %q", err, out)
	}
	if !strings.HasPrefix(v.Go, "go1.") || !strings.HasPrefix(v.Distribution, "v3.") {
		t.Fatalf("version: %+v", v)
	}
}
