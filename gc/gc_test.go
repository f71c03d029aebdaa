package gc_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/distribution/distribution/v3/registry/storage/driver/filesystem"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/mreg-dev/mreg/gc"
	"github.com/mreg-dev/mreg/internal/registry"
)

// serve starts a real registry on root and returns its host:port; stop
// shuts it down (GC only runs while nothing serves).
func serve(t *testing.T, root string) (host string, stop func()) {
	t.Helper()
	cfg, err := registry.LoadConfig(registry.Options{Addr: "127.0.0.1:0", Root: root, LogLevel: "error"})
	if err != nil {
		t.Fatal(err)
	}
	srv, err := registry.New(context.Background(), cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(srv.Handler())
	return strings.TrimPrefix(ts.URL, "http://"), ts.Close
}

func runGC(t *testing.T, root string, opts gc.Options) gc.Stats {
	t.Helper()
	d, err := filesystem.FromParameters(map[string]any{"rootdirectory": root})
	if err != nil {
		t.Fatal(err)
	}
	st, err := gc.Run(context.Background(), d, opts)
	if err != nil {
		t.Fatalf("gc: %v", err)
	}
	return st
}

func blobExists(root string, d v1.Hash) bool {
	_, err := os.Stat(filepath.Join(root, "docker/registry/v2/blobs", d.Algorithm, d.Hex[:2], d.Hex, "data"))
	return err == nil
}

// layerDigests returns the digests of img's config and layers.
func blobsOf(t *testing.T, img v1.Image) []v1.Hash {
	t.Helper()
	cfg, _ := img.ConfigName()
	out := []v1.Hash{cfg}
	ls, _ := img.Layers()
	for _, l := range ls {
		d, _ := l.Digest()
		out = append(out, d)
	}
	return out
}

func imageWith(t *testing.T, layers ...v1.Layer) v1.Image {
	t.Helper()
	img, err := mutate.AppendLayers(empty.Image, layers...)
	if err != nil {
		t.Fatal(err)
	}
	// A random label makes every config (and so every image) unique.
	l, _ := random.Layer(16, types.DockerLayer)
	d, _ := l.Digest()
	cf, _ := img.ConfigFile()
	cf.Config.Labels = map[string]string{"id": d.String()}
	img, err = mutate.ConfigFile(img, cf)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

func rl(t *testing.T) v1.Layer {
	l, err := random.Layer(2048, types.DockerLayer)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func digestOf(t *testing.T, x interface{ Digest() (v1.Hash, error) }) v1.Hash {
	d, err := x.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// artifact is a small OCI manifest with a subject (a referrer).
func artifact(t *testing.T, subject v1.Image) v1.Image {
	t.Helper()
	sd := digestOf(t, subject)
	raw, _ := subject.RawManifest()
	img := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, "application/vnd.example.sbom.config+json")
	img, err := mutate.Append(img, mutate.Addendum{Layer: static.NewLayer([]byte(fmt.Sprintf(`{"sbom":%q}`, sd)), "application/json")})
	if err != nil {
		t.Fatal(err)
	}
	return mutate.Subject(img, v1.Descriptor{MediaType: types.DockerManifestSchema2, Digest: sd, Size: int64(len(raw))}).(v1.Image)
}

func TestGCKeepsLiveDataAndRemovesGarbage(t *testing.T) {
	root := t.TempDir()
	host, stop := serve(t, root)
	ref := func(s string) name.Reference {
		r, err := name.ParseReference(host+"/"+s, name.Insecure)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	push := func(s string, img v1.Image) {
		t.Helper()
		if err := remote.Write(ref(s), img); err != nil {
			t.Fatalf("push %s: %v", s, err)
		}
	}
	shared := rl(t)
	sharedD := digestOf(t, shared)

	keep := imageWith(t, rl(t), shared)    // a/app:v1 and a/app:also
	dropped := imageWith(t, rl(t), shared) // a/app:v2, tag deleted
	digestDel := imageWith(t, rl(t))       // a/app:v3, deleted by digest
	other := imageWith(t, rl(t), shared)   // b/other:v1 shares a layer
	child1, child2 := imageWith(t, rl(t)), imageWith(t, rl(t))
	idx := mutate.AppendManifests(empty.Index,
		mutate.IndexAddendum{Add: child1, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "amd64"}}},
		mutate.IndexAddendum{Add: child2, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "arm64"}}})
	nestedChild := imageWith(t, rl(t))
	inner := mutate.AppendManifests(empty.Index, mutate.IndexAddendum{Add: nestedChild})
	outer := mutate.AppendManifests(empty.Index, mutate.IndexAddendum{Add: inner})
	sig := imageWith(t, rl(t))         // tag-schema signature of keep
	sbom := artifact(t, keep)          // untagged referrer of a live image
	orphanSBOM := artifact(t, dropped) // untagged referrer of garbage

	push("a/app:v1", keep)
	push("a/app:also", keep)
	push("a/app:v2", dropped)
	push("a/app:v3", digestDel)
	push("b/other:v1", other)
	if err := remote.WriteIndex(ref("a/multi:v1"), idx); err != nil {
		t.Fatal(err)
	}
	if err := remote.WriteIndex(ref("a/nested:v1"), outer); err != nil {
		t.Fatal(err)
	}
	push("a/app:sha256-"+digestOf(t, keep).Hex+".sig", sig)
	// Referrers are PUT as plain manifests: go-containerregistry would add
	// a referrers fallback tag (sha256-<subject>), which keeps them alive
	// as tagged content and would not test the subject rule.
	putManifest(t, host, "a/app", sbom)
	putManifest(t, host, "a/app", orphanSBOM)

	// Tag deletes and a digest delete, through the API.
	if err := remote.Delete(ref("a/app:v2")); err != nil {
		t.Fatalf("tag delete: %v", err)
	}
	if err := remote.Delete(ref("a/app:also")); err != nil {
		t.Fatalf("tag delete: %v", err)
	}
	if err := remote.Delete(ref("a/app@" + digestOf(t, digestDel).String())); err != nil {
		t.Fatalf("digest delete: %v", err)
	}
	stop()

	// Dry run: same report as the real run, nothing deleted.
	before := snapshotDir(t, root)
	dry := runGC(t, root, gc.Options{DryRun: true})
	if after := snapshotDir(t, root); after != before {
		t.Fatal("dry run changed the storage")
	}
	real := runGC(t, root, gc.Options{})
	dry.DryRun, dry.Duration, real.Duration = false, 0, 0
	if dry != real {
		t.Fatalf("dry run %+v != real run %+v", dry, real)
	}
	// dropped and orphanSBOM are garbage; digestDel's revision link is
	// already gone (so it is not counted as a manifest here).
	if real.ManifestsRemoved != 2 {
		t.Errorf("manifests removed = %d, want 2 (untagged image and its referrer)", real.ManifestsRemoved)
	}
	again := runGC(t, root, gc.Options{})
	if again.ManifestsRemoved != 0 || again.BlobsRemoved != 0 {
		t.Errorf("second run still removed %+v", again)
	}

	// Exactly which blobs are gone on disk.
	gone := append(uniqueBlobs(t, dropped, shared), uniqueBlobs(t, digestDel, shared)...)
	gone = append(gone, digestOf(t, dropped), digestOf(t, digestDel), digestOf(t, orphanSBOM))
	// The orphan referrer's layer is garbage; its config is the same empty
	// config as the live referrer's and stays.
	orphanLayers, _ := orphanSBOM.Layers()
	gone = append(gone, digestOf(t, orphanLayers[0]))
	for _, d := range gone {
		if blobExists(root, d) {
			t.Errorf("garbage blob %s survived", d)
		}
	}
	live := []v1.Image{keep, other, child1, child2, nestedChild, sig, sbom}
	for _, img := range live {
		for _, d := range append(blobsOf(t, img), digestOf(t, img)) {
			if !blobExists(root, d) {
				t.Errorf("live blob %s was removed", d)
			}
		}
	}
	for _, x := range []interface{ Digest() (v1.Hash, error) }{idx, inner, outer} {
		if !blobExists(root, digestOf(t, x)) {
			t.Errorf("index %s was removed", digestOf(t, x))
		}
	}
	if !blobExists(root, sharedD) {
		t.Error("shared layer removed")
	}
	if real.BlobsRemoved != len(gone) {
		t.Errorf("blobs removed = %d, want %d", real.BlobsRemoved, len(gone))
	}
	if real.BytesFreed <= 0 {
		t.Error("no bytes freed reported")
	}

	// Every tagged image, every platform, pulls byte-identical from a
	// fresh registry on the collected storage.
	host, stop = serve(t, root)
	defer stop()
	ref = func(s string) name.Reference {
		r, _ := name.ParseReference(host+"/"+s, name.Insecure)
		return r
	}
	pullSame(t, ref("a/app:v1"), keep)
	pullSame(t, ref("b/other:v1"), other)
	pullSame(t, ref("a/app:sha256-"+digestOf(t, keep).Hex+".sig"), sig)
	pullSame(t, ref("a/app@"+digestOf(t, sbom).String()), sbom)
	for _, c := range []v1.Image{child1, child2} {
		pullSame(t, ref("a/multi@"+digestOf(t, c).String()), c)
	}
	pullSame(t, ref("a/nested@"+digestOf(t, nestedChild).String()), nestedChild)
	if _, err := remote.Image(ref("a/app:v2")); err == nil {
		t.Error("deleted tag still resolves")
	}
}

// uniqueBlobs is img's config and layers minus the shared layer.
func uniqueBlobs(t *testing.T, img v1.Image, shared v1.Layer) []v1.Hash {
	var out []v1.Hash
	sd := digestOf(t, shared)
	for _, d := range blobsOf(t, img) {
		if d != sd {
			out = append(out, d)
		}
	}
	return out
}

func pullSame(t *testing.T, r name.Reference, want v1.Image) {
	t.Helper()
	got, err := remote.Image(r)
	if err != nil {
		t.Fatalf("pull %s: %v", r, err)
	}
	if digestOf(t, got) != digestOf(t, want) {
		t.Fatalf("pull %s: digest differs", r)
	}
	ls, err := got.Layers()
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range ls {
		rc, err := l.Compressed()
		if err != nil {
			t.Fatalf("pull %s layer: %v", r, err)
		}
		b := make([]byte, 1<<16)
		for {
			if _, err := rc.Read(b); err != nil {
				break
			}
		}
		rc.Close()
	}
	// Reading every layer through Compressed verifies each digest.
}

// snapshotDir is a listing of every file with its size.
func snapshotDir(t *testing.T, root string) string {
	t.Helper()
	var b strings.Builder
	err := filepath.Walk(root, func(p string, info os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		fmt.Fprintf(&b, "%s %d\n", p, info.Size())
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return b.String()
}

func TestGCKeepUntagged(t *testing.T) {
	root := t.TempDir()
	host, stop := serve(t, root)
	r, _ := name.ParseReference(host+"/k/app:v1", name.Insecure)
	img := imageWith(t, rl(t))
	if err := remote.Write(r, img); err != nil {
		t.Fatal(err)
	}
	if err := remote.Delete(r); err != nil {
		t.Fatal(err)
	}
	stop()
	st := runGC(t, root, gc.Options{KeepUntagged: true})
	if st.ManifestsRemoved != 0 || st.BlobsRemoved != 0 {
		t.Fatalf("--keep-untagged removed %+v", st)
	}
	for _, d := range blobsOf(t, img) {
		if !blobExists(root, d) {
			t.Fatalf("blob %s removed with --keep-untagged", d)
		}
	}
	st = runGC(t, root, gc.Options{})
	if st.ManifestsRemoved != 1 || st.BlobsRemoved != 3 {
		t.Fatalf("default run: %+v, want 1 manifest and 3 blobs (config, layer, manifest)", st)
	}
}

func TestGCRemovesStaleUploads(t *testing.T) {
	root := t.TempDir()
	host, stop := serve(t, root)
	for range 3 {
		resp, err := httpPost("http://" + host + "/v2/up/app/blobs/uploads/")
		if err != nil || resp != 202 {
			t.Fatalf("start upload: %d %v", resp, err)
		}
	}
	stop()
	dry := runGC(t, root, gc.Options{DryRun: true})
	st := runGC(t, root, gc.Options{})
	if dry.UploadsRemoved != 3 || st.UploadsRemoved != 3 {
		t.Fatalf("uploads removed: dry %d, real %d, want 3", dry.UploadsRemoved, st.UploadsRemoved)
	}
	entries, _ := os.ReadDir(filepath.Join(root, "docker/registry/v2/repositories/up/app/_uploads"))
	if len(entries) != 0 {
		t.Fatalf("uploads left: %d", len(entries))
	}
}

func TestStatsSummaryAndJSON(t *testing.T) {
	s := gc.Stats{ManifestsRemoved: 2, ManifestsScanned: 5, BlobsRemoved: 3, BlobsScanned: 9, BytesFreed: 3 << 20, DryRun: true}
	if got := s.Summary(); !strings.Contains(got, "would remove 2 of 5 manifests, 3 of 9 blobs (3.0 MiB)") {
		t.Fatalf("summary: %s", got)
	}
	b, _ := json.Marshal(s)
	if !strings.Contains(string(b), `"bytes_freed":3145728`) {
		t.Fatalf("json: %s", b)
	}
}
