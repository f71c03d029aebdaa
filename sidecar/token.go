package sidecar

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base32"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// TokenKeyFile is the token signing key's file in the auth directory.
const TokenKeyFile = "token.key"

// Kinds of tokens; an access token is never accepted as a refresh token or
// the other way round.
const (
	kindAccess  = ""
	kindRefresh = "refresh"
)

// accessClaim is one entry of the spec's "access" claim.
type accessClaim struct {
	Type    string   `json:"type"`
	Name    string   `json:"name"`
	Actions []string `json:"actions"`
}

type tokenClaims struct {
	jwt.RegisteredClaims
	Access []accessClaim `json:"access"`
	// Kind is "refresh" for refresh tokens.
	Kind string `json:"kind,omitempty"`
	// PasswordFP (refresh tokens only) fingerprints the user's password
	// hash at issue time: a changed password voids the refresh token.
	PasswordFP string `json:"pwfp,omitempty"`
}

// TokenOptions configure token issuing.
type TokenOptions struct {
	// Service is the audience, the "service" of challenges.
	Service string
	// Issuer is the "iss" claim.
	Issuer string
	// TTL is the lifetime of access tokens.
	TTL time.Duration
	// RefreshTTL is the lifetime of refresh tokens.
	RefreshTTL time.Duration
	// Now is the clock (default time.Now); tests replace it.
	Now func() time.Time
}

func (o *TokenOptions) defaults() {
	if o.Service == "" {
		o.Service = "mreg"
	}
	if o.Issuer == "" {
		o.Issuer = "mreg"
	}
	if o.TTL <= 0 {
		o.TTL = 5 * time.Minute
	}
	if o.RefreshTTL <= 0 {
		o.RefreshTTL = 7 * 24 * time.Hour
	}
	if o.Now == nil {
		o.Now = time.Now
	}
}

// tokens issues and verifies ES256 JWTs. Verified access tokens are
// remembered until they expire, so a request carrying a token costs a hash
// and a map lookup, not a signature check.
type tokens struct {
	opts TokenOptions
	key  *ecdsa.PrivateKey
	kid  string
	now  func() time.Time

	mu       sync.Mutex
	verified map[[sha256.Size]byte]*tokenClaims
}

// maxVerified bounds the verified-token cache.
const maxVerified = 4096

// loadOrCreateKey reads the signing key, or generates and writes it (0600)
// on first start, so tokens survive restarts.
func loadOrCreateKey(dir string) (*ecdsa.PrivateKey, error) {
	path := filepath.Join(dir, TokenKeyFile)
	b, err := os.ReadFile(path)
	if err == nil {
		blk, _ := pem.Decode(b)
		if blk == nil {
			return nil, fmt.Errorf("%w: %s is not PEM", ErrConfig, path)
		}
		k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
		if err != nil {
			return nil, fmt.Errorf("%w: %s: %v", ErrConfig, path, err)
		}
		ec, ok := k.(*ecdsa.PrivateKey)
		if !ok || ec.Curve != elliptic.P256() {
			return nil, fmt.Errorf("%w: %s is not a P-256 key", ErrConfig, path)
		}
		return ec, nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("read token key: %w", err)
	}
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate token key: %w", err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("auth directory: %w", err)
	}
	// Write a temporary file, then hard-link it into place: the key
	// appears whole or not at all, and if another process (a second
	// sidecar on the same volume) won the race, its key is used.
	tmp, err := os.CreateTemp(dir, ".token.key-*")
	if err != nil {
		return nil, fmt.Errorf("write token key: %w", err)
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return nil, fmt.Errorf("write token key: %w", err)
	}
	if err := pem.Encode(tmp, &pem.Block{Type: "PRIVATE KEY", Bytes: der}); err != nil {
		tmp.Close()
		return nil, fmt.Errorf("write token key: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return nil, fmt.Errorf("write token key: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return nil, fmt.Errorf("write token key: %w", err)
	}
	if err := os.Link(tmp.Name(), path); errors.Is(err, os.ErrExist) {
		return loadOrCreateKey(dir)
	} else if err != nil {
		return nil, fmt.Errorf("write token key: %w", err)
	}
	return k, nil
}

func newTokens(dir string, opts TokenOptions) (*tokens, error) {
	opts.defaults()
	key, err := loadOrCreateKey(dir)
	if err != nil {
		return nil, err
	}
	spki, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256(spki)
	return &tokens{
		opts: opts, key: key, now: opts.Now,
		kid:      base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(sum[:15]),
		verified: make(map[[sha256.Size]byte]*tokenClaims),
	}, nil
}

func (t *tokens) sign(c *tokenClaims) (string, error) {
	tok := jwt.NewWithClaims(jwt.SigningMethodES256, c)
	tok.Header["kid"] = t.kid
	s, err := tok.SignedString(t.key)
	if err != nil {
		return "", fmt.Errorf("sign token: %w", err)
	}
	return s, nil
}

func (t *tokens) claims(sub, kind string, ttl time.Duration) *tokenClaims {
	now := t.now()
	return &tokenClaims{
		RegisteredClaims: jwt.RegisteredClaims{
			Issuer:    t.opts.Issuer,
			Subject:   sub,
			Audience:  jwt.ClaimStrings{t.opts.Service},
			IssuedAt:  jwt.NewNumericDate(now),
			NotBefore: jwt.NewNumericDate(now.Add(-time.Second)),
			ExpiresAt: jwt.NewNumericDate(now.Add(ttl)),
			ID:        rand.Text(),
		},
		Kind: kind,
	}
}

// issue returns an access token for sub with the granted scopes.
func (t *tokens) issue(sub string, granted []Scope) (string, time.Time, error) {
	c := t.claims(sub, kindAccess, t.opts.TTL)
	c.Access = make([]accessClaim, 0, len(granted))
	for _, g := range granted {
		c.Access = append(c.Access, accessClaim{Type: g.Type, Name: g.Name, Actions: g.Actions})
	}
	s, err := t.sign(c)
	return s, c.IssuedAt.Time, err
}

// issueRefresh returns a refresh token for sub bound to its password hash.
func (t *tokens) issueRefresh(sub string, hash []byte) (string, error) {
	c := t.claims(sub, kindRefresh, t.opts.RefreshTTL)
	c.PasswordFP = passwordFingerprint(hash)
	return t.sign(c)
}

func passwordFingerprint(hash []byte) string {
	sum := sha256.Sum256(hash)
	return base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(sum[:10])
}

// errInvalidToken: bad signature, expired, wrong issuer, audience or kind.
var errInvalidToken = errors.New("invalid token")

// verify checks a token's signature, algorithm, issuer, audience, expiry
// and kind.
func (t *tokens) verify(raw, kind string) (*tokenClaims, error) {
	if len(raw) > 16<<10 {
		return nil, fmt.Errorf("%w: too long", errInvalidToken)
	}
	var k [sha256.Size]byte
	if kind == kindAccess {
		k = sha256.Sum256([]byte(raw))
		t.mu.Lock()
		c, ok := t.verified[k]
		t.mu.Unlock()
		if ok {
			if t.now().Before(c.ExpiresAt.Time) {
				return c, nil
			}
			t.mu.Lock()
			delete(t.verified, k)
			t.mu.Unlock()
		}
	}
	c := &tokenClaims{}
	_, err := jwt.ParseWithClaims(raw, c, func(*jwt.Token) (any, error) { return &t.key.PublicKey, nil },
		jwt.WithValidMethods([]string{jwt.SigningMethodES256.Alg()}),
		jwt.WithIssuer(t.opts.Issuer),
		jwt.WithAudience(t.opts.Service),
		jwt.WithExpirationRequired(),
		jwt.WithIssuedAt(),
		jwt.WithStrictDecoding(),
		jwt.WithTimeFunc(t.now),
	)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", errInvalidToken, err)
	}
	if c.Kind != kind {
		return nil, fmt.Errorf("%w: wrong kind of token", errInvalidToken)
	}
	if kind == kindAccess {
		t.mu.Lock()
		if len(t.verified) >= maxVerified {
			clear(t.verified)
		}
		t.verified[k] = c
		t.mu.Unlock()
	}
	return c, nil
}

// scopes converts the access claim back to scopes.
func (c *tokenClaims) scopes() []Scope {
	out := make([]Scope, 0, len(c.Access))
	for _, a := range c.Access {
		out = append(out, Scope{Type: a.Type, Name: a.Name, Actions: a.Actions})
	}
	return out
}
