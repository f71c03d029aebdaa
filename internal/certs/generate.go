package certs

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"slices"
	"strings"
	"time"
)

// Validity bounds of generated certificates, in days.
const (
	DefaultDays = 365
	MaxDays     = 100 * 365
)

// clockSkew backdates generated certificates so that clients whose clock
// runs a little behind accept them at once.
const clockSkew = 5 * time.Minute

// GenerateOptions tune Dir.Generate.
type GenerateOptions struct {
	// Days of validity; 0 means DefaultDays.
	Days int
	// Force replaces existing tls.crt and tls.key.
	Force bool
}

// Generate creates a self-signed ECDSA P-256 certificate for hosts (see
// SelfSigned) and installs it with its key as tls.crt and tls.key. Existing
// files are only replaced with opts.Force.
func (d Dir) Generate(hosts []string, opts GenerateOptions) (*Info, error) {
	days := opts.Days
	if days == 0 {
		days = DefaultDays
	}
	if days < 0 || days > MaxDays {
		return nil, fmt.Errorf("validity of %d days: want 1 to %d", days, MaxDays)
	}
	if !opts.Force {
		for _, p := range []string{d.CertPath(), d.KeyPath()} {
			b, err := readOptional(p)
			if err != nil {
				return nil, err
			}
			if b != nil {
				return nil, fmt.Errorf("%w: %s exists; use --force to replace it", ErrExists, p)
			}
		}
	}
	now := d.now()
	certPEM, keyPEM, err := SelfSigned(hosts, now.Add(-clockSkew), now.AddDate(0, 0, days))
	if err != nil {
		return nil, err
	}
	if err := writeAll(d.Path, []pending{{d.KeyPath(), keyPEM}, {d.CertPath(), certPEM}}); err != nil {
		return nil, err
	}
	m, err := ParsePEM(certPEM)
	if err != nil {
		return nil, fmt.Errorf("generated certificate: %w", err) // cannot happen
	}
	info := describe(m.Chain, now)
	info.CertFile, info.KeyFile = d.CertPath(), d.KeyPath()
	info.KeyPresent, info.KeyMatches = true, true
	return &info, nil
}

// SelfSigned creates a self-signed server certificate and its ECDSA P-256
// key, both PEM-encoded (the key as PKCS#8). Every host becomes a subject
// alternative name: IP addresses as such, anything else as a DNS name; the
// first host is also the common name. The certificate has a random 128-bit
// serial, key usage DigitalSignature and extended key usage ServerAuth; it
// is not a CA, so it can be trusted as itself but signs nothing else.
func SelfSigned(hosts []string, notBefore, notAfter time.Time) (certPEM, keyPEM []byte, err error) {
	dns, ips, err := ParseHosts(hosts)
	if err != nil {
		return nil, nil, err
	}
	if !notAfter.After(notBefore) {
		return nil, nil, fmt.Errorf("certificate would expire (%s) before it starts (%s)", notAfter, notBefore)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("generate key: %w", err)
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: commonName(hosts[0])},
		DNSNames:              dns,
		IPAddresses:           ips,
		NotBefore:             notBefore,
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, fmt.Errorf("create certificate: %w", err)
	}
	pkcs8, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, fmt.Errorf("encode key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: pemCertificate, Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: pemPKCS8, Bytes: pkcs8}), nil
}

// commonName is host as ParseHosts normalises it (host is valid).
func commonName(host string) string {
	if ip := net.ParseIP(strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")); ip != nil {
		return ip.String()
	}
	name, _ := checkDNSName(host)
	return name
}

// randomSerial returns a positive random serial of up to 128 bits.
func randomSerial() (*big.Int, error) {
	limit := new(big.Int).Lsh(big.NewInt(1), 128)
	for {
		n, err := rand.Int(rand.Reader, limit)
		if err != nil {
			return nil, fmt.Errorf("generate serial: %w", err)
		}
		if n.Sign() > 0 {
			return n, nil
		}
	}
}

// ParseHosts splits hosts into DNS names and IP addresses, dropping
// duplicates. IPv6 addresses may be bracketed. DNS names are checked
// loosely: no empty labels, no spaces, ports, URLs or non-ASCII (use the
// xn-- form); a leading "*." wildcard is allowed; they are lower-cased and
// a trailing dot is dropped.
func ParseHosts(hosts []string) (dns []string, ips []net.IP, err error) {
	if len(hosts) == 0 {
		return nil, nil, fmt.Errorf("%w: at least one host name or IP address is required", ErrInvalidHost)
	}
	for _, h := range hosts {
		if ip := net.ParseIP(strings.TrimSuffix(strings.TrimPrefix(h, "["), "]")); ip != nil {
			if !slices.ContainsFunc(ips, ip.Equal) {
				ips = append(ips, ip)
			}
			continue
		}
		name, err := checkDNSName(h)
		if err != nil {
			return nil, nil, err
		}
		if !slices.Contains(dns, name) {
			dns = append(dns, name)
		}
	}
	return dns, ips, nil
}

// checkDNSName validates and normalises one DNS name (see ParseHosts).
func checkDNSName(h string) (string, error) {
	bad := func(why string) (string, error) {
		return "", fmt.Errorf("%w: %q: %s", ErrInvalidHost, h, why)
	}
	name := strings.ToLower(strings.TrimSuffix(h, "."))
	switch {
	case strings.TrimSpace(h) == "":
		return bad("empty")
	case strings.Contains(name, "://") || strings.ContainsAny(name, "/@?#"):
		return bad("give a host name, not a URL")
	case strings.Contains(name, ":"):
		return bad("give the host name without a port")
	case len(name) > 253:
		return bad("longer than 253 characters")
	}
	for i, label := range strings.Split(name, ".") {
		if label == "" {
			return bad("empty label (two dots in a row, or a leading dot)")
		}
		if label == "*" && i == 0 {
			continue
		}
		if len(label) > 63 {
			return bad("label longer than 63 characters")
		}
		for _, r := range label {
			switch {
			case r >= 'a' && r <= 'z', r >= '0' && r <= '9', r == '-', r == '_':
			case r == ' ' || r == '\t' || r < 0x20:
				return bad("contains white space or control characters")
			case r > 0x7f:
				return bad("contains non-ASCII characters (use the xn-- form)")
			default:
				return bad(fmt.Sprintf("contains %q", r))
			}
		}
	}
	return name, nil
}
