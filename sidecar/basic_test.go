package sidecar

import (
	"encoding/base64"
	"errors"
	"strings"
	"testing"
)

func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

func TestParseBasic(t *testing.T) {
	tests := []struct {
		name     string
		header   string
		user     string
		password string
		err      error
	}{
		{"ok", "Basic " + b64("alice:pw"), "alice", "pw", nil},
		{"scheme case", "basic " + b64("alice:pw"), "alice", "pw", nil},
		{"colon in password", "Basic " + b64("alice:p:w"), "alice", "p:w", nil},
		{"empty password", "Basic " + b64("alice:"), "alice", "", nil},
		{"bearer", "Bearer abc.def.ghi", "", "", ErrUnsupportedScheme},
		{"no scheme", b64("alice:pw"), "", "", ErrUnsupportedScheme},
		{"empty", "", "", "", ErrUnsupportedScheme},
		{"bad base64", "Basic !!!", "", "", ErrMalformedAuth},
		{"no colon", "Basic " + b64("alice"), "", "", ErrMalformedAuth},
		{"empty user", "Basic " + b64(":pw"), "", "", ErrMalformedAuth},
		{"too long", "Basic " + strings.Repeat("A", maxAuthHeader), "", "", ErrMalformedAuth},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			u, p, err := parseBasic(tt.header)
			if !errors.Is(err, tt.err) {
				t.Fatalf("err = %v, want %v", err, tt.err)
			}
			if u != tt.user || p != tt.password {
				t.Fatalf("got %q/%q, want %q/%q", u, p, tt.user, tt.password)
			}
		})
	}
}

func FuzzParseBasic(f *testing.F) {
	for _, s := range []string{"Basic " + b64("a:b"), "Basic", "Basic ", "basic " + b64(":"), "Bearer x", "Basic =="} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, header string) {
		u, p, err := parseBasic(header)
		if err != nil {
			if u != "" || p != "" {
				t.Fatalf("error %v with non-empty result", err)
			}
			if !errors.Is(err, ErrMalformedAuth) && !errors.Is(err, ErrUnsupportedScheme) {
				t.Fatalf("unexpected error type %v", err)
			}
			return
		}
		if u == "" || strings.Contains(u, ":") {
			t.Fatalf("bad user %q", u)
		}
		// Round trip: what we parsed is what was encoded.
		_, rest, _ := strings.Cut(header, " ")
		raw, _ := base64.StdEncoding.DecodeString(strings.TrimSpace(rest))
		if string(raw) != u+":"+p {
			t.Fatalf("round trip: %q != %q", raw, u+":"+p)
		}
	})
}
