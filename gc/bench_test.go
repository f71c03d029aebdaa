package gc

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"sync"
	"testing"
	"time"

	"github.com/distribution/distribution/v3"
	"github.com/distribution/distribution/v3/manifest/ocischema"
	"github.com/distribution/distribution/v3/registry/storage"
	"github.com/distribution/distribution/v3/registry/storage/driver"
	"github.com/distribution/distribution/v3/registry/storage/driver/filesystem"
	"github.com/distribution/reference"
	"github.com/opencontainers/go-digest"
	"github.com/opencontainers/image-spec/specs-go"
	v1 "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/sirupsen/logrus"
	"golang.org/x/sync/errgroup"
)

// The store generator writes through Distribution's own storage API (blob
// and manifest services over the filesystem driver), so the layout is
// exactly what a registry would have written.

// genBlob is one config or layer blob the generator put.
type genBlob struct {
	desc    v1.Descriptor
	payload []byte
}

// genManifest is one image manifest the generator put.
type genManifest struct {
	repo    string
	tag     string // "" when untagged
	digest  digest.Digest
	size    int64 // manifest payload size
	blobs   []genBlob
	payload []byte
}

// genStore is a generated store and what GC must find in it.
type genStore struct {
	dir       string
	repos     []string
	manifests []genManifest
	took      time.Duration

	// Expectations derived from what was generated, independently of gc.
	wantScanned      int   // manifests
	wantRemoved      int   // untagged manifests
	wantBlobsScanned int   // config + layers + manifest payloads
	wantBlobsRemoved int   // blobs of untagged manifests, their payloads included
	wantLayerLinks   int   // repository _layers links of untagged manifests
	wantBytes        int64 // bytes of the removed blobs
}

const (
	genLayersPerManifest = 4
	genLayerMinSize      = 256
	genLayerMaxSize      = 2048
)

// quietDistribution keeps Distribution's per-file Info logging (Vacuum logs
// every deletion through logrus) out of test and benchmark output.
var quietDistribution = sync.OnceFunc(func() { logrus.SetLevel(logrus.WarnLevel) })

func fsDriver(tb testing.TB, dir string) driver.StorageDriver {
	tb.Helper()
	d, err := filesystem.FromParameters(map[string]any{"rootdirectory": dir})
	if err != nil {
		tb.Fatal(err)
	}
	return d
}

func openRepo(tb testing.TB, ctx context.Context, reg distribution.Namespace, name string) distribution.Repository {
	tb.Helper()
	named, err := reference.WithName(name)
	if err != nil {
		tb.Fatal(err)
	}
	repo, err := reg.Repository(ctx, named)
	if err != nil {
		tb.Fatal(err)
	}
	return repo
}

// generateStore writes n OCI image manifests (a config and four random
// layers each, every blob unique) spread over nrepos repositories into dir.
// Manifest i goes to repository i%nrepos; it is tagged when (i/nrepos) is
// even, so every repository has both tagged and untagged manifests and,
// when n is a multiple of 2*nrepos, exactly half are tagged.
func generateStore(tb testing.TB, dir string, n, nrepos int) *genStore {
	tb.Helper()
	quietDistribution()
	start := time.Now()
	ctx := context.Background()
	reg, err := storage.NewRegistry(ctx, fsDriver(tb, dir), storage.EnableDelete)
	if err != nil {
		tb.Fatal(err)
	}
	gs := &genStore{dir: dir, manifests: make([]genManifest, n)}
	for r := range nrepos {
		gs.repos = append(gs.repos, fmt.Sprintf("gen/repo%02d", r))
	}
	// One goroutine per repository: the filesystem driver syncs every
	// directory it writes to, so generation is latency-bound.
	var g errgroup.Group
	for r, name := range gs.repos {
		g.Go(func() error {
			repo := openRepo(tb, ctx, reg, name)
			ms, err := repo.Manifests(ctx)
			if err != nil {
				return err
			}
			rng := rand.New(rand.NewPCG(uint64(r)+1, 0x6d726567))
			for i := r; i < n; i += nrepos {
				m, err := genOne(ctx, repo, ms, rng, i, (i/nrepos)%2 == 0)
				if err != nil {
					return fmt.Errorf("manifest %d in %s: %w", i, name, err)
				}
				m.repo = name
				gs.manifests[i] = m
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		tb.Fatal(err)
	}
	gs.took = time.Since(start)

	gs.wantScanned = n
	gs.wantBlobsScanned = n * (2 + genLayersPerManifest)
	for _, m := range gs.manifests {
		if m.tag != "" {
			continue
		}
		gs.wantRemoved++
		gs.wantBlobsRemoved += len(m.blobs) + 1 // + the manifest payload blob
		gs.wantLayerLinks += len(m.blobs)
		gs.wantBytes += m.size
		for _, b := range m.blobs {
			gs.wantBytes += b.desc.Size
		}
	}
	return gs
}

// genOne puts the blobs of manifest i through repo's blob service, then the
// manifest itself (with a tag when tagged).
func genOne(ctx context.Context, repo distribution.Repository, ms distribution.ManifestService, rng *rand.Rand, i int, tagged bool) (genManifest, error) {
	m := genManifest{}
	blobs := repo.Blobs(ctx)
	put := func(mediaType string, payload []byte) (v1.Descriptor, error) {
		desc, err := blobs.Put(ctx, mediaType, payload)
		if err != nil {
			return v1.Descriptor{}, err
		}
		desc.MediaType = mediaType
		m.blobs = append(m.blobs, genBlob{desc: desc, payload: payload})
		return desc, nil
	}
	var layers []v1.Descriptor
	var diffIDs []digest.Digest
	for range genLayersPerManifest {
		payload := make([]byte, genLayerMinSize+rng.IntN(genLayerMaxSize-genLayerMinSize))
		for j := range payload {
			payload[j] = byte(rng.Uint32())
		}
		desc, err := put(v1.MediaTypeImageLayerGzip, payload)
		if err != nil {
			return m, err
		}
		layers = append(layers, desc)
		diffIDs = append(diffIDs, desc.Digest)
	}
	// The config names the manifest's index, so no two configs are equal.
	config, err := json.Marshal(v1.Image{
		Platform: v1.Platform{Architecture: "amd64", OS: "linux"},
		Config:   v1.ImageConfig{Labels: map[string]string{"gen.index": fmt.Sprint(i)}},
		RootFS:   v1.RootFS{Type: "layers", DiffIDs: diffIDs},
	})
	if err != nil {
		return m, err
	}
	cdesc, err := put(v1.MediaTypeImageConfig, config)
	if err != nil {
		return m, err
	}
	dm, err := ocischema.FromStruct(ocischema.Manifest{
		Versioned: specs.Versioned{SchemaVersion: 2},
		MediaType: v1.MediaTypeImageManifest,
		Config:    cdesc,
		Layers:    layers,
	})
	if err != nil {
		return m, err
	}
	var opts []distribution.ManifestServiceOption
	if tagged {
		m.tag = fmt.Sprintf("t%04d", i)
		opts = append(opts, distribution.WithTag(m.tag))
	}
	m.digest, err = ms.Put(ctx, dm, opts...)
	if err != nil {
		return m, err
	}
	var mediaType string
	mediaType, m.payload, _ = dm.Payload()
	m.size = int64(len(m.payload))
	if want := digest.FromBytes(m.payload); m.digest != want {
		return m, fmt.Errorf("manifest digest %s, payload digest %s", m.digest, want)
	}
	// The storage manifest service ignores WithTag (only the HTTP client
	// honours it); the registry's manifest handler tags after the Put, and
	// so does the generator.
	if tagged {
		desc := v1.Descriptor{MediaType: mediaType, Digest: m.digest, Size: m.size}
		if err := repo.Tags(ctx).Tag(ctx, m.tag, desc); err != nil {
			return m, err
		}
	}
	return m, nil
}

// check compares a run's stats with what the generator expects.
func (gs *genStore) check(tb testing.TB, what string, st Stats) {
	tb.Helper()
	type count struct {
		name      string
		got, want int64
	}
	for _, c := range []count{
		{"Repositories", int64(st.Repositories), int64(len(gs.repos))},
		{"ManifestsScanned", int64(st.ManifestsScanned), int64(gs.wantScanned)},
		{"ManifestsRemoved", int64(st.ManifestsRemoved), int64(gs.wantRemoved)},
		{"BlobsScanned", int64(st.BlobsScanned), int64(gs.wantBlobsScanned)},
		{"BlobsRemoved", int64(st.BlobsRemoved), int64(gs.wantBlobsRemoved)},
		{"LayerLinksRemoved", int64(st.LayerLinksRemoved), int64(gs.wantLayerLinks)},
		{"BytesFreed", st.BytesFreed, gs.wantBytes},
		{"UploadsRemoved", int64(st.UploadsRemoved), 0},
	} {
		if c.got != c.want {
			tb.Errorf("%s: %s = %d, want %d (%s)", what, c.name, c.got, c.want, st.Summary())
		}
	}
}

// copyStore copies the generated store to a new directory under parent.
func copyStore(tb testing.TB, src, parent string) string {
	tb.Helper()
	dst, err := os.MkdirTemp(parent, "store-")
	if err != nil {
		tb.Fatal(err)
	}
	// cp -a src/. dst copies the contents, keeping modes and times.
	if out, err := exec.Command("cp", "-a", src+"/.", dst).CombinedOutput(); err != nil {
		tb.Fatalf("cp -a: %v\n%s", err, out)
	}
	return dst
}

func TestGCGeneratedStoreCounts(t *testing.T) {
	ctx := context.Background()
	gs := generateStore(t, t.TempDir(), 20, 2)
	if gs.wantRemoved != 10 || gs.wantBlobsScanned != 120 || gs.wantBlobsRemoved != 60 || gs.wantLayerLinks != 50 {
		t.Fatalf("generator: %d untagged, %d blobs, %d blobs of untagged, %d links; want 10, 120, 60, 50",
			gs.wantRemoved, gs.wantBlobsScanned, gs.wantBlobsRemoved, gs.wantLayerLinks)
	}
	d := fsDriver(t, gs.dir)

	dry, err := Run(ctx, d, Options{DryRun: true})
	if err != nil {
		t.Fatal(err)
	}
	gs.check(t, "dry run", dry)
	wet, err := Run(ctx, d, Options{})
	if err != nil {
		t.Fatal(err)
	}
	gs.check(t, "real run", wet)
	dry.Duration, wet.Duration, dry.DryRun = 0, 0, false
	if dry != wet {
		t.Errorf("dry run %+v\nreal run %+v", dry, wet)
	}
	again, err := Run(ctx, d, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if again.ManifestsRemoved+again.BlobsRemoved+again.LayerLinksRemoved+again.UploadsRemoved != 0 || again.BytesFreed != 0 {
		t.Errorf("second run removed something: %s", again.Summary())
	}

	// What survived, read through a fresh registry over the same storage.
	reg, err := storage.NewRegistry(ctx, fsDriver(t, gs.dir), storage.EnableDelete)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range gs.manifests {
		repo := openRepo(t, ctx, reg, m.repo)
		ms, err := repo.Manifests(ctx)
		if err != nil {
			t.Fatal(err)
		}
		exists, err := ms.Exists(ctx, m.digest)
		if err != nil {
			t.Fatal(err)
		}
		if m.tag == "" {
			if exists {
				t.Errorf("%s@%s: untagged manifest survived", m.repo, m.digest)
			}
			for _, b := range m.blobs {
				if _, err := repo.Blobs(ctx).Stat(ctx, b.desc.Digest); !errors.Is(err, distribution.ErrBlobUnknown) {
					t.Errorf("%s: blob %s of untagged manifest: Stat err %v, want ErrBlobUnknown", m.repo, b.desc.Digest, err)
				}
				if _, err := reg.BlobStatter().Stat(ctx, b.desc.Digest); !errors.Is(err, distribution.ErrBlobUnknown) {
					t.Errorf("blob %s of untagged manifest still in the global store: %v", b.desc.Digest, err)
				}
			}
			if _, err := reg.BlobStatter().Stat(ctx, m.digest); !errors.Is(err, distribution.ErrBlobUnknown) {
				t.Errorf("payload blob of untagged manifest %s still in the global store: %v", m.digest, err)
			}
			continue
		}
		if !exists {
			t.Errorf("%s:%s (%s): tagged manifest removed", m.repo, m.tag, m.digest)
			continue
		}
		desc, err := repo.Tags(ctx).Get(ctx, m.tag)
		if err != nil || desc.Digest != m.digest {
			t.Errorf("%s:%s resolves to %v (%v), want %s", m.repo, m.tag, desc.Digest, err, m.digest)
		}
		got, err := ms.Get(ctx, m.digest)
		if err != nil {
			t.Errorf("%s@%s: %v", m.repo, m.digest, err)
		} else if _, p, _ := got.Payload(); !bytes.Equal(p, m.payload) {
			t.Errorf("%s@%s: payload changed", m.repo, m.digest)
		}
		for _, b := range m.blobs {
			p, err := repo.Blobs(ctx).Get(ctx, b.desc.Digest)
			if err != nil {
				t.Errorf("%s: blob %s of tagged manifest: %v", m.repo, b.desc.Digest, err)
				continue
			}
			if !bytes.Equal(p, b.payload) {
				t.Errorf("%s: blob %s content changed", m.repo, b.desc.Digest)
			}
			rc, err := repo.Blobs(ctx).Open(ctx, b.desc.Digest)
			if err != nil {
				t.Errorf("%s: open blob %s: %v", m.repo, b.desc.Digest, err)
				continue
			}
			n, _ := io.Copy(io.Discard, rc)
			rc.Close()
			if n != b.desc.Size {
				t.Errorf("%s: blob %s: read %d bytes, want %d", m.repo, b.desc.Digest, n, b.desc.Size)
			}
		}
	}
}

// BenchmarkGC runs GC over 1,000 manifests (500 tagged, 500 untagged) in 10
// repositories, 6,000 blobs: 5,000 config and layer blobs plus the 1,000
// manifest payloads, which Distribution stores as blobs too. GC of the
// untagged half therefore removes 3,000 blobs (2,500 configs and layers and
// 500 manifest payloads) and 2,500 layer links.
func BenchmarkGC(b *testing.B) {
	const manifests, repos = 1000, 10
	// Generated once per run; the parent of sub-benchmarks runs only once,
	// so its TempDir lives until every sub-benchmark finished.
	gs := generateStore(b, b.TempDir(), manifests, repos)
	// Logged by the sub-benchmarks: a parent's log shows only with -v.
	logGen := func(b *testing.B) {
		b.Logf("store generated once for all sub-benchmarks: %d manifests, %d blobs in %d repositories in %s",
			manifests, gs.wantBlobsScanned, repos, gs.took.Round(time.Millisecond))
	}
	if gs.wantScanned != 1000 || gs.wantRemoved != 500 || gs.wantBlobsScanned != 6000 ||
		gs.wantBlobsRemoved != 3000 || gs.wantLayerLinks != 2500 {
		b.Fatalf("generator: %d manifests, %d untagged, %d blobs, %d blobs of untagged, %d links",
			gs.wantScanned, gs.wantRemoved, gs.wantBlobsScanned, gs.wantBlobsRemoved, gs.wantLayerLinks)
	}
	ctx := context.Background()

	b.Run("dry-run", func(b *testing.B) {
		logGen(b)
		d := fsDriver(b, gs.dir)
		var st Stats
		for b.Loop() {
			var err error
			st, err = Run(ctx, d, Options{DryRun: true})
			if err != nil {
				b.Fatal(err)
			}
		}
		gs.check(b, "dry run", st)
		b.ReportMetric(float64(manifests)*float64(b.N)/b.Elapsed().Seconds(), "manifests/s")
	})

	b.Run("real", func(b *testing.B) {
		logGen(b)
		parent := b.TempDir()
		for b.Loop() {
			b.StopTimer()
			dir := copyStore(b, gs.dir, parent)
			d := fsDriver(b, dir)
			b.StartTimer()

			st, err := Run(ctx, d, Options{})

			b.StopTimer()
			if err != nil {
				b.Fatal(err)
			}
			gs.check(b, "real run", st)
			again, err := Run(ctx, d, Options{})
			if err != nil {
				b.Fatal(err)
			}
			if again.ManifestsRemoved+again.BlobsRemoved+again.LayerLinksRemoved+again.UploadsRemoved != 0 {
				b.Fatalf("second run removed something: %s", again.Summary())
			}
			if again.ManifestsScanned != gs.wantScanned-gs.wantRemoved ||
				again.BlobsScanned != gs.wantBlobsScanned-gs.wantBlobsRemoved {
				b.Fatalf("second run scanned %d manifests, %d blobs; want %d, %d", again.ManifestsScanned,
					again.BlobsScanned, gs.wantScanned-gs.wantRemoved, gs.wantBlobsScanned-gs.wantBlobsRemoved)
			}
			if err := os.RemoveAll(dir); err != nil {
				b.Fatal(err)
			}
			b.StartTimer()
		}
		b.ReportMetric(float64(manifests)*float64(b.N)/b.Elapsed().Seconds(), "manifests/s")
	})
}
