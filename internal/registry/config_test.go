package registry

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mreg-dev/mreg/internal/testutil"
)

func TestDefaultConfig(t *testing.T) {
	root := t.TempDir()
	cfg, err := LoadConfig(Options{Addr: "127.0.0.1:5001", Root: root, LogLevel: "info"})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.HTTP.Addr != "127.0.0.1:5001" {
		t.Errorf("addr = %q", cfg.HTTP.Addr)
	}
	if got := StorageRoot(cfg); got != root {
		t.Errorf("root = %q, want %q", got, root)
	}
	if d, _ := cfg.Storage["delete"]["enabled"].(bool); !d {
		t.Error("delete is not enabled")
	}
	if cfg.Log.Formatter != "json" {
		t.Errorf("formatter = %q", cfg.Log.Formatter)
	}
	if cfg.HTTP.Secret == "" {
		t.Error("no http secret")
	}
	if len(cfg.Validation.Manifests.URLs.Allow) == 0 {
		t.Error("foreign layer URLs are not allowed")
	}
}

func TestConfigFileWithEnvOverride(t *testing.T) {
	fileRoot, envRoot := t.TempDir(), t.TempDir()
	path := filepath.Join(t.TempDir(), "config.yml")
	yml := "version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: " + fileRoot + "\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:0\n"
	if err := os.WriteFile(path, []byte(yml), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY", envRoot)
	cfg, err := LoadConfig(Options{ConfigFile: path, Addr: "127.0.0.1:5001"})
	if err != nil {
		t.Fatal(err)
	}
	if got := StorageRoot(cfg); got != envRoot {
		t.Fatalf("root = %q, want the REGISTRY_* override %q", got, envRoot)
	}
	if cfg.HTTP.Addr != "127.0.0.1:0" {
		t.Errorf("addr from file = %q", cfg.HTTP.Addr)
	}

	// Serve it and push a blob: the data lands where the override says.
	srv, err := New(context.Background(), cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	base := "http://" + ln.Addr().String()
	const digest = "sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824" // "hello"
	testutil.UploadBlob(t, nil, base, "t", strings.NewReader("hello"), 5, digest, nil)
	blob := filepath.Join(envRoot, "docker/registry/v2/blobs/sha256/2c", digest[len("sha256:"):], "data")
	if _, err := os.Stat(blob); err != nil {
		t.Fatalf("blob not under the overridden root: %v", err)
	}
	if entries, _ := os.ReadDir(fileRoot); len(entries) != 0 {
		t.Fatalf("file root was written to: %v", entries)
	}
}

func TestConfigErrors(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	tests := []struct {
		name string
		opts Options
	}{
		{"missing file", Options{ConfigFile: filepath.Join(dir, "nope.yml")}},
		{"not yaml", Options{ConfigFile: write("bad.yml", "version: [\n")}},
		{"no storage", Options{ConfigFile: write("nostorage.yml", "version: 0.1\n")}},
		{"empty root", Options{Addr: "127.0.0.1:0"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := LoadConfig(tt.opts); err == nil {
				t.Fatal("no error")
			}
		})
	}
}

func TestNewTurnsDistributionPanicsIntoErrors(t *testing.T) {
	path := filepath.Join(t.TempDir(), "config.yml")
	if err := os.WriteFile(path, []byte("version: 0.1\nstorage:\n  nosuchdriver: {}\nhttp:\n  addr: 127.0.0.1:0\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := LoadConfig(Options{ConfigFile: path})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err = New(ctx, cfg, slog.New(slog.DiscardHandler))
	if !errors.Is(err, ErrConfig) {
		t.Fatalf("unknown storage driver: err = %v, want ErrConfig", err)
	}
}
