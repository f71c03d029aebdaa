package certs_test

import (
	"bytes"
	"crypto/tls"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mreg-dev/mreg/internal/certs"
)

// TestSetCertSetKey runs cert and key installs against existing files and
// checks the files afterwards, byte for byte: on error nothing changed.
func TestSetCertSetKey(t *testing.T) {
	a := mkCert(t, spec{hosts: []string{"a.example"}})
	b := mkCert(t, spec{hosts: []string{"b.example"}, keyType: "rsa", keyFormat: "pkcs1"})
	ca := mkCert(t, spec{cn: "CA", isCA: true})
	leaf := mkCert(t, spec{hosts: []string{"l.example"}, parent: ca})
	expired := mkCert(t, spec{hosts: []string{"a.example"}, notBefore: time.Now().AddDate(-1, 0, 0), notAfter: time.Now().AddDate(0, 0, -2)})
	future := mkCert(t, spec{hosts: []string{"a.example"}, notBefore: time.Now().AddDate(0, 0, 2)})
	noSAN := mkCert(t, spec{})

	tests := []struct {
		name           string
		op             string // "cert" or "key"
		crt, key       []byte // installed before; nil: absent
		input          []byte
		wantErr        error
		wantCrt        []byte // afterwards; nil: absent
		wantKey        []byte
		wantWarn       string
		haveC, haveK   bool
		written, remvd int
	}{
		{name: "cert into empty dir", op: "cert", input: a.certPEM, wantCrt: a.certPEM, haveC: true, written: 1},
		{name: "cert matching installed key", op: "cert", key: a.keyPEM, input: a.certPEM, wantCrt: a.certPEM, wantKey: a.keyPEM, haveC: true, haveK: true, written: 1},
		{name: "cert replacing cert", op: "cert", crt: b.certPEM, key: a.keyPEM, input: a.certPEM, wantCrt: a.certPEM, wantKey: a.keyPEM, haveC: true, haveK: true, written: 1},
		{name: "cert mismatching installed key", op: "cert", crt: b.certPEM, key: b.keyPEM, input: a.certPEM, wantErr: certs.ErrMismatch, wantCrt: b.certPEM, wantKey: b.keyPEM},
		{name: "cert with unusable installed key", op: "cert", key: []byte("junk"), input: a.certPEM, wantErr: certs.ErrInvalidPEM, wantKey: []byte("junk")},
		{name: "bundle replaces both", op: "cert", crt: b.certPEM, key: b.keyPEM, input: cat(a.certPEM, a.keyPEM), wantCrt: a.certPEM, wantKey: a.keyPEM, haveC: true, haveK: true, written: 2},
		{name: "bundle chain", op: "cert", input: cat(leaf.keyPEM, leaf.certPEM, ca.certPEM), wantCrt: cat(leaf.certPEM, ca.certPEM), wantKey: leaf.keyPEM, haveC: true, haveK: true, written: 2},
		{name: "bundle mismatch", op: "cert", crt: b.certPEM, input: cat(a.certPEM, b.keyPEM), wantErr: certs.ErrMismatch, wantCrt: b.certPEM},
		{name: "key given as cert", op: "cert", crt: b.certPEM, input: a.keyPEM, wantErr: certs.ErrInvalidCert, wantCrt: b.certPEM},
		{name: "garbage cert", op: "cert", crt: b.certPEM, input: []byte("garbage"), wantErr: certs.ErrInvalidPEM, wantCrt: b.certPEM},
		{name: "truncated cert", op: "cert", crt: b.certPEM, input: a.certPEM[:100], wantErr: certs.ErrInvalidPEM, wantCrt: b.certPEM},
		{name: "expired cert warns", op: "cert", input: expired.certPEM, wantCrt: expired.certPEM, wantWarn: "EXPIRED", haveC: true, written: 1},
		{name: "future cert warns", op: "cert", input: future.certPEM, wantCrt: future.certPEM, wantWarn: "not valid before", haveC: true, written: 1},
		{name: "cert without SAN warns", op: "cert", input: noSAN.certPEM, wantCrt: noSAN.certPEM, wantWarn: "no DNS or IP", haveC: true, written: 1},
		{name: "blank removes cert", op: "cert", crt: a.certPEM, key: a.keyPEM, input: []byte(" \n"), wantKey: a.keyPEM, haveK: true, remvd: 1},
		{name: "blank cert when absent", op: "cert", input: nil},

		{name: "key into empty dir", op: "key", input: a.keyPEM, wantKey: a.keyPEM, haveK: true, written: 1},
		{name: "key matching installed cert", op: "key", crt: b.certPEM, input: b.keyPEM, wantCrt: b.certPEM, wantKey: b.keyPEM, haveC: true, haveK: true, written: 1},
		{name: "key mismatching installed cert", op: "key", crt: b.certPEM, key: b.keyPEM, input: a.keyPEM, wantErr: certs.ErrMismatch, wantCrt: b.certPEM, wantKey: b.keyPEM},
		{name: "key with certificate input", op: "key", input: cat(a.certPEM, a.keyPEM), wantErr: certs.ErrInvalidKey},
		{name: "cert given as key", op: "key", key: b.keyPEM, input: a.certPEM, wantErr: certs.ErrInvalidKey, wantKey: b.keyPEM},
		{name: "garbage key", op: "key", key: b.keyPEM, input: []byte("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"), wantErr: certs.ErrInvalidKey, wantKey: b.keyPEM},
		{name: "blank removes key", op: "key", crt: a.certPEM, key: a.keyPEM, input: []byte(""), wantCrt: a.certPEM, haveC: true, remvd: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := certs.Dir{Path: filepath.Join(t.TempDir(), "auth")}
			if tt.crt != nil {
				writeFile(t, d.Path, certs.CertFileName, tt.crt)
			}
			if tt.key != nil {
				writeFile(t, d.Path, certs.KeyFileName, tt.key)
			}
			set := d.SetCert
			if tt.op == "key" {
				set = d.SetKey
			}
			ch, err := set(tt.input)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("err = %v, want %v", err, tt.wantErr)
			}
			if got := readOr(t, d.CertPath()); !bytes.Equal(got, tt.wantCrt) {
				t.Errorf("tls.crt afterwards:\n%s\nwant:\n%s", got, tt.wantCrt)
			}
			if got := readOr(t, d.KeyPath()); !bytes.Equal(got, tt.wantKey) {
				t.Errorf("tls.key afterwards differs (%d bytes, want %d)", len(got), len(tt.wantKey))
			}
			for _, n := range dirNames(t, d.Path) {
				if n != certs.CertFileName && n != certs.KeyFileName {
					t.Errorf("stray file %s left in the auth dir", n)
				}
			}
			if err != nil {
				return
			}
			if ch.HaveCert != tt.haveC || ch.HaveKey != tt.haveK {
				t.Errorf("HaveCert %v HaveKey %v, want %v %v", ch.HaveCert, ch.HaveKey, tt.haveC, tt.haveK)
			}
			if len(ch.Written) != tt.written || len(ch.Removed) != tt.remvd {
				t.Errorf("written %v removed %v, want %d and %d", ch.Written, ch.Removed, tt.written, tt.remvd)
			}
			warnings := strings.Join(ch.Warnings, "\n")
			if tt.wantWarn == "" && warnings != "" {
				t.Errorf("unexpected warnings: %s", warnings)
			}
			if !strings.Contains(warnings, tt.wantWarn) {
				t.Errorf("warnings %q, want %q", warnings, tt.wantWarn)
			}
			for _, p := range ch.Written {
				if st, err := os.Stat(p); err != nil || st.Mode().Perm() != 0o600 {
					t.Errorf("%s: mode %v (err %v), want 0600", p, st.Mode().Perm(), err)
				}
			}
			if ch.HaveCert && ch.HaveKey {
				if _, err := tls.LoadX509KeyPair(d.CertPath(), d.KeyPath()); err != nil {
					t.Errorf("installed pair does not load: %v", err)
				}
			}
		})
	}
}

func TestWriteModesAndAtomicity(t *testing.T) {
	a := mkCert(t, spec{hosts: []string{"a.example"}})
	b := mkCert(t, spec{hosts: []string{"b.example"}})
	d := certs.Dir{Path: filepath.Join(t.TempDir(), "new", "auth")}

	if _, err := d.SetCert(cat(a.certPEM, a.keyPEM)); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(d.Path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o700 {
		t.Errorf("auth dir created with mode %v, want 0700", st.Mode().Perm())
	}
	// Widen the modes: the next write must not inherit them.
	for _, p := range []string{d.CertPath(), d.KeyPath()} {
		if err := os.Chmod(p, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	before, err := os.Stat(d.CertPath())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := d.SetCert(cat(b.certPEM, b.keyPEM)); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{d.CertPath(), d.KeyPath()} {
		st, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm() != 0o600 {
			t.Errorf("%s: mode %v, want 0600", p, st.Mode().Perm())
		}
	}
	after, err := os.Stat(d.CertPath())
	if err != nil {
		t.Fatal(err)
	}
	if os.SameFile(before, after) {
		t.Error("tls.crt was rewritten in place, not replaced by a rename")
	}
	if got := dirNames(t, d.Path); !slices.Equal(got, []string{"tls.crt", "tls.key"}) {
		t.Errorf("auth dir holds %v", got)
	}
}

// TestWriteFailureLeavesNoTempFiles makes the rename of tls.crt fail (a
// non-empty directory is in its place) after tls.key's temporary file was
// written.
func TestWriteFailureLeavesNoTempFiles(t *testing.T) {
	a := mkCert(t, spec{hosts: []string{"a.example"}})
	d := certs.Dir{Path: t.TempDir()}
	if err := os.MkdirAll(filepath.Join(d.CertPath(), "blocker"), 0o700); err != nil {
		t.Fatal(err)
	}
	if _, err := d.SetCert(cat(a.certPEM, a.keyPEM)); err == nil {
		t.Fatal("SetCert over a directory succeeded")
	}
	for _, n := range dirNames(t, d.Path) {
		if strings.Contains(n, ".tmp") {
			t.Errorf("temporary file %s left behind", n)
		}
	}
}

func TestInspect(t *testing.T) {
	ca := mkCert(t, spec{cn: "Test CA", isCA: true})
	leaf := mkCert(t, spec{cn: "leaf", hosts: []string{"r.example", "10.1.2.3"}, parent: ca, keyType: "rsa"})
	other := mkCert(t, spec{hosts: []string{"o.example"}})
	expired := mkCert(t, spec{hosts: []string{"e.example"}, notBefore: time.Now().AddDate(0, 0, -40), notAfter: time.Now().AddDate(0, 0, -10).Add(-time.Hour)})

	tests := []struct {
		name        string
		crt, key    []byte
		wantErr     error
		status      string
		chain       int
		keyPresent  bool
		keyMatches  bool
		pub, issuer string
		selfSigned  bool
	}{
		{name: "no cert", key: leaf.keyPEM, wantErr: certs.ErrNoCert},
		{name: "garbage cert", crt: []byte("x"), wantErr: certs.ErrInvalidPEM},
		{name: "chain with key", crt: cat(leaf.certPEM, ca.certPEM), key: leaf.keyPEM, status: certs.StatusValid, chain: 2, keyPresent: true, keyMatches: true, pub: "RSA 2048", issuer: "CN=Test CA"},
		{name: "without key", crt: leaf.certPEM, status: certs.StatusValid, chain: 1, pub: "RSA 2048", issuer: "CN=Test CA"},
		{name: "mismatching key", crt: leaf.certPEM, key: other.keyPEM, status: certs.StatusValid, chain: 1, keyPresent: true, pub: "RSA 2048", issuer: "CN=Test CA"},
		{name: "expired self-signed", crt: expired.certPEM, status: certs.StatusExpired, chain: 1, pub: "ECDSA P-256", issuer: "CN=test", selfSigned: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := certs.Dir{Path: t.TempDir()}
			if tt.crt != nil {
				writeFile(t, d.Path, certs.CertFileName, tt.crt)
			}
			if tt.key != nil {
				writeFile(t, d.Path, certs.KeyFileName, tt.key)
			}
			info, err := d.Inspect()
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("err = %v, want %v", err, tt.wantErr)
			}
			if err != nil {
				return
			}
			if info.Status != tt.status || info.ChainLength != tt.chain || info.KeyPresent != tt.keyPresent ||
				info.KeyMatches != tt.keyMatches || info.PublicKey != tt.pub || info.Issuer != tt.issuer || info.SelfSigned != tt.selfSigned {
				t.Errorf("got %+v", info)
			}
			if tt.keyPresent && !tt.keyMatches && !strings.Contains(info.KeyError, "do not match") {
				t.Errorf("KeyError = %q", info.KeyError)
			}
			var text bytes.Buffer
			if err := info.WriteText(&text); err != nil {
				t.Fatal(err)
			}
			if bytes.Contains(text.Bytes(), []byte("PRIVATE KEY")) {
				t.Errorf("text output shows key material:\n%s", text.String())
			}
			if !strings.Contains(text.String(), info.Fingerprint) {
				t.Errorf("text output lacks the fingerprint:\n%s", text.String())
			}
		})
	}
}

func TestInspectFields(t *testing.T) {
	p := mkCert(t, spec{cn: "r.example", hosts: []string{"r.example", "10.1.2.3"}})
	d := certs.Dir{Path: t.TempDir()}
	writeFile(t, d.Path, certs.CertFileName, p.certPEM)
	info, err := d.Inspect()
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(info.DNSNames, []string{"r.example"}) || !slices.Equal(info.IPAddresses, []string{"10.1.2.3"}) {
		t.Errorf("SANs %v %v", info.DNSNames, info.IPAddresses)
	}
	// 29 full days remain of the 30 (created an hour ago, valid 30 days from then).
	if info.DaysLeft != 29 || !strings.Contains(info.Validity(), "valid for 29 days") {
		t.Errorf("DaysLeft %d, Validity %q", info.DaysLeft, info.Validity())
	}
	if len(info.Fingerprint) != 32*3-1 || strings.ToUpper(info.Fingerprint) != info.Fingerprint || strings.Count(info.Fingerprint, ":") != 31 {
		t.Errorf("fingerprint %q: want 32 upper-case hex pairs separated by colons", info.Fingerprint)
	}
	if info.Fingerprint != certs.Fingerprint(p.cert) {
		t.Errorf("fingerprint %q, want %q", info.Fingerprint, certs.Fingerprint(p.cert))
	}
}
