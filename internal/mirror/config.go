// Package mirror serves pull-through caches of upstream registries next to
// the hosted registry: /v2/<namespace>/<repo>/… (or the containerd mirror
// form /v2/<repo>/…?ns=<namespace>) is answered by an embedded Distribution
// in proxy mode for that upstream, with its own storage under
// <root>/_mirrors/<namespace>. mreg adds what Distribution's proxy lacks:
// many upstreams in one registry, a single upstream fetch for concurrent
// cold pulls, manifest revalidation times, per-upstream CA and user agent,
// credentials from the environment, read-only namespaces and clear errors
// when the upstream is down.
package mirror

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"go.yaml.in/yaml/v2"
)

// Sentinel errors of this package.
var (
	// ErrConfig: the upstreams file is invalid.
	ErrConfig = errors.New("invalid upstreams configuration")
)

// Upstream is one mirrored registry.
type Upstream struct {
	// Namespace is the first path component clients use, e.g. docker.io.
	Namespace string `yaml:"namespace"`
	// Host is the upstream's host[:port]; docker.io defaults to
	// registry-1.docker.io, anything else to Namespace.
	Host string `yaml:"host"`
	// TLS: https (default) or plain http.
	TLS *bool `yaml:"tls"`
	// CA is a PEM file of extra roots for this upstream.
	CA string `yaml:"ca"`
	// Username and Password; better from the credentials environment
	// variable, so they never sit in the file.
	Username string `yaml:"username"`
	Password string `yaml:"password"`
	// UserAgent sent upstream (default "mreg").
	UserAgent string `yaml:"userAgent"`
	// ManifestRevalidate: a tag resolved upstream less than this long ago
	// is answered from the cache without asking upstream (default 5m; 0s
	// asks every time).
	ManifestRevalidate *Duration `yaml:"manifestRevalidate"`
	// BlobRevalidate is accepted for symmetry; blobs are content-addressed
	// and verified against their digest, so they never need revalidation.
	BlobRevalidate *Duration `yaml:"blobRevalidate"`
	// MaxAge bounds the cache: content is dropped this long after it was
	// cached (default 168h; Distribution's proxy TTL).
	MaxAge *Duration `yaml:"maxAge"`
	// Default makes this upstream answer reads of repositories the hosted
	// registry does not have, without a namespace in the path: what
	// docker's "registry-mirrors" sends (/v2/library/alpine/…). At most
	// one upstream may be the default.
	Default bool `yaml:"default"`
}

// Duration is a time.Duration in YAML ("5m", "168h").
type Duration struct{ time.Duration }

// UnmarshalYAML parses a Go duration string.
func (d *Duration) UnmarshalYAML(unmarshal func(any) error) error {
	var s string
	if err := unmarshal(&s); err != nil {
		return err
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return err
	}
	d.Duration = v
	return nil
}

// file is the upstreams file.
type file struct {
	Upstreams []Upstream `yaml:"upstreams"`
}

// Credentials are the username and password of one upstream.
type Credentials struct {
	Username string `json:"username"`
	Password string `json:"password"`
}

// Load reads the upstreams file and merges credentials from credsJSON (the
// content of an environment variable: a JSON map namespace → credentials).
func Load(path, credsJSON string) ([]Upstream, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read upstreams: %w", err)
	}
	var f file
	if err := yaml.UnmarshalStrict(b, &f); err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrConfig, path, err)
	}
	creds := map[string]Credentials{}
	if strings.TrimSpace(credsJSON) != "" {
		if err := json.Unmarshal([]byte(credsJSON), &creds); err != nil {
			return nil, fmt.Errorf("%w: credentials variable is not a JSON map of namespace to {username, password}", ErrConfig)
		}
	}
	seen := map[string]bool{}
	defaults := 0
	for i := range f.Upstreams {
		u := &f.Upstreams[i]
		if err := u.normalize(); err != nil {
			return nil, err
		}
		if seen[u.Namespace] {
			return nil, fmt.Errorf("%w: namespace %q twice", ErrConfig, u.Namespace)
		}
		seen[u.Namespace] = true
		if u.Default {
			defaults++
		}
		if c, ok := creds[u.Namespace]; ok {
			u.Username, u.Password = c.Username, c.Password
		}
	}
	if defaults > 1 {
		return nil, fmt.Errorf("%w: more than one default upstream", ErrConfig)
	}
	return f.Upstreams, nil
}

func (u *Upstream) normalize() error {
	ns := strings.ToLower(strings.TrimSpace(u.Namespace))
	if ns == "" || strings.ContainsAny(ns, "/ ?#@") {
		return fmt.Errorf("%w: namespace %q must be one path component such as docker.io", ErrConfig, u.Namespace)
	}
	u.Namespace = ns
	if u.Host == "" {
		u.Host = ns
		if ns == "docker.io" {
			u.Host = "registry-1.docker.io"
		}
	}
	if strings.ContainsAny(u.Host, "/ ?#@") {
		return fmt.Errorf("%w: host %q of %s must be host[:port]", ErrConfig, u.Host, ns)
	}
	if u.TLS == nil {
		t := true
		u.TLS = &t
	}
	if u.UserAgent == "" {
		u.UserAgent = "mreg"
	}
	if u.ManifestRevalidate == nil {
		u.ManifestRevalidate = &Duration{5 * time.Minute}
	}
	if u.MaxAge == nil {
		u.MaxAge = &Duration{7 * 24 * time.Hour}
	}
	return nil
}

// URL is the upstream's base URL.
func (u Upstream) URL() string {
	if *u.TLS {
		return "https://" + u.Host
	}
	return "http://" + u.Host
}
