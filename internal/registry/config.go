// Package registry embeds the CNCF Distribution registry as a library and
// serves it on an address of mreg's choosing (the pod's loopback by default).
//
// mreg serves Distribution's handlers.App from its own http.Server instead of
// registry.NewRegistry: the latter always initialises OpenTelemetry with a
// sampling ratio of 1 and an OTLP exporter to localhost:4318, so every request
// would build and export a span and, without a collector, fill the log with
// export errors. With this server the global tracer stays a no-op.
package registry

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"strings"

	"github.com/distribution/distribution/v3/configuration"

	"github.com/mreg-dev/mreg/internal/mirror"
	"go.yaml.in/yaml/v2"
)

// Options are the settings `mreg registry` takes from flags and environment.
type Options struct {
	// Addr is the listen address; loopback by default so that only the
	// sidecar in the same pod reaches the registry.
	Addr string
	// Root is the filesystem storage root, used when ConfigFile is empty.
	Root string
	// ConfigFile is a full Distribution configuration. When set it wins over
	// Root, and Distribution's REGISTRY_* environment overrides apply to it.
	ConfigFile string
	// LogLevel is Distribution's log level (error, warn, info, debug).
	LogLevel string
	// Upstreams are the pull-through caches to serve (see internal/mirror).
	Upstreams []mirror.Upstream
	// MetricsAddr, when set, serves Distribution's Prometheus metrics
	// there (keep it on loopback; the sidecar republishes them).
	MetricsAddr string
}

// defaultConfig is the configuration used without --config. It is YAML, not a
// struct literal, so that it goes through configuration.Parse exactly like a
// user's file and the REGISTRY_* overrides work the same way for both.
func defaultConfig(o Options) []byte {
	doc := map[string]any{
		"version": "0.1",
		"log": map[string]any{
			"level":     o.LogLevel,
			"formatter": "json",
			"accesslog": map[string]any{"disabled": true},
		},
		"storage": map[string]any{
			"filesystem": map[string]any{"rootdirectory": o.Root},
			"delete":     map[string]any{"enabled": true},
			"cache":      map[string]any{"blobdescriptor": "inmemory"},
			"maintenance": map[string]any{
				"uploadpurging": map[string]any{
					"enabled": true, "age": "168h", "interval": "24h", "dryrun": false,
				},
			},
		},
		"http": map[string]any{"addr": o.Addr},
		// Layers with foreign URLs (non-distributable layers) are accepted
		// as long as they point at http(s); Distribution rejects them all
		// by default.
		"validation": map[string]any{
			"manifests": map[string]any{
				"urls": map[string]any{"allow": []string{`^https?://`}},
			},
		},
	}
	b, err := yaml.Marshal(doc)
	if err != nil {
		// A map of strings always marshals; keep the error visible anyway.
		return []byte(fmt.Sprintf("# marshal error: %v\n", err))
	}
	return b
}

// LoadConfig resolves the Distribution configuration for o.
func LoadConfig(o Options) (*configuration.Configuration, error) {
	var src []byte
	name := "built-in defaults"
	if o.ConfigFile != "" {
		b, err := os.ReadFile(o.ConfigFile)
		if err != nil {
			return nil, fmt.Errorf("read registry config: %w", err)
		}
		src, name = b, o.ConfigFile
	} else {
		if o.Root == "" {
			return nil, fmt.Errorf("%w: storage root is empty", ErrConfig)
		}
		src = defaultConfig(o)
	}
	cfg, err := configuration.Parse(bytes.NewReader(src))
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrConfig, name, err)
	}
	if o.ConfigFile == "" || cfg.HTTP.Addr == "" {
		cfg.HTTP.Addr = o.Addr
	}
	if cfg.HTTP.Addr == "" {
		return nil, fmt.Errorf("%w: no listen address", ErrConfig)
	}
	if o.MetricsAddr != "" {
		// Distribution instruments its routes only when this is on; it
		// registers them in the Prometheus default registry, so only one
		// registry per process may have it (the CLI's case).
		cfg.HTTP.Debug.Prometheus.Enabled = true
	}
	if cfg.Log.Formatter == "" {
		cfg.Log.Formatter = "json"
	}
	if cfg.HTTP.Secret == "" {
		// One registry per pod: a per-process secret is correct and saves
		// Distribution's warning about generating one.
		var b [32]byte
		if _, err := rand.Read(b[:]); err != nil {
			return nil, fmt.Errorf("generate http secret: %w", err)
		}
		cfg.HTTP.Secret = hex.EncodeToString(b[:])
	}
	return cfg, nil
}

// StorageRoot returns the filesystem root of cfg, or "" when the storage
// driver is not the filesystem driver.
func StorageRoot(cfg *configuration.Configuration) string {
	if !strings.EqualFold(cfg.Storage.Type(), "filesystem") {
		return ""
	}
	root, _ := cfg.Storage.Parameters()["rootdirectory"].(string)
	if root == "" {
		root = "/var/lib/registry" // Distribution's own default.
	}
	return root
}
