package certs_test

import (
	"bytes"
	"encoding/pem"
	"errors"
	"strings"
	"testing"

	"github.com/mreg-dev/mreg/internal/certs"
)

func TestParsePEM(t *testing.T) {
	ca := mkCert(t, spec{cn: "Test CA", isCA: true})
	leaf := mkCert(t, spec{cn: "leaf", hosts: []string{"r.example"}, parent: ca})
	rsa1 := mkCert(t, spec{hosts: []string{"r.example"}, keyType: "rsa", keyFormat: "pkcs1"})
	ec1 := mkCert(t, spec{hosts: []string{"r.example"}, keyFormat: "sec1"})
	ed := mkCert(t, spec{hosts: []string{"r.example"}, keyType: "ed25519"})
	other := mkCert(t, spec{hosts: []string{"r.example"}})

	half := leaf.certPEM[:len(leaf.certPEM)/2]
	noEnd := bytes.TrimSuffix(leaf.certPEM, []byte("-----END CERTIFICATE-----\n"))
	badB64 := bytes.Replace(leaf.certPEM, []byte("MII"), []byte("M!I"), 1)
	shortDER := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: leaf.cert.Raw[:len(leaf.cert.Raw)-20]})
	encrypted := []byte("-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\nDEK-Info: AES-128-CBC,00000000000000000000000000000000\n\nAAAA\n-----END RSA PRIVATE KEY-----\n")
	ecParams := []byte("-----BEGIN EC PARAMETERS-----\nBggqhkjOPQMBBw==\n-----END EC PARAMETERS-----\n")
	withText := cat([]byte("Bag Attributes\n    friendlyName: x\nsubject=CN = leaf\n"), leaf.certPEM, []byte("\nsome trailing words\n"))

	tests := []struct {
		name      string
		input     []byte
		wantErr   error
		errHas    string
		wantChain int
		wantKey   bool
	}{
		{"single cert", other.certPEM, nil, "", 1, false},
		{"chain leaf first", cat(leaf.certPEM, ca.certPEM), nil, "", 2, false},
		{"bundle cert key", cat(other.certPEM, other.keyPEM), nil, "", 1, true},
		{"bundle key first", cat(other.keyPEM, other.certPEM), nil, "", 1, true},
		{"pkcs8 key", other.keyPEM, nil, "", 0, true},
		{"pkcs1 key", rsa1.keyPEM, nil, "", 0, true},
		{"sec1 key with EC PARAMETERS", cat(ecParams, ec1.keyPEM), nil, "", 0, true},
		{"ed25519 key", ed.keyPEM, nil, "", 0, true},
		{"text around blocks", withText, nil, "", 1, false},

		{"garbage", []byte("hello, this is not a certificate\n"), certs.ErrInvalidPEM, "no PEM data", 0, false},
		{"DER", leaf.cert.Raw, certs.ErrInvalidPEM, "no PEM data", 0, false},
		{"truncated half", half, certs.ErrInvalidPEM, "truncated", 0, false},
		{"truncated no END line", noEnd, certs.ErrInvalidPEM, "truncated", 0, false},
		{"truncated first of two", cat(noEnd, ca.certPEM), certs.ErrInvalidPEM, "1 of 2", 0, false},
		{"broken base64", badB64, certs.ErrInvalidPEM, "truncated", 0, false},
		{"truncated DER", shortDER, certs.ErrInvalidCert, "certificate 1", 0, false},
		{"chain out of order", cat(ca.certPEM, leaf.certPEM), certs.ErrInvalidCert, "out of order", 0, false},
		{"unrelated chain", cat(leaf.certPEM, other.certPEM), certs.ErrInvalidCert, "out of order", 0, false},
		{"bundle mismatch", cat(other.certPEM, leaf.keyPEM), certs.ErrMismatch, "", 0, false},
		{"two keys", cat(other.keyPEM, leaf.keyPEM), certs.ErrInvalidKey, "more than one", 0, false},
		{"encrypted legacy key", encrypted, certs.ErrInvalidKey, "encrypted", 0, false},
		{"encrypted pkcs8 key", pem.EncodeToMemory(&pem.Block{Type: "ENCRYPTED PRIVATE KEY", Bytes: []byte{1, 2}}), certs.ErrInvalidKey, "encrypted", 0, false},
		{"key bytes garbage", pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: []byte("nope")}), certs.ErrInvalidKey, "", 0, false},
		{"public key", pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: []byte{1}}), certs.ErrInvalidPEM, "PUBLIC KEY", 0, false},
		{"CSR", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: []byte{1}}), certs.ErrInvalidPEM, "signing request", 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := certs.ParsePEM(tt.input)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("err = %v, want %v", err, tt.wantErr)
				}
				if !strings.Contains(err.Error(), tt.errHas) {
					t.Errorf("err = %q, want it to mention %q", err, tt.errHas)
				}
				if strings.Contains(err.Error(), "PRIVATE KEY-----") {
					t.Errorf("error shows key material: %q", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("err = %v", err)
			}
			if len(m.Chain) != tt.wantChain || (m.Key != nil) != tt.wantKey {
				t.Errorf("chain %d key %v, want %d %v", len(m.Chain), m.Key != nil, tt.wantChain, tt.wantKey)
			}
			if got := m.CertPEM(); bytes.Contains(got, []byte("PRIVATE")) || bytes.Contains(got, []byte("Bag")) {
				t.Errorf("CertPEM holds more than certificates:\n%s", got)
			}
		})
	}
}

func TestIsBlank(t *testing.T) {
	for in, want := range map[string]bool{"": true, " \n\t\r\n": true, "x": false, "\n-----BEGIN": false} {
		if got := certs.IsBlank([]byte(in)); got != want {
			t.Errorf("IsBlank(%q) = %v, want %v", in, got, want)
		}
	}
}
