package certs_test

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"net"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mreg-dev/mreg/internal/certs"
)

func TestGenerate(t *testing.T) {
	tests := []struct {
		name    string
		hosts   []string
		days    int
		wantCN  string
		wantDNS []string
		wantIPs []string
	}{
		{"one name", []string{"registry.example.com"}, 0, "registry.example.com", []string{"registry.example.com"}, nil},
		{"names and IPs", []string{"Reg.Example.COM.", "10.0.0.5", "localhost", "[::1]", "10.0.0.5"}, 30, "reg.example.com",
			[]string{"reg.example.com", "localhost"}, []string{"10.0.0.5", "::1"}},
		{"IP first", []string{"192.168.1.10", "*.apps.example"}, 1, "192.168.1.10", []string{"*.apps.example"}, []string{"192.168.1.10"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := certs.Dir{Path: filepath.Join(t.TempDir(), "auth")}
			start := time.Now()
			info, err := d.Generate(tt.hosts, certs.GenerateOptions{Days: tt.days})
			if err != nil {
				t.Fatal(err)
			}
			pair, err := tls.LoadX509KeyPair(d.CertPath(), d.KeyPath())
			if err != nil {
				t.Fatalf("LoadX509KeyPair: %v", err)
			}
			leaf := pair.Leaf
			if leaf.Subject.CommonName != tt.wantCN {
				t.Errorf("CN %q, want %q", leaf.Subject.CommonName, tt.wantCN)
			}
			if !slices.Equal(leaf.DNSNames, tt.wantDNS) {
				t.Errorf("DNS SANs %v, want %v", leaf.DNSNames, tt.wantDNS)
			}
			var ips []string
			for _, ip := range leaf.IPAddresses {
				ips = append(ips, ip.String())
			}
			if !slices.Equal(ips, tt.wantIPs) {
				t.Errorf("IP SANs %v, want %v", ips, tt.wantIPs)
			}
			if k, ok := leaf.PublicKey.(*ecdsa.PublicKey); !ok || k.Curve != elliptic.P256() {
				t.Errorf("public key %T, want ECDSA P-256", leaf.PublicKey)
			}
			if leaf.KeyUsage != x509.KeyUsageDigitalSignature || !slices.Equal(leaf.ExtKeyUsage, []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}) || leaf.IsCA {
				t.Errorf("key usage %v ext %v CA %v", leaf.KeyUsage, leaf.ExtKeyUsage, leaf.IsCA)
			}
			if leaf.SerialNumber.Sign() <= 0 || leaf.SerialNumber.BitLen() > 128 {
				t.Errorf("serial %v", leaf.SerialNumber)
			}
			days := tt.days
			if days == 0 {
				days = certs.DefaultDays
			}
			if want := start.AddDate(0, 0, days); leaf.NotAfter.Before(want.Add(-time.Minute)) || leaf.NotAfter.After(want.Add(time.Minute)) {
				t.Errorf("NotAfter %v, want about %v", leaf.NotAfter, want)
			}
			if !leaf.NotBefore.Before(start) {
				t.Errorf("NotBefore %v not before now", leaf.NotBefore)
			}
			// A client that trusts tls.crt itself (ca.crt in certs.d) accepts it
			// for every name.
			roots := x509.NewCertPool()
			roots.AddCert(leaf)
			for _, h := range append(append([]string{}, tt.wantDNS...), tt.wantIPs...) {
				h = strings.Replace(h, "*", "x", 1)
				if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, DNSName: h}); err != nil {
					t.Errorf("verify for %s: %v", h, err)
				}
			}
			sum := sha256.Sum256(leaf.Raw)
			if want := strings.ToUpper(hex.EncodeToString(sum[:])); strings.ReplaceAll(info.Fingerprint, ":", "") != want {
				t.Errorf("fingerprint %s, want %s", info.Fingerprint, want)
			}
			if !info.KeyPresent || !info.KeyMatches || !info.SelfSigned || info.Status != certs.StatusValid {
				t.Errorf("info %+v", info)
			}
			for _, n := range dirNames(t, d.Path) {
				if n != certs.CertFileName && n != certs.KeyFileName {
					t.Errorf("stray file %s", n)
				}
			}
		})
	}
}

func TestGenerateRefusesOverwrite(t *testing.T) {
	for _, existing := range []string{certs.CertFileName, certs.KeyFileName} {
		t.Run(existing, func(t *testing.T) {
			d := certs.Dir{Path: t.TempDir()}
			writeFile(t, d.Path, existing, []byte("keep me"))
			_, err := d.Generate([]string{"a.example"}, certs.GenerateOptions{})
			if !errors.Is(err, certs.ErrExists) || !strings.Contains(err.Error(), "--force") {
				t.Fatalf("err = %v, want ErrExists naming --force", err)
			}
			if got := readOr(t, filepath.Join(d.Path, existing)); string(got) != "keep me" {
				t.Errorf("%s overwritten", existing)
			}
			if got := dirNames(t, d.Path); !slices.Equal(got, []string{existing}) {
				t.Errorf("dir holds %v", got)
			}
			if _, err := d.Generate([]string{"a.example"}, certs.GenerateOptions{Force: true}); err != nil {
				t.Fatalf("with Force: %v", err)
			}
			if _, err := tls.LoadX509KeyPair(d.CertPath(), d.KeyPath()); err != nil {
				t.Errorf("after Force: %v", err)
			}
		})
	}
}

func TestGenerateBadInput(t *testing.T) {
	tests := []struct {
		name  string
		hosts []string
		days  int
		want  error
	}{
		{"no hosts", nil, 0, certs.ErrInvalidHost},
		{"empty host", []string{"a.example", ""}, 0, certs.ErrInvalidHost},
		{"negative days", []string{"a.example"}, -1, nil},
		{"too many days", []string{"a.example"}, certs.MaxDays + 1, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := certs.Dir{Path: t.TempDir()}
			_, err := d.Generate(tt.hosts, certs.GenerateOptions{Days: tt.days})
			if err == nil || (tt.want != nil && !errors.Is(err, tt.want)) {
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
			if got := dirNames(t, d.Path); len(got) != 0 {
				t.Errorf("files written: %v", got)
			}
		})
	}
}

func TestParseHosts(t *testing.T) {
	tests := []struct {
		host    string
		wantDNS string
		wantIP  string
		errHas  string
	}{
		{host: "registry.example.com", wantDNS: "registry.example.com"},
		{host: "Registry.Example.com.", wantDNS: "registry.example.com"},
		{host: "localhost", wantDNS: "localhost"},
		{host: "my_host.internal", wantDNS: "my_host.internal"},
		{host: "*.example.com", wantDNS: "*.example.com"},
		{host: "xn--bcher-kva.example", wantDNS: "xn--bcher-kva.example"},
		{host: "10.0.0.5", wantIP: "10.0.0.5"},
		{host: "::1", wantIP: "::1"},
		{host: "[fd00::5]", wantIP: "fd00::5"},
		{host: "", errHas: "empty"},
		{host: "   ", errHas: "empty"},
		{host: "my host", errHas: "white space"},
		{host: "host\t", errHas: "white space"},
		{host: "a..b", errHas: "empty label"},
		{host: ".example", errHas: "empty label"},
		{host: "registry.example.com:5000", errHas: "port"},
		{host: "https://registry.example.com", errHas: "URL"},
		{host: "a.*.example", errHas: "'*'"},
		{host: "bücher.example", errHas: "non-ASCII"},
		{host: strings.Repeat("a", 64) + ".example", errHas: "63"},
	}
	for _, tt := range tests {
		t.Run(tt.host, func(t *testing.T) {
			dns, ips, err := certs.ParseHosts([]string{tt.host})
			if tt.errHas != "" {
				if !errors.Is(err, certs.ErrInvalidHost) || !strings.Contains(err.Error(), tt.errHas) {
					t.Fatalf("err = %v, want ErrInvalidHost mentioning %q", err, tt.errHas)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			switch {
			case tt.wantDNS != "" && (len(dns) != 1 || dns[0] != tt.wantDNS || len(ips) != 0):
				t.Errorf("dns %v ips %v, want DNS %s", dns, ips, tt.wantDNS)
			case tt.wantIP != "" && (len(ips) != 1 || !ips[0].Equal(net.ParseIP(tt.wantIP)) || len(dns) != 0):
				t.Errorf("dns %v ips %v, want IP %s", dns, ips, tt.wantIP)
			}
		})
	}
}

func TestSelfSignedPEM(t *testing.T) {
	now := time.Now()
	certPEM, keyPEM, err := certs.SelfSigned([]string{"a.example"}, now, now.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(certPEM, []byte("-----BEGIN CERTIFICATE-----")) || !bytes.HasPrefix(keyPEM, []byte("-----BEGIN PRIVATE KEY-----")) {
		t.Errorf("unexpected PEM:\n%s", certPEM)
	}
	if _, err := tls.X509KeyPair(certPEM, keyPEM); err != nil {
		t.Error(err)
	}
	if _, _, err := certs.SelfSigned([]string{"a.example"}, now, now); err == nil {
		t.Error("empty validity accepted")
	}
}
