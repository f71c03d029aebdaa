package certs

import (
	"bytes"
	"crypto/sha256"
	"crypto/x509"
	"fmt"
	"io"
	"math"
	"strings"
	"text/tabwriter"
	"time"
)

// Validity states of a certificate (Info.Status).
const (
	StatusValid       = "valid"
	StatusExpired     = "expired"
	StatusNotYetValid = "not yet valid"
)

// Info describes the installed certificate and whether tls.key pairs with
// it. It never holds key material.
type Info struct {
	CertFile    string    `json:"cert_file"`
	Subject     string    `json:"subject"`
	Issuer      string    `json:"issuer"`
	SelfSigned  bool      `json:"self_signed"`
	DNSNames    []string  `json:"dns_names"`
	IPAddresses []string  `json:"ip_addresses"`
	NotBefore   time.Time `json:"not_before"`
	NotAfter    time.Time `json:"not_after"`
	// Status is StatusValid, StatusExpired or StatusNotYetValid.
	Status string `json:"status"`
	// DaysLeft counts whole days until NotAfter, negative once expired.
	DaysLeft int `json:"days_left"`
	// Fingerprint is the SHA-256 of the leaf, as openssl prints it
	// (upper-case hex pairs separated by colons).
	Fingerprint string `json:"sha256_fingerprint"`
	// PublicKey is the leaf's key algorithm and size, e.g. "ECDSA P-256".
	PublicKey    string `json:"public_key"`
	SerialNumber string `json:"serial_number"`
	// ChainLength counts the certificates in tls.crt, the leaf included.
	ChainLength int `json:"chain_length"`

	KeyFile    string `json:"key_file"`
	KeyPresent bool   `json:"key_present"`
	KeyMatches bool   `json:"key_matches"`
	// KeyError says why an existing tls.key does not pair with tls.crt.
	KeyError string `json:"key_error,omitempty"`
}

// Inspect describes tls.crt and checks tls.key against it. It returns
// ErrNoCert when tls.crt does not exist; an unusable tls.key is reported in
// the Info, not as an error.
func (d Dir) Inspect() (*Info, error) {
	crt, err := readOptional(d.CertPath())
	if err != nil {
		return nil, err
	}
	if crt == nil {
		return nil, fmt.Errorf("%w: %s does not exist", ErrNoCert, d.CertPath())
	}
	m, err := ParsePEM(crt)
	if err == nil && len(m.Chain) == 0 {
		err = fmt.Errorf("%w: no CERTIFICATE block", ErrInvalidCert)
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", d.CertPath(), err)
	}
	info := describe(m.Chain, d.now())
	info.CertFile, info.KeyFile = d.CertPath(), d.KeyPath()
	key, err := readOptional(d.KeyPath())
	switch {
	case err != nil:
		info.KeyPresent = true
		info.KeyError = err.Error()
	case key != nil:
		info.KeyPresent = true
		km, err := ParsePEM(key)
		if err == nil && km.Key == nil {
			err = fmt.Errorf("%w: no private key in it", ErrInvalidKey)
		}
		if err == nil {
			err = checkPair(m.certPEM, km.keyPEM)
		}
		if err != nil {
			info.KeyError = err.Error()
		} else {
			info.KeyMatches = true
		}
	}
	return &info, nil
}

// describe summarises a chain (leaf first) at now; the key fields are left
// for the caller.
func describe(chain []*x509.Certificate, now time.Time) Info {
	leaf := chain[0]
	info := Info{
		Subject:      leaf.Subject.String(),
		Issuer:       leaf.Issuer.String(),
		SelfSigned:   bytes.Equal(leaf.RawSubject, leaf.RawIssuer) && leaf.CheckSignature(leaf.SignatureAlgorithm, leaf.RawTBSCertificate, leaf.Signature) == nil,
		DNSNames:     append([]string{}, leaf.DNSNames...),
		IPAddresses:  []string{},
		NotBefore:    leaf.NotBefore.UTC(),
		NotAfter:     leaf.NotAfter.UTC(),
		DaysLeft:     int(math.Floor(leaf.NotAfter.Sub(now).Hours() / 24)),
		Fingerprint:  Fingerprint(leaf),
		PublicKey:    describeKey(leaf.PublicKey),
		SerialNumber: leaf.SerialNumber.Text(16),
		ChainLength:  len(chain),
	}
	for _, ip := range leaf.IPAddresses {
		info.IPAddresses = append(info.IPAddresses, ip.String())
	}
	switch {
	case now.After(leaf.NotAfter):
		info.Status = StatusExpired
	case now.Before(leaf.NotBefore):
		info.Status = StatusNotYetValid
	default:
		info.Status = StatusValid
	}
	return info
}

// Fingerprint is the SHA-256 fingerprint of cert as openssl prints it:
// upper-case hex pairs separated by colons.
func Fingerprint(cert *x509.Certificate) string {
	sum := sha256.Sum256(cert.Raw)
	parts := make([]string, len(sum))
	for i, b := range sum {
		parts[i] = fmt.Sprintf("%02X", b)
	}
	return strings.Join(parts, ":")
}

// Validity is the human form of Status and DaysLeft, e.g. "valid for 364
// days" or "EXPIRED 3 days ago".
func (i *Info) Validity() string {
	switch i.Status {
	case StatusExpired:
		return "EXPIRED " + days(-i.DaysLeft-1) + " ago"
	case StatusNotYetValid:
		return "NOT YET VALID"
	}
	return "valid for " + days(i.DaysLeft)
}

func days(n int) string {
	switch n {
	case 0:
		return "less than a day"
	case 1:
		return "1 day"
	}
	return fmt.Sprintf("%d days", n)
}

// KeyState is the human form of the Key* fields.
func (i *Info) KeyState() string {
	switch {
	case !i.KeyPresent:
		return "missing (the sidecar serves plain HTTP until a key is installed)"
	case !i.KeyMatches:
		return "present but UNUSABLE: " + i.KeyError
	}
	return "present, matches the certificate"
}

// WriteText prints the Info for people, one field per line.
func (i *Info) WriteText(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	issuer := i.Issuer
	if i.SelfSigned {
		issuer += " (self-signed)"
	}
	chain := "1 certificate"
	if i.ChainLength != 1 {
		chain = fmt.Sprintf("%d certificates (leaf first)", i.ChainLength)
	}
	rows := [][2]string{
		{"Certificate", i.CertFile},
		{"Subject", i.Subject},
		{"Issuer", issuer},
		{"DNS names", orNone(i.DNSNames)},
		{"IP addresses", orNone(i.IPAddresses)},
		{"Not before", i.NotBefore.Format(time.RFC3339)},
		{"Not after", fmt.Sprintf("%s (%s)", i.NotAfter.Format(time.RFC3339), i.Validity())},
		{"SHA-256 fingerprint", i.Fingerprint},
		{"Public key", i.PublicKey},
		{"Serial number", i.SerialNumber},
		{"Chain", chain},
		{"Private key", i.KeyFile + ": " + i.KeyState()},
	}
	for _, r := range rows {
		fmt.Fprintf(tw, "%s:\t%s\n", r[0], r[1])
	}
	return tw.Flush()
}

func orNone(s []string) string {
	if len(s) == 0 {
		return "(none)"
	}
	return strings.Join(s, ", ")
}
