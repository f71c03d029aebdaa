// Package gc is mreg's garbage collector: mark and sweep over a
// Distribution storage driver, run only while nothing writes (before the
// registry serves, under the storage lock).
//
// It is its own implementation of Distribution's storage.MarkAndSweep with
// the same storage layout and deletion primitives (storage.Vacuum), because
// mreg needs what that function does not give: counts and bytes freed for
// a report (and an identical report in a dry run), no fmt.Printf chatter,
// referrers kept alive by their subject, stale upload directories removed,
// and deletions ordered so that a crash mid-sweep never leaves a reference
// to a deleted blob.
//
// What is live (marked):
//   - every tagged manifest (with --keep-untagged: every manifest),
//   - everything a live manifest references, recursively: config, layers,
//     and child manifests of indexes (nested indexes too), even untagged,
//   - every manifest whose `subject` is live (OCI referrers: signatures,
//     SBOMs, attestations), recursively.
//
// Blobs are shared between repositories: a blob survives while any
// repository's live manifest references it. A repository's layer link
// survives while a live manifest of that repository references the blob.
package gc

import (
	"errors"
	"fmt"
	"log/slog"
	"time"
)

// Sentinel errors of this package.
var (
	// ErrUnreadable: a manifest could not be read. GC then deletes
	// nothing, since it cannot know what that manifest references.
	ErrUnreadable = errors.New("manifest unreadable, nothing deleted")
)

// Options control a run.
type Options struct {
	// DryRun reports what would be removed without removing anything.
	DryRun bool
	// KeepUntagged keeps manifests without tags (and what they reference).
	KeepUntagged bool
}

// Stats is what a run did (or, in a dry run, would do).
type Stats struct {
	Repositories      int           `json:"repositories"`
	ManifestsScanned  int           `json:"manifests_scanned"`
	ManifestsRemoved  int           `json:"manifests_removed"`
	BlobsScanned      int           `json:"blobs_scanned"`
	BlobsRemoved      int           `json:"blobs_removed"`
	BytesFreed        int64         `json:"bytes_freed"`
	LayerLinksRemoved int           `json:"layer_links_removed"`
	UploadsRemoved    int           `json:"uploads_removed"`
	DryRun            bool          `json:"dry_run"`
	Duration          time.Duration `json:"duration"`
}

// LogAttrs is the report as log attributes, named as in the JSON form
// (with the duration in seconds).
func (s Stats) LogAttrs() []slog.Attr {
	return []slog.Attr{
		slog.Bool("dry_run", s.DryRun),
		slog.Int("repositories", s.Repositories),
		slog.Int("manifests_scanned", s.ManifestsScanned),
		slog.Int("manifests_removed", s.ManifestsRemoved),
		slog.Int("blobs_scanned", s.BlobsScanned),
		slog.Int("blobs_removed", s.BlobsRemoved),
		slog.Int64("bytes_freed", s.BytesFreed),
		slog.Int("layer_links_removed", s.LayerLinksRemoved),
		slog.Int("uploads_removed", s.UploadsRemoved),
		slog.Float64("seconds", s.Duration.Seconds()),
	}
}

// Summary is the human-readable report.
func (s Stats) Summary() string {
	verb := "removed"
	if s.DryRun {
		verb = "would remove"
	}
	return fmt.Sprintf("gc: %s %d of %d manifests, %d of %d blobs (%s), %d layer links, %d stale uploads in %d repositories; took %s",
		verb, s.ManifestsRemoved, s.ManifestsScanned, s.BlobsRemoved, s.BlobsScanned, humanBytes(s.BytesFreed),
		s.LayerLinksRemoved, s.UploadsRemoved, s.Repositories, s.Duration.Round(time.Millisecond))
}

func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
