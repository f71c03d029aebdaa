package certs

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"slices"
	"time"
)

// PEM block types this package reads.
const (
	pemCertificate  = "CERTIFICATE"
	pemPKCS1        = "RSA PRIVATE KEY"
	pemPKCS8        = "PRIVATE KEY"
	pemEC           = "EC PRIVATE KEY"
	pemECParameters = "EC PARAMETERS" // openssl ecparam -genkey prints it before the key
	pemEncrypted    = "ENCRYPTED PRIVATE KEY"
)

// Material is validated PEM input: certificates (leaf first), a private key,
// or both.
type Material struct {
	// Chain holds the certificates in input order; empty when the input had
	// none.
	Chain []*x509.Certificate
	// Key is the private key, nil when the input had none.
	Key crypto.Signer

	certPEM []byte // the CERTIFICATE blocks, re-encoded without any text around them
	keyPEM  []byte // the key block, re-encoded without PEM headers
}

// CertPEM returns the certificates as PEM, without any text around them
// and without the key.
func (m *Material) CertPEM() []byte { return append([]byte(nil), m.certPEM...) }

// IsBlank reports whether input holds nothing but white space: the request
// to remove a file.
func IsBlank(input []byte) bool { return len(bytes.TrimSpace(input)) == 0 }

// ParsePEM reads certificates and at most one private key from PEM input
// and validates them: every CERTIFICATE block must parse, consecutive
// certificates must form a chain (each issued by the next, leaf first), the
// key must be an unencrypted PKCS#1, PKCS#8 or SEC 1 (EC) key of a type TLS
// can use. Text outside PEM blocks (as openssl prints it) is ignored; a
// malformed or truncated block is an error. If both a chain and a key are
// present they must match. Key material never appears in errors.
func ParsePEM(input []byte) (*Material, error) {
	m := &Material{}
	rest := input
	decoded := 0
	for {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		decoded++
		if err := m.add(block); err != nil {
			return nil, err
		}
	}
	// pem.Decode silently skips a block it cannot decode (a missing END
	// line, broken base64) when a later block is fine, so compare with the
	// number of BEGIN lines.
	if begins := bytes.Count(input, []byte("-----BEGIN ")); begins != decoded {
		return nil, fmt.Errorf("%w: %d of %d PEM blocks are malformed or truncated", ErrInvalidPEM, begins-decoded, begins)
	}
	if decoded == 0 {
		return nil, fmt.Errorf("%w: no PEM data found (expected -----BEGIN CERTIFICATE----- blocks or a private key)", ErrInvalidPEM)
	}
	if len(m.Chain) == 0 && m.Key == nil {
		return nil, fmt.Errorf("%w: neither a certificate nor a private key in the input", ErrInvalidPEM)
	}
	if err := checkChain(m.Chain); err != nil {
		return nil, err
	}
	if len(m.Chain) > 0 && m.Key != nil {
		if err := checkPair(m.certPEM, m.keyPEM); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// add validates one PEM block and adds it to m.
func (m *Material) add(block *pem.Block) error {
	switch block.Type {
	case pemCertificate:
		n := len(m.Chain) + 1
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return fmt.Errorf("%w: certificate %d: %v", ErrInvalidCert, n, err)
		}
		m.Chain = append(m.Chain, cert)
		m.certPEM = append(m.certPEM, pem.EncodeToMemory(&pem.Block{Type: pemCertificate, Bytes: cert.Raw})...)
		return nil
	case pemPKCS1, pemPKCS8, pemEC:
		if m.Key != nil {
			return fmt.Errorf("%w: more than one private key in the input", ErrInvalidKey)
		}
		if _, ok := block.Headers["DEK-Info"]; ok {
			return fmt.Errorf("%w: the key is encrypted; decrypt it first (openssl pkey -in KEY -out PLAIN)", ErrInvalidKey)
		}
		key, err := parseKey(block)
		if err != nil {
			return err
		}
		m.Key = key
		m.keyPEM = pem.EncodeToMemory(&pem.Block{Type: block.Type, Bytes: block.Bytes})
		return nil
	case pemECParameters:
		return nil
	case pemEncrypted:
		return fmt.Errorf("%w: the key is encrypted; decrypt it first (openssl pkey -in KEY -out PLAIN)", ErrInvalidKey)
	case "CERTIFICATE REQUEST", "NEW CERTIFICATE REQUEST":
		return fmt.Errorf("%w: a certificate signing request is not a certificate; have it signed first", ErrInvalidPEM)
	}
	return fmt.Errorf("%w: unexpected PEM block %q (want CERTIFICATE or a private key)", ErrInvalidPEM, block.Type)
}

// parseKey parses an unencrypted private key block of a type TLS can use.
func parseKey(block *pem.Block) (crypto.Signer, error) {
	var (
		key any
		err error
	)
	switch block.Type {
	case pemPKCS1:
		key, err = x509.ParsePKCS1PrivateKey(block.Bytes)
	case pemEC:
		key, err = x509.ParseECPrivateKey(block.Bytes)
	default:
		key, err = x509.ParsePKCS8PrivateKey(block.Bytes)
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %s block: %v", ErrInvalidKey, block.Type, err)
	}
	switch k := key.(type) {
	case *rsa.PrivateKey:
		return k, nil
	case *ecdsa.PrivateKey:
		return k, nil
	case ed25519.PrivateKey:
		return k, nil
	}
	return nil, fmt.Errorf("%w: unsupported key type %T (want RSA, ECDSA or Ed25519)", ErrInvalidKey, key)
}

// checkChain requires each certificate to be issued by the next one, so
// that the leaf, which the server presents as its own, comes first.
func checkChain(chain []*x509.Certificate) error {
	for i := 0; i+1 < len(chain); i++ {
		if !bytes.Equal(chain[i].RawIssuer, chain[i+1].RawSubject) {
			return fmt.Errorf("%w: chain out of order: certificate %d (%s) was not issued by certificate %d (%s); put the server certificate first, then its issuers",
				ErrInvalidCert, i+1, chain[i].Subject, i+2, chain[i+1].Subject)
		}
	}
	return nil
}

// checkPair reports whether the key in keyPEM belongs to the first
// certificate in certPEM.
func checkPair(certPEM, keyPEM []byte) error {
	if _, err := tls.X509KeyPair(certPEM, keyPEM); err != nil {
		return fmt.Errorf("%w: %v", ErrMismatch, err)
	}
	return nil
}

// certWarnings lists what is wrong, but not fatal, with a chain at now.
func certWarnings(chain []*x509.Certificate, now time.Time) []string {
	if len(chain) == 0 {
		return nil
	}
	var w []string
	leaf := chain[0]
	switch {
	case now.After(leaf.NotAfter):
		w = append(w, fmt.Sprintf("the certificate EXPIRED on %s; clients will refuse it", leaf.NotAfter.UTC().Format(time.RFC3339)))
	case now.Before(leaf.NotBefore):
		w = append(w, fmt.Sprintf("the certificate is not valid before %s; clients will refuse it until then", leaf.NotBefore.UTC().Format(time.RFC3339)))
	}
	if len(leaf.DNSNames) == 0 && len(leaf.IPAddresses) == 0 {
		w = append(w, "the certificate has no DNS or IP subject alternative names; Go-based clients (podman, skopeo, docker) ignore the common name and will refuse it")
	}
	if len(leaf.ExtKeyUsage) > 0 && !slices.Contains(leaf.ExtKeyUsage, x509.ExtKeyUsageServerAuth) && !slices.Contains(leaf.ExtKeyUsage, x509.ExtKeyUsageAny) {
		w = append(w, "the certificate's extended key usage does not include server authentication; clients will refuse it")
	}
	for i, c := range chain[1:] {
		if now.After(c.NotAfter) {
			w = append(w, fmt.Sprintf("chain certificate %d (%s) expired on %s", i+2, c.Subject, c.NotAfter.UTC().Format(time.RFC3339)))
		}
	}
	return w
}

// keyWarnings lists weaknesses of a key.
func keyWarnings(key crypto.Signer) []string {
	if k, ok := key.(*rsa.PrivateKey); ok && k.N.BitLen() < 2048 {
		return []string{fmt.Sprintf("the RSA key has only %d bits; use at least 2048", k.N.BitLen())}
	}
	return nil
}

// describeKey names a public key's algorithm and size, e.g. "ECDSA P-256".
func describeKey(pub crypto.PublicKey) string {
	switch k := pub.(type) {
	case *rsa.PublicKey:
		return fmt.Sprintf("RSA %d", k.N.BitLen())
	case *ecdsa.PublicKey:
		return "ECDSA " + k.Curve.Params().Name
	case ed25519.PublicKey:
		return "Ed25519"
	}
	return fmt.Sprintf("%T", pub)
}
