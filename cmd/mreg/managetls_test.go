package main

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// tlsResult is the outcome of one in-process CLI run.
type tlsResult struct {
	out, errOut string
	err         error
}

// tlsRunCmd runs the CLI with argv (argv[0] included) and stdin.
func tlsRunCmd(t *testing.T, stdin string, argv ...string) tlsResult {
	t.Helper()
	cmd := newRootCmd(argv)
	var out, errOut bytes.Buffer
	cmd.SetIn(strings.NewReader(stdin))
	cmd.SetOut(&out)
	cmd.SetErr(&errOut)
	err := cmd.Execute()
	return tlsResult{out: out.String(), errOut: errOut.String(), err: err}
}

// tlsPair makes a self-signed ECDSA certificate for host and returns the
// certificate and key PEM.
func tlsPair(t *testing.T, host string) (certPEM, keyPEM string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: host},
		DNSNames:     []string{host},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	pkcs8, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})),
		string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: pkcs8}))
}

// tlsFile returns the content of dir/name, "" when absent.
func tlsFile(t *testing.T, dir, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, name))
	if os.IsNotExist(err) {
		return ""
	}
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func tlsWrite(t *testing.T, dir, name, content string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestManageTLSGenerateThenPrint(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "auth")
	r := tlsRunCmd(t, "", "mreg", "manage-tls", "generate", "--auth-dir", dir, "--days", "30", "registry.example.com", "10.0.0.5")
	if r.err != nil {
		t.Fatalf("generate: %v\n%s", r.err, r.errOut)
	}
	if !strings.Contains(r.out, "certs.d/registry.example.com:PORT/ca.crt") || !strings.Contains(r.out, "valid for 30 days") {
		t.Errorf("generate output lacks the trust hint or validity:\n%s", r.out)
	}
	fp := tlsFingerprint(t, dir)
	if !strings.Contains(r.out, fp) {
		t.Errorf("generate output lacks fingerprint %s:\n%s", fp, r.out)
	}
	key := tlsFile(t, dir, "tls.key")

	tests := []struct {
		name string
		argv []string
		want []string
	}{
		{"text", []string{"mreg", "manage-tls", "print", "--auth-dir", dir},
			[]string{"registry.example.com", "10.0.0.5", fp, "ECDSA P-256", "(self-signed)", "valid for 29 days", "present, matches"}},
		{"json", []string{"mreg", "manage-tls", "print", "--json", "--auth-dir", dir},
			[]string{`"sha256_fingerprint": "` + fp, `"key_matches": true`}},
		{"as manage-tls", []string{"/usr/bin/manage-tls", "print", "--auth-dir", dir},
			[]string{"registry.example.com", fp}},
		{"pem", []string{"manage-tls", "print", "--pem", "--auth-dir", dir},
			[]string{"-----BEGIN CERTIFICATE-----"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := tlsRunCmd(t, "", tt.argv...)
			if r.err != nil {
				t.Fatalf("print: %v", r.err)
			}
			for _, w := range tt.want {
				if !strings.Contains(r.out, w) {
					t.Errorf("output lacks %q:\n%s", w, r.out)
				}
			}
			all := r.out + r.errOut
			if strings.Contains(all, "PRIVATE KEY") || strings.Contains(all, tlsKeyBody(key)) {
				t.Errorf("output shows the private key:\n%s", all)
			}
		})
	}

	var info struct {
		DNSNames []string `json:"dns_names"`
		IPs      []string `json:"ip_addresses"`
		Chain    int      `json:"chain_length"`
	}
	r = tlsRunCmd(t, "", "mreg", "manage-tls", "print", "--json", "--auth-dir", dir)
	if err := json.Unmarshal([]byte(r.out), &info); err != nil {
		t.Fatalf("--json output: %v\n%s", err, r.out)
	}
	if len(info.DNSNames) != 1 || info.DNSNames[0] != "registry.example.com" || len(info.IPs) != 1 || info.IPs[0] != "10.0.0.5" || info.Chain != 1 {
		t.Errorf("json %+v", info)
	}
}

// tlsFingerprint computes the fingerprint of dir/tls.crt independently.
func tlsFingerprint(t *testing.T, dir string) string {
	t.Helper()
	block, _ := pem.Decode([]byte(tlsFile(t, dir, "tls.crt")))
	if block == nil {
		t.Fatal("no PEM in tls.crt")
	}
	c, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(c.Raw)
	hexs := make([]string, len(sum))
	for i := range sum {
		hexs[i] = strings.ToUpper(hex.EncodeToString(sum[i : i+1]))
	}
	return strings.Join(hexs, ":")
}

// tlsKeyBody is a line of the key's base64, to look for in output.
func tlsKeyBody(keyPEM string) string {
	lines := strings.Split(keyPEM, "\n")
	if len(lines) < 2 {
		return "\x00never"
	}
	return lines[1]
}

func TestManageTLSPrintWithoutCert(t *testing.T) {
	dir := t.TempDir()
	r := tlsRunCmd(t, "", "mreg", "manage-tls", "print", "--auth-dir", dir)
	if r.err == nil || !strings.Contains(r.err.Error(), "tls.crt does not exist") {
		t.Fatalf("err = %v, want a missing tls.crt error", r.err)
	}
}

func TestManageTLSCertAndKey(t *testing.T) {
	certA, keyA := tlsPair(t, "a.example")
	certB, keyB := tlsPair(t, "b.example")

	tests := []struct {
		name             string
		crt, key         string // installed before; "" absent
		argv             []string
		stdin            string
		wantErr          string // substring; "" success
		wantCrt, wantKey string // afterwards
		wantOut          string
	}{
		{name: "cert mismatching key refused", crt: certB, key: keyB, argv: []string{"cert"}, stdin: certA,
			wantErr: "manage-tls key </dev/null", wantCrt: certB, wantKey: keyB},
		{name: "key mismatching cert refused", crt: certB, key: keyB, argv: []string{"key"}, stdin: keyA,
			wantErr: "manage-tls cert </dev/null", wantCrt: certB, wantKey: keyB},
		{name: "bundle writes both", crt: certB, key: keyB, argv: []string{"cert"}, stdin: certA + keyA,
			wantCrt: certA, wantKey: keyA, wantOut: "match"},
		{name: "bundle key first", argv: []string{"cert"}, stdin: keyA + "\n" + certA,
			wantCrt: certA, wantKey: keyA, wantOut: "match"},
		{name: "cert matching key", key: keyA, argv: []string{"cert"}, stdin: certA,
			wantCrt: certA, wantKey: keyA, wantOut: "installed certificate"},
		{name: "key matching cert", crt: certA, argv: []string{"key"}, stdin: keyA,
			wantCrt: certA, wantKey: keyA, wantOut: "installed private key (ECDSA P-256)"},
		{name: "empty stdin removes cert", crt: certA, key: keyA, argv: []string{"cert"}, stdin: "",
			wantKey: keyA, wantOut: "removed"},
		{name: "blank stdin removes key", crt: certA, key: keyA, argv: []string{"key"}, stdin: "\n  \n",
			wantCrt: certA, wantOut: "removed"},
		{name: "removing absent cert is fine", argv: []string{"cert"}, stdin: "", wantOut: "nothing removed"},
		{name: "key as cert refused", crt: certB, argv: []string{"cert"}, stdin: keyA,
			wantErr: "no CERTIFICATE block", wantCrt: certB},
		{name: "garbage refused", crt: certB, key: keyB, argv: []string{"cert"}, stdin: "hello",
			wantErr: "no PEM data", wantCrt: certB, wantKey: keyB},
		{name: "truncated refused", crt: certB, argv: []string{"cert"}, stdin: certA[:len(certA)-40],
			wantErr: "truncated", wantCrt: certB},
		{name: "extra args refused", argv: []string{"cert", "file.pem"}, stdin: certA, wantErr: "unknown command"},
		{name: "unknown subcommand", argv: []string{"show"}, wantErr: "unknown command"},
		{name: "generate refuses overwrite", crt: certB, key: keyB, argv: []string{"generate", "c.example"},
			wantErr: "--force", wantCrt: certB, wantKey: keyB},
		{name: "generate bad host", argv: []string{"generate", "bad host"}, wantErr: "invalid host name"},
		{name: "generate needs a host", argv: []string{"generate"}, wantErr: "requires at least 1 arg"},
	}
	for _, tt := range tests {
		for _, argv0 := range []string{"mreg", "/usr/local/bin/manage-tls"} {
			t.Run(tt.name+"/"+filepath.Base(argv0), func(t *testing.T) {
				dir := t.TempDir()
				if tt.crt != "" {
					tlsWrite(t, dir, "tls.crt", tt.crt)
				}
				if tt.key != "" {
					tlsWrite(t, dir, "tls.key", tt.key)
				}
				argv := []string{argv0}
				if argv0 == "mreg" {
					argv = append(argv, "manage-tls")
				}
				argv = append(append(argv, tt.argv...), "--auth-dir", dir)
				r := tlsRunCmd(t, tt.stdin, argv...)
				switch {
				case tt.wantErr == "" && r.err != nil:
					t.Fatalf("err = %v\nstderr: %s", r.err, r.errOut)
				case tt.wantErr != "" && (r.err == nil || !strings.Contains(r.err.Error(), tt.wantErr)):
					t.Fatalf("err = %v, want it to mention %q", r.err, tt.wantErr)
				}
				if got := tlsFile(t, dir, "tls.crt"); got != tt.wantCrt {
					t.Errorf("tls.crt afterwards:\n%s\nwant:\n%s", got, tt.wantCrt)
				}
				if got := tlsFile(t, dir, "tls.key"); got != tt.wantKey {
					t.Errorf("tls.key afterwards differs (%d bytes, want %d)", len(got), len(tt.wantKey))
				}
				if !strings.Contains(r.out, tt.wantOut) {
					t.Errorf("stdout lacks %q:\n%s", tt.wantOut, r.out)
				}
				all := r.out + r.errOut
				if r.err != nil {
					all += r.err.Error()
				}
				for _, k := range []string{keyA, keyB} {
					if strings.Contains(all, tlsKeyBody(k)) {
						t.Errorf("output shows key material:\n%s", all)
					}
				}
				for _, name := range []string{"tls.crt", "tls.key"} {
					if st, err := os.Stat(filepath.Join(dir, name)); err == nil && st.Mode().Perm() != 0o600 {
						t.Errorf("%s mode %v", name, st.Mode().Perm())
					}
				}
			})
		}
	}
}

func TestManageTLSGenerateForce(t *testing.T) {
	dir := t.TempDir()
	if r := tlsRunCmd(t, "", "mreg", "manage-tls", "generate", "--auth-dir", dir, "a.example"); r.err != nil {
		t.Fatal(r.err)
	}
	first := tlsFile(t, dir, "tls.crt")
	if r := tlsRunCmd(t, "", "mreg", "manage-tls", "generate", "--auth-dir", dir, "b.example"); r.err == nil {
		t.Fatal("second generate without --force succeeded")
	}
	if tlsFile(t, dir, "tls.crt") != first {
		t.Fatal("tls.crt changed without --force")
	}
	if r := tlsRunCmd(t, "", "manage-tls", "generate", "--force", "--auth-dir", dir, "b.example"); r.err != nil {
		t.Fatal(r.err)
	}
	if tlsFile(t, dir, "tls.crt") == first {
		t.Fatal("--force did not replace tls.crt")
	}
	r := tlsRunCmd(t, "", "manage-tls", "print", "--auth-dir", dir)
	if r.err != nil || !strings.Contains(r.out, "b.example") || strings.Contains(r.out, "a.example") {
		t.Errorf("print after --force: %v\n%s", r.err, r.out)
	}
}

func TestManageTLSAuthDirFromEnv(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("MREG_AUTH_DIR", dir)
	if r := tlsRunCmd(t, "", "manage-tls", "generate", "env.example"); r.err != nil {
		t.Fatal(r.err)
	}
	if tlsFile(t, dir, "tls.crt") == "" {
		t.Fatal("MREG_AUTH_DIR ignored")
	}
}

func TestManageTLSCertWarnsWhenExpired(t *testing.T) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		DNSNames:     []string{"old.example"},
		NotBefore:    time.Now().AddDate(-2, 0, 0),
		NotAfter:     time.Now().AddDate(-1, 0, 0),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	r := tlsRunCmd(t, string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})), "mreg", "manage-tls", "cert", "--auth-dir", dir)
	if r.err != nil {
		t.Fatalf("expired certificate refused: %v", r.err)
	}
	if !strings.Contains(r.errOut, "warning:") || !strings.Contains(r.errOut, "EXPIRED") {
		t.Errorf("no expiry warning on stderr:\n%s", r.errOut)
	}
	if tlsFile(t, dir, "tls.crt") == "" {
		t.Error("tls.crt not written")
	}
	r = tlsRunCmd(t, "", "mreg", "manage-tls", "print", "--auth-dir", dir)
	if r.err != nil || !strings.Contains(r.out, "EXPIRED") || !strings.Contains(r.out, "missing") {
		t.Errorf("print: %v\n%s", r.err, r.out)
	}
}
