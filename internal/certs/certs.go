// Package certs manages the sidecar's TLS material: tls.crt (the
// certificate chain, leaf first) and tls.key (its private key) in the auth
// directory.
//
// Everything that changes the files validates first and writes atomically
// (a 0600 temporary file in the same directory, fsync, rename), so the
// sidecar, which stats both files on every new connection, only ever sees
// complete files. A certificate and a key are checked to form a pair before
// either is written; the one moment the sidecar can see a mismatch is
// between the two renames of a cert+key bundle, and it keeps serving the
// previous pair until the second rename lands.
//
// The files: parse.go reads and validates PEM input, store.go installs and
// removes files, generate.go makes self-signed pairs, info.go describes what
// is installed.
package certs

import (
	"errors"
	"path/filepath"
	"time"
)

// Sentinel errors of this package. Errors returned by this package wrap one
// of them (test with errors.Is) and carry the details in their message.
var (
	// ErrInvalidPEM: the input is not well-formed PEM of the kinds expected
	// (garbage, a truncated block, a CSR or public key where a certificate
	// or private key was expected).
	ErrInvalidPEM = errors.New("invalid PEM input")
	// ErrInvalidCert: no certificate where one is required, a certificate
	// that does not parse, or a chain that is not in order (leaf first).
	ErrInvalidCert = errors.New("invalid certificate")
	// ErrInvalidKey: no key where one is required, a key that does not
	// parse, an encrypted key, an unsupported key type or several keys.
	ErrInvalidKey = errors.New("invalid private key")
	// ErrMismatch: the private key does not belong to the leaf certificate.
	ErrMismatch = errors.New("certificate and private key do not match")
	// ErrNoCert: tls.crt does not exist.
	ErrNoCert = errors.New("no certificate installed")
	// ErrExists: generating would overwrite tls.crt or tls.key.
	ErrExists = errors.New("TLS files already exist")
	// ErrInvalidHost: a host name given for a generated certificate is
	// neither an IP address nor a plausible DNS name.
	ErrInvalidHost = errors.New("invalid host name")
)

// File names inside the auth directory.
const (
	CertFileName = "tls.crt"
	KeyFileName  = "tls.key"
)

// Dir is an auth directory holding tls.crt and tls.key.
type Dir struct {
	// Path of the directory; created with mode 0700 on the first write.
	Path string
	// Now returns the current time, for validity checks; nil means
	// time.Now.
	Now func() time.Time
}

// CertPath is the path of tls.crt.
func (d Dir) CertPath() string { return filepath.Join(d.Path, CertFileName) }

// KeyPath is the path of tls.key.
func (d Dir) KeyPath() string { return filepath.Join(d.Path, KeyFileName) }

func (d Dir) now() time.Time {
	if d.Now != nil {
		return d.Now()
	}
	return time.Now()
}
