package main

import (
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"net/http"
	"sync/atomic"

	"github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"golang.org/x/sync/errgroup"
)

// The transfer rows: blob pull and push over the registry API, and whole
// images with go-containerregistry.

// pullRun: r.Concurrency simultaneous GETs of the fixture blob, each
// hashed and compared with its digest.
func (b *bench) pullRun(ctx context.Context, c *column, r *result) error {
	auth, err := c.authHeader(ctx, blobRepo, false)
	if err != nil {
		return err
	}
	u := c.base + "/v2/" + blobRepo + "/blobs/" + b.pullBlob.digest
	// Warm up the credential cache and a connection per stream.
	wg, wctx := errgroup.WithContext(ctx)
	for range r.Concurrency {
		wg.Go(func() error {
			req, err := c.request(wctx, http.MethodHead, u, auth, nil, 0)
			if err != nil {
				return err
			}
			resp, err := c.do(req, http.StatusOK)
			if err == nil {
				resp.Body.Close()
			}
			return err
		})
	}
	if err := wg.Wait(); err != nil {
		return err
	}
	var total atomic.Int64
	m := b.meter(c)
	g, gctx := errgroup.WithContext(ctx)
	for range r.Concurrency {
		g.Go(func() error {
			req, err := c.request(gctx, http.MethodGet, u, auth, nil, 0)
			if err != nil {
				return err
			}
			resp, err := c.do(req, http.StatusOK)
			if err != nil {
				return err
			}
			defer resp.Body.Close()
			h := sha256.New()
			n, err := io.CopyBuffer(h, resp.Body, make([]byte, 256<<10))
			total.Add(n)
			if err != nil {
				return err
			}
			if got := fmt.Sprintf("sha256:%x", h.Sum(nil)); got != b.pullBlob.digest || n != b.pullBlob.size {
				return fmt.Errorf("pulled %d bytes with digest %s, want %d bytes %s", n, got, b.pullBlob.size, b.pullBlob.digest)
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return err
	}
	wall := m.stop(r)
	r.Ops, r.Bytes, r.Seconds = r.Concurrency, total.Load(), wall.Seconds()
	r.MBps = float64(r.Bytes) / 1e6 / wall.Seconds()
	return nil
}

// pushRun pushes a new generated blob (its digest computed beforehand,
// outside the timing) into the column's own repository.
func (b *bench) pushRun(chunked bool) func(ctx context.Context, c *column, r *result) error {
	return func(ctx context.Context, c *column, r *result) error {
		blob := newBlob(b.nextSeed(), b.cfg.blobSize)
		chunk := int64(0)
		if chunked {
			chunk = b.cfg.chunkSize
		}
		repo := "bench/push-" + c.key
		if err := b.warm(ctx, c, repo, true); err != nil {
			return err
		}
		m := b.meter(c)
		if err := b.pushBlob(ctx, c, repo, blob, chunk); err != nil {
			return err
		}
		wall := m.stop(r)
		r.Ops, r.Bytes, r.Seconds = 1, blob.size, wall.Seconds()
		r.MBps = float64(blob.size) / 1e6 / wall.Seconds()
		return b.st.dropBlobs(blob.digest)
	}
}

// pushBlob uploads blob: POST, then one PUT with the body (chunk == 0),
// or PATCHes of chunk bytes with Content-Range and an empty PUT.
func (b *bench) pushBlob(ctx context.Context, c *column, repo string, blob blobSpec, chunk int64) error {
	auth, err := c.authHeader(ctx, repo, true)
	if err != nil {
		return err
	}
	req, err := c.request(ctx, http.MethodPost, c.base+"/v2/"+repo+"/blobs/uploads/", auth, nil, 0)
	if err != nil {
		return err
	}
	resp, err := c.do(req, http.StatusAccepted)
	if err != nil {
		return err
	}
	resp.Body.Close()
	loc, err := resp.Location()
	if err != nil {
		return fmt.Errorf("upload location: %w", err)
	}
	var body io.Reader
	var size int64
	if chunk == 0 {
		body, size = blob.reader(), blob.size
	} else {
		gen := blob.reader()
		for off := int64(0); off < blob.size; {
			n := min(chunk, blob.size-off)
			req, err := c.request(ctx, http.MethodPatch, loc.String(), auth, io.LimitReader(gen, n), n)
			if err != nil {
				return err
			}
			req.Header.Set("Content-Range", fmt.Sprintf("%d-%d", off, off+n-1))
			resp, err := c.do(req, http.StatusAccepted)
			if err != nil {
				return err
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if loc, err = resp.Location(); err != nil {
				return fmt.Errorf("upload location: %w", err)
			}
			off += n
		}
	}
	q := loc.Query()
	q.Set("digest", blob.digest)
	loc.RawQuery = q.Encode()
	req, err = c.request(ctx, http.MethodPut, loc.String(), auth, body, size)
	if err != nil {
		return err
	}
	resp, err = c.do(req, http.StatusCreated)
	if err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if got := resp.Header.Get("Docker-Content-Digest"); got != blob.digest {
		return fmt.Errorf("registry stored %q, want %s", got, blob.digest)
	}
	return nil
}

// imagePush writes a new image of cfg.layers generated layers with
// go-containerregistry (layers uploaded in parallel, as ggcr does).
func (b *bench) imagePush(ctx context.Context, c *column, r *result) error {
	var layers []v1.Layer
	for range b.cfg.layers {
		layers = append(layers, static.NewLayer(blobSpec{seed: b.nextSeed(), size: b.cfg.layerSize}.bytes(), types.OCILayer))
	}
	img, err := mutate.AppendLayers(empty.Image, layers...)
	if err != nil {
		return err
	}
	img = mutate.ConfigMediaType(mutate.MediaType(img, types.OCIManifestSchema1), types.OCIConfigJSON)
	d, err := img.Digest() // computes every digest before the timing
	if err != nil {
		return err
	}
	// The previous round's image of this column is garbage now.
	if err := b.st.dropBlobs(b.imageLayers[c.key]...); err != nil {
		return err
	}
	b.imageLayers[c.key] = nil
	for _, l := range layers {
		ld, err := l.Digest()
		if err != nil {
			return err
		}
		b.imageLayers[c.key] = append(b.imageLayers[c.key], ld.String())
	}
	ref, err := c.ref("bench/image-" + c.key + ":v1")
	if err != nil {
		return err
	}
	if err := b.warm(ctx, c, ref.Context().RepositoryStr(), true); err != nil {
		return err
	}
	m := b.meter(c)
	if err := remote.Write(ref, img, c.remoteOptions(ctx)...); err != nil {
		return err
	}
	wall := m.stop(r)
	b.images[c.key] = d.String()
	r.Ops, r.Bytes, r.Seconds = 1, int64(b.cfg.layers)*b.cfg.layerSize, wall.Seconds()
	r.MBps = float64(r.Bytes) / 1e6 / wall.Seconds()
	return nil
}

// imagePull reads the image the column pushed: manifest, config and every
// layer (4 at a time); go-containerregistry verifies each layer's digest.
func (b *bench) imagePull(ctx context.Context, c *column, r *result) error {
	ref, err := c.ref("bench/image-" + c.key + ":v1")
	if err != nil {
		return err
	}
	if err := b.warm(ctx, c, ref.Context().RepositoryStr(), true); err != nil {
		return err
	}
	m := b.meter(c)
	img, err := remote.Image(ref, c.remoteOptions(ctx)...)
	if err != nil {
		return err
	}
	d, err := img.Digest()
	if err != nil {
		return err
	}
	if d.String() != b.images[c.key] {
		return fmt.Errorf("pulled image %s, pushed %s", d, b.images[c.key])
	}
	if _, err := img.ConfigFile(); err != nil {
		return err
	}
	layers, err := img.Layers()
	if err != nil {
		return err
	}
	var total atomic.Int64
	g := errgroup.Group{}
	g.SetLimit(4)
	for _, l := range layers {
		g.Go(func() error {
			rc, err := l.Compressed()
			if err != nil {
				return err
			}
			defer rc.Close()
			n, err := io.CopyBuffer(io.Discard, rc, make([]byte, 256<<10))
			total.Add(n)
			return err
		})
	}
	if err := g.Wait(); err != nil {
		return err
	}
	wall := m.stop(r)
	if want := int64(b.cfg.layers) * b.cfg.layerSize; total.Load() != want {
		return fmt.Errorf("read %d layer bytes, want %d", total.Load(), want)
	}
	r.Ops, r.Bytes, r.Seconds = 1, total.Load(), wall.Seconds()
	r.MBps = float64(r.Bytes) / 1e6 / wall.Seconds()
	return nil
}
