package users

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"unicode"

	"golang.org/x/crypto/bcrypt"
)

// validNames and invalidNames are shared by the table test and the fuzz
// seed corpus.
var validNames = []string{
	"alice",
	"a",
	"A",
	"0",
	"ci-bot",
	"john.doe@example",
	"under_score",
	"Mixed.Case-9_x@y",
	strings.Repeat("a", MaxNameLen),
}

var invalidNames = []string{
	"",
	strings.Repeat("a", MaxNameLen+1),
	".hidden",
	"-x",
	"_x",
	"@x",
	"a:b", // a colon would break Basic auth
	"a b",
	" a",
	"a\t",
	"a\n",
	"ü",
	"aü",
	"a/b",
	"a\\b",
	"a\x00",
	"a\x7f",
	"a$b",
	"a'b",
	"a;b",
	"a,b",
	"a+b",
	"\xff",
	strings.Repeat("ü", 20), // 40 bytes, but not ASCII
}

func TestValidateName(t *testing.T) {
	for _, name := range validNames {
		t.Run("valid/"+name, func(t *testing.T) {
			if err := ValidateName(name); err != nil {
				t.Errorf("ValidateName(%q) = %v, want nil", name, err)
			}
		})
	}
	for _, name := range invalidNames {
		t.Run("invalid/"+name, func(t *testing.T) {
			err := ValidateName(name)
			if err == nil {
				t.Fatalf("ValidateName(%q) = nil, want error", name)
			}
			if !errors.Is(err, ErrInvalidName) {
				t.Errorf("ValidateName(%q) = %v, want an error wrapping ErrInvalidName", name, err)
			}
			// The message must not echo raw control or invalid bytes.
			if strings.ContainsAny(err.Error(), "\x00\n\x7f\xff") {
				t.Errorf("ValidateName(%q) error %q contains raw control/invalid bytes", name, err)
			}
		})
	}
}

func TestValidateNameLengthBoundary(t *testing.T) {
	for n := 1; n <= MaxNameLen+3; n++ {
		err := ValidateName(strings.Repeat("x", n))
		if n <= MaxNameLen && err != nil {
			t.Errorf("len %d: unexpected error %v", n, err)
		}
		if n > MaxNameLen && !errors.Is(err, ErrInvalidName) {
			t.Errorf("len %d: got %v, want ErrInvalidName", n, err)
		}
	}
}

func FuzzValidateName(f *testing.F) {
	for _, s := range validNames {
		f.Add(s)
	}
	for _, s := range invalidNames {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		err := ValidateName(s) // must not panic
		if err != nil {
			if !errors.Is(err, ErrInvalidName) {
				t.Fatalf("ValidateName(%q) = %v, not wrapping ErrInvalidName", s, err)
			}
			return
		}
		if len(s) < 1 || len(s) > MaxNameLen {
			t.Fatalf("accepted %q of length %d", s, len(s))
		}
		if strings.Contains(s, ":") {
			t.Fatalf("accepted %q containing a colon", s)
		}
		for i := 0; i < len(s); i++ {
			if s[i] >= 0x80 {
				t.Fatalf("accepted non-ASCII %q", s)
			}
		}
		for _, r := range s {
			if unicode.IsSpace(r) || unicode.IsControl(r) {
				t.Fatalf("accepted %q containing space/control %q", s, r)
			}
		}
		if c := s[0]; !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9') {
			t.Fatalf("accepted %q not starting with a letter or digit", s)
		}
		if strings.ContainsAny(s, "/\\\"'`$;&|<>*?") {
			t.Fatalf("accepted %q containing a shell/path metacharacter", s)
		}
	})
}

func TestHashPassword(t *testing.T) {
	t.Run("empty", func(t *testing.T) {
		for _, pw := range [][]byte{nil, {}} {
			h, err := HashPassword(pw, bcrypt.MinCost)
			if !errors.Is(err, ErrEmptyPassword) {
				t.Errorf("HashPassword(%q) err = %v, want ErrEmptyPassword", pw, err)
			}
			if h != nil {
				t.Errorf("HashPassword(%q) returned a hash with an error", pw)
			}
		}
	})
	t.Run("73 bytes", func(t *testing.T) {
		h, err := HashPassword(bytes.Repeat([]byte("x"), 73), bcrypt.MinCost)
		if !errors.Is(err, ErrPasswordTooLong) {
			t.Errorf("err = %v, want ErrPasswordTooLong", err)
		}
		if h != nil {
			t.Errorf("returned a hash with an error")
		}
	})
	t.Run("72 bytes", func(t *testing.T) {
		pw := bytes.Repeat([]byte("y"), 72)
		h, err := HashPassword(pw, bcrypt.MinCost)
		if err != nil {
			t.Fatalf("err = %v", err)
		}
		if err := bcrypt.CompareHashAndPassword(h, pw); err != nil {
			t.Errorf("hash does not verify: %v", err)
		}
		if err := bcrypt.CompareHashAndPassword(h, pw[:71]); err == nil {
			t.Errorf("hash verifies a 71-byte prefix")
		}
	})
	t.Run("ok", func(t *testing.T) {
		pw := []byte("s3cret")
		h, err := HashPassword(pw, bcrypt.MinCost)
		if err != nil {
			t.Fatalf("err = %v", err)
		}
		if bytes.Contains(h, pw) {
			t.Errorf("hash contains the password")
		}
		if c, err := bcrypt.Cost(h); err != nil || c != bcrypt.MinCost {
			t.Errorf("cost = %d, %v; want %d", c, err, bcrypt.MinCost)
		}
		if err := bcrypt.CompareHashAndPassword(h, pw); err != nil {
			t.Errorf("hash does not verify: %v", err)
		}
		if err := bcrypt.CompareHashAndPassword(h, []byte("wrong")); err == nil {
			t.Errorf("hash verifies a wrong password")
		}
		h2, _ := HashPassword(pw, bcrypt.MinCost)
		if bytes.Equal(h, h2) {
			t.Errorf("two hashes of the same password are equal (no salt?)")
		}
	})
	t.Run("bad cost", func(t *testing.T) {
		for _, cost := range []int{-1, 0, bcrypt.MinCost - 1, bcrypt.MaxCost + 1} {
			h, err := HashPassword([]byte("pw"), cost)
			if err == nil {
				t.Errorf("cost %d: no error (hash cost %v)", cost, func() int { c, _ := bcrypt.Cost(h); return c }())
				continue
			}
			for _, s := range []error{ErrEmptyPassword, ErrPasswordTooLong} {
				if errors.Is(err, s) {
					t.Errorf("cost %d: err %v wrongly wraps %v", cost, err, s)
				}
			}
			if h != nil {
				t.Errorf("cost %d: returned a hash with an error", cost)
			}
		}
	})
}

func TestUserRole(t *testing.T) {
	if r := (User{Admin: true}).Role(); r != "admin" {
		t.Errorf("admin role = %q", r)
	}
	if r := (User{}).Role(); r != "user" {
		t.Errorf("user role = %q", r)
	}
}
