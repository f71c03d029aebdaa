package certs

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
)

// fileMode is the mode of tls.crt and tls.key; dirMode that of a newly
// created auth directory.
const (
	fileMode fs.FileMode = 0o600
	dirMode  fs.FileMode = 0o700
)

// Change reports what SetCert or SetKey did and the state afterwards.
type Change struct {
	// Written and Removed list the paths written and removed; both are
	// empty when the file to remove did not exist.
	Written []string
	Removed []string
	// Cert describes the certificate written, nil if none was.
	Cert *Info
	// KeyType describes the key written ("ECDSA P-256"), empty if none was.
	KeyType string
	// HaveCert and HaveKey tell whether tls.crt and tls.key exist after the
	// change. When both do, they match.
	HaveCert, HaveKey bool
	// Warnings are problems that did not stop the change, such as an
	// expired certificate.
	Warnings []string
}

// SetCert installs the certificate chain in input as tls.crt; blank input
// removes tls.crt instead. If input also holds a private key, it is a
// cert+key bundle and the key is installed as tls.key as well. Otherwise an
// existing tls.key must match the new certificate. Nothing is written
// unless everything checks out.
func (d Dir) SetCert(input []byte) (*Change, error) {
	if IsBlank(input) {
		return d.remove(d.CertPath(), d.KeyPath())
	}
	m, err := ParsePEM(input)
	if err != nil {
		return nil, err
	}
	if len(m.Chain) == 0 {
		return nil, fmt.Errorf("%w: the input holds a private key but no CERTIFICATE block (install a key alone with manage-tls key)", ErrInvalidCert)
	}
	ch := &Change{HaveCert: true}
	if m.Key == nil {
		key, err := readOptional(d.KeyPath())
		if err != nil {
			return nil, err
		}
		if key != nil {
			if err := checkInstalled(KeyFileName, key, m.certPEM, true); err != nil {
				return nil, err
			}
			ch.HaveKey = true
		}
	}
	now := d.now()
	ch.Warnings = certWarnings(m.Chain, now)
	files := []pending{}
	if m.Key != nil {
		ch.Warnings = append(ch.Warnings, keyWarnings(m.Key)...)
		ch.KeyType = describeKey(m.Key.Public())
		ch.HaveKey = true
		files = append(files, pending{d.KeyPath(), m.keyPEM})
	}
	files = append(files, pending{d.CertPath(), m.certPEM})
	if err := writeAll(d.Path, files); err != nil {
		return nil, err
	}
	for _, f := range files {
		ch.Written = append(ch.Written, f.path)
	}
	info := describe(m.Chain, now)
	info.CertFile, info.KeyFile = d.CertPath(), d.KeyPath()
	info.KeyPresent, info.KeyMatches = ch.HaveKey, ch.HaveKey
	ch.Cert = &info
	return ch, nil
}

// SetKey installs the private key in input as tls.key; blank input removes
// tls.key instead. If tls.crt exists, the key must match it. Certificates
// in the input are refused: a bundle goes through SetCert.
func (d Dir) SetKey(input []byte) (*Change, error) {
	if IsBlank(input) {
		return d.remove(d.KeyPath(), d.CertPath())
	}
	m, err := ParsePEM(input)
	if err != nil {
		return nil, err
	}
	if len(m.Chain) > 0 {
		return nil, fmt.Errorf("%w: the input holds certificates; pipe a certificate+key bundle to manage-tls cert instead", ErrInvalidKey)
	}
	ch := &Change{HaveKey: true, KeyType: describeKey(m.Key.Public()), Warnings: keyWarnings(m.Key)}
	cert, err := readOptional(d.CertPath())
	if err != nil {
		return nil, err
	}
	if cert != nil {
		if err := checkInstalled(CertFileName, cert, m.keyPEM, false); err != nil {
			return nil, err
		}
		ch.HaveCert = true
	}
	if err := writeAll(d.Path, []pending{{d.KeyPath(), m.keyPEM}}); err != nil {
		return nil, err
	}
	ch.Written = []string{d.KeyPath()}
	return ch, nil
}

// checkInstalled validates the installed file name (content installed) and
// checks that it pairs with the new certificate or key. newIsCert tells
// which of the two the new material is.
func checkInstalled(name string, installed, newPEM []byte, newIsCert bool) error {
	m, err := ParsePEM(installed)
	if err == nil && newIsCert && m.Key == nil {
		err = fmt.Errorf("%w: no private key in it", ErrInvalidKey)
	}
	if err == nil && !newIsCert && len(m.Chain) == 0 {
		err = fmt.Errorf("%w: no certificate in it", ErrInvalidCert)
	}
	if err != nil {
		return fmt.Errorf("installed %s is unusable: %w", name, err)
	}
	if newIsCert {
		err = checkPair(newPEM, m.keyPEM)
	} else {
		err = checkPair(m.certPEM, newPEM)
	}
	if err != nil {
		return fmt.Errorf("installed %s: %w", name, err)
	}
	return nil
}

// remove deletes path (no error if it is absent) and reports whether other,
// its partner, still exists.
func (d Dir) remove(path, other string) (*Change, error) {
	ch := &Change{}
	switch err := os.Remove(path); {
	case err == nil:
		ch.Removed = []string{path}
		if err := syncDir(d.Path); err != nil {
			return nil, err
		}
	case !errors.Is(err, fs.ErrNotExist):
		return nil, fmt.Errorf("remove %s: %w", path, hintReadOnly(err))
	}
	_, err := os.Stat(other)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("stat %s: %w", other, err)
	}
	if path == d.CertPath() {
		ch.HaveKey = err == nil
	} else {
		ch.HaveCert = err == nil
	}
	return ch, nil
}

// readOptional returns the content of path, or nil when it does not exist.
func readOptional(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	return b, nil
}

// pending is a file to write.
type pending struct {
	path string
	data []byte
}

// writeAll writes files atomically into dir (created 0700 if missing):
// every file goes to a 0600 temporary file in dir first, written and
// fsynced; only when all are staged are they renamed over their targets, in
// order, and the directory fsynced. On error no temporary file is left.
func writeAll(dir string, files []pending) error {
	if err := os.MkdirAll(dir, dirMode); err != nil {
		return fmt.Errorf("create auth directory: %w", hintReadOnly(err))
	}
	var tmps []string
	defer func() {
		for _, t := range tmps {
			_ = os.Remove(t) // already renamed on success: ENOENT
		}
	}()
	for _, f := range files {
		tmp, err := stage(dir, f)
		if err != nil {
			return err
		}
		tmps = append(tmps, tmp)
	}
	for i, f := range files {
		if err := os.Rename(tmps[i], f.path); err != nil {
			return fmt.Errorf("install %s: %w", f.path, hintReadOnly(err))
		}
	}
	return syncDir(dir)
}

// stage writes f's data to a new temporary file next to f.path and returns
// its name.
func stage(dir string, f pending) (string, error) {
	// CreateTemp creates the file with mode 0600 before anything is written.
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(f.path)+".tmp-*")
	if err != nil {
		return "", fmt.Errorf("write %s: %w", f.path, hintReadOnly(err))
	}
	name := tmp.Name()
	err = tmp.Chmod(fileMode) // in case the platform's default differs
	if err == nil {
		_, err = tmp.Write(f.data)
	}
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		_ = os.Remove(name)
		return "", fmt.Errorf("write %s: %w", f.path, err)
	}
	return name, nil
}

// syncDir makes renames and removals in dir durable.
func syncDir(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("sync auth directory: %w", err)
	}
	defer f.Close()
	if err := f.Sync(); err != nil {
		return fmt.Errorf("sync auth directory: %w", err)
	}
	return nil
}

// hintReadOnly explains the usual cause of a read-only auth directory.
func hintReadOnly(err error) error {
	if errors.Is(err, syscall.EROFS) {
		return fmt.Errorf("%w (is the auth directory a mounted Secret? update the Secret instead)", err)
	}
	return err
}
