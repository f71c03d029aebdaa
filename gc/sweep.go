package gc

import (
	"context"
	"errors"
	"fmt"
	"path"
	"time"

	"github.com/distribution/distribution/v3"
	"github.com/distribution/distribution/v3/registry/storage"
	"github.com/distribution/distribution/v3/registry/storage/driver"
	"github.com/distribution/reference"
	"github.com/opencontainers/go-digest"
)

// repositoriesRoot is Distribution's storage layout for repositories.
const repositoriesRoot = "/docker/registry/v2/repositories"

// Run collects garbage in the storage behind d. Nothing may write to the
// storage meanwhile; the caller holds the storage lock.
func Run(ctx context.Context, d driver.StorageDriver, opts Options) (Stats, error) {
	start := time.Now()
	stats := Stats{DryRun: opts.DryRun}
	reg, err := storage.NewRegistry(ctx, d, storage.EnableDelete)
	if err != nil {
		return stats, fmt.Errorf("open storage: %w", err)
	}
	enum, ok := reg.(distribution.RepositoryEnumerator)
	if !ok {
		return stats, errors.New("storage cannot enumerate repositories")
	}

	// Mark. Every manifest is read before anything is deleted.
	var repos []*repoState
	globalLive := map[digest.Digest]bool{}
	err = enum.Enumerate(ctx, func(name string) error {
		st, err := scanRepo(ctx, reg, name)
		if err != nil {
			return err
		}
		st.mark(opts.KeepUntagged)
		for b := range st.liveBlobs {
			globalLive[b] = true
		}
		stats.ManifestsScanned += len(st.manifests)
		repos = append(repos, st)
		return nil
	})
	if err != nil && !isPathNotFound(err) {
		return stats, fmt.Errorf("mark: %w", err)
	}
	stats.Repositories = len(repos)

	// Sweep, references before what they reference: manifests, then
	// layer links, then blobs. A crash in between leaves only orphans,
	// which the next run removes, never a manifest without its blobs.
	vac := storage.NewVacuum(ctx, d)
	for _, st := range repos {
		for _, m := range st.manifests {
			if st.live[m] {
				continue
			}
			stats.ManifestsRemoved++
			if !opts.DryRun {
				if err := vac.RemoveManifest(st.name, m, st.tags); err != nil {
					return stats, fmt.Errorf("remove manifest %s@%s: %w", st.name, m, err)
				}
			}
		}
	}
	for _, st := range repos {
		n, err := sweepLayerLinks(ctx, reg, vac, st, opts.DryRun)
		stats.LayerLinksRemoved += n
		if err != nil {
			return stats, err
		}
	}
	err = reg.Blobs().Enumerate(ctx, func(b digest.Digest) error {
		stats.BlobsScanned++
		if globalLive[b] {
			return nil
		}
		if desc, err := reg.BlobStatter().Stat(ctx, b); err == nil {
			stats.BytesFreed += desc.Size
		}
		stats.BlobsRemoved++
		if opts.DryRun {
			return nil
		}
		return vac.RemoveBlob(b.String())
	})
	if err != nil && !isPathNotFound(err) {
		return stats, fmt.Errorf("sweep blobs: %w", err)
	}
	n, err := sweepUploads(ctx, d, opts.DryRun)
	stats.UploadsRemoved = n
	stats.Duration = time.Since(start)
	return stats, err
}

// sweepLayerLinks removes the repository's links to blobs that none of its
// live manifests reference.
func sweepLayerLinks(ctx context.Context, reg distribution.Namespace, vac storage.Vacuum, st *repoState, dryRun bool) (int, error) {
	named, err := reference.WithName(st.name)
	if err != nil {
		return 0, err
	}
	repo, err := reg.Repository(ctx, named)
	if err != nil {
		return 0, err
	}
	le, ok := repo.Blobs(ctx).(distribution.ManifestEnumerator)
	if !ok {
		return 0, errors.New("blob store cannot enumerate layer links")
	}
	var dead []digest.Digest
	err = le.Enumerate(ctx, func(b digest.Digest) error {
		if !st.liveBlobs[b] {
			dead = append(dead, b)
		}
		return nil
	})
	if err != nil && !isPathNotFound(err) {
		return 0, fmt.Errorf("enumerate layer links of %s: %w", st.name, err)
	}
	if dryRun {
		return len(dead), nil
	}
	for i, b := range dead {
		if err := vac.RemoveLayer(st.name, b); err != nil {
			return i, fmt.Errorf("remove layer link %s@%s: %w", st.name, b, err)
		}
	}
	return len(dead), nil
}

// sweepUploads removes every upload directory. GC runs before the registry
// serves, and an upload cannot outlive a registry restart (its state is
// signed with the per-process HTTP secret), so every upload found is stale.
func sweepUploads(ctx context.Context, d driver.StorageDriver, dryRun bool) (int, error) {
	var dirs []string
	err := d.Walk(ctx, repositoriesRoot, func(fi driver.FileInfo) error {
		if !fi.IsDir() {
			return nil
		}
		switch path.Base(fi.Path()) {
		case "_uploads":
			dirs = append(dirs, fi.Path())
			return driver.ErrSkipDir
		case "_manifests", "_layers":
			return driver.ErrSkipDir
		}
		return nil
	})
	if err != nil && !isPathNotFound(err) {
		return 0, fmt.Errorf("find uploads: %w", err)
	}
	n := 0
	for _, dir := range dirs {
		entries, err := d.List(ctx, dir)
		if err != nil && !isPathNotFound(err) {
			return n, fmt.Errorf("list %s: %w", dir, err)
		}
		n += len(entries)
		if dryRun || len(entries) == 0 {
			continue
		}
		if err := d.Delete(ctx, dir); err != nil && !isPathNotFound(err) {
			return n, fmt.Errorf("remove %s: %w", dir, err)
		}
	}
	return n, nil
}
