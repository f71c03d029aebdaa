// Package testutil holds helpers shared by mreg's tests and benchmarks.
package testutil

import (
	"crypto/sha256"
	"fmt"
	"io"
)

// PatternReader yields N deterministic bytes without holding them, so tests
// can push and pull blobs of any size with constant memory.
type PatternReader struct {
	N   int64
	off int64
}

func (p *PatternReader) Read(b []byte) (int, error) {
	if p.off >= p.N {
		return 0, io.EOF
	}
	if rem := p.N - p.off; int64(len(b)) > rem {
		b = b[:rem]
	}
	for i := range b {
		b[i] = byte((p.off + int64(i)) * 7 % 251)
	}
	p.off += int64(len(b))
	return len(b), nil
}

// PatternDigest is the sha256 digest of a PatternReader of n bytes.
func PatternDigest(n int64) string {
	h := sha256.New()
	_, _ = io.Copy(h, &PatternReader{N: n})
	return fmt.Sprintf("sha256:%x", h.Sum(nil))
}
