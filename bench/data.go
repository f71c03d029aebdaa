package main

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"io"
	"math/rand/v2"
	"sync"
)

// Blob content comes from a generator, never from memory or disk, so the
// client spends as little CPU as possible producing it: a fixed 1 MiB
// pseudo-random block, with the first 16 bytes of every MiB replaced by
// (seed, MiB index). Different seeds give different blobs (and digests), so
// every column and scenario stores new data; the bytes are incompressible
// within a MiB, and nothing on the path compresses anyway.

const genBlock = 1 << 20

var (
	blockOnce sync.Once
	block     []byte
)

func baseBlock() []byte {
	blockOnce.Do(func() {
		r := rand.New(rand.NewChaCha8([32]byte{'m', 'r', 'e', 'g', '-', 'b', 'e', 'n', 'c', 'h'}))
		block = make([]byte, genBlock)
		for i := 0; i < genBlock; i += 8 {
			binary.LittleEndian.PutUint64(block[i:], r.Uint64())
		}
	})
	return block
}

// genReader yields n deterministic bytes for seed.
type genReader struct {
	seed  uint64
	n     int64
	off   int64
	block []byte
}

func newGen(seed uint64, n int64) *genReader {
	return &genReader{seed: seed, n: n, block: baseBlock()}
}

func (g *genReader) Read(p []byte) (int, error) {
	if g.off >= g.n {
		return 0, io.EOF
	}
	if rem := g.n - g.off; int64(len(p)) > rem {
		p = p[:rem]
	}
	done := 0
	for done < len(p) {
		in := int(g.off % genBlock)
		k := copy(p[done:], g.block[in:])
		if in < 16 {
			var hdr [16]byte
			binary.LittleEndian.PutUint64(hdr[:8], g.seed)
			binary.LittleEndian.PutUint64(hdr[8:], uint64(g.off/genBlock))
			copy(p[done:done+k], hdr[in:])
		}
		done += k
		g.off += int64(k)
	}
	return done, nil
}

// blobSpec is one generated blob.
type blobSpec struct {
	seed   uint64
	size   int64
	digest string
}

// newBlob computes the digest of the generated blob (outside any timing).
func newBlob(seed uint64, size int64) blobSpec {
	h := sha256.New()
	buf := make([]byte, 1<<20)
	_, _ = io.CopyBuffer(h, newGen(seed, size), buf)
	return blobSpec{seed: seed, size: size, digest: fmt.Sprintf("sha256:%x", h.Sum(nil))}
}

func (b blobSpec) reader() io.Reader { return newGen(b.seed, b.size) }

// bytes materialises the blob (for image layers, which go-containerregistry
// wants in memory).
func (b blobSpec) bytes() []byte {
	out := make([]byte, b.size)
	_, _ = io.ReadFull(b.reader(), out)
	return out
}
