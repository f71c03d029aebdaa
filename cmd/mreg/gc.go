package main

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/distribution/distribution/v3/configuration"
	"github.com/spf13/cobra"

	"github.com/mreg-dev/mreg/gc"
	"github.com/mreg-dev/mreg/internal/registry"
	"github.com/mreg-dev/mreg/internal/storelock"
)

type gcOpts struct {
	*rootOpts
	reg registry.Options
	gc  gc.Options
}

func newGCCmd(root *rootOpts) *cobra.Command {
	o := &gcOpts{rootOpts: root}
	cmd := &cobra.Command{
		Use:   "gc",
		Short: "Garbage-collect untagged manifests, unreferenced blobs and stale uploads",
		Long: `Mark and sweep the registry's storage: remove manifests without a tag
(children of tagged indexes and referrers of live manifests stay), then blobs
that no live manifest references, then stale upload directories.

It must not run while a registry writes to the same storage: on filesystem
storage it refuses while "mreg registry" holds the lock in the storage root.
In the pod, "mreg registry --gc" runs it before serving, so a restart is a GC.`,
		Example: `  mreg gc --root /var/lib/registry --dry-run
  mreg gc --config /etc/mreg/registry.yml
  mreg gc --keep-untagged`,
		Args: cobra.NoArgs,
		RunE: o.run,
	}
	f := cmd.Flags()
	f.StringVar(&o.reg.Root, "root", defaultRoot, "filesystem storage root (without --config)")
	f.StringVar(&o.reg.ConfigFile, "config", "", "full Distribution configuration file")
	f.BoolVar(&o.gc.DryRun, "dry-run", false, "report what would be removed, remove nothing")
	f.BoolVar(&o.gc.KeepUntagged, "keep-untagged", false, "keep manifests that have no tag")
	return cmd
}

func (o *gcOpts) run(cmd *cobra.Command, _ []string) error {
	log, err := o.logger(cmd.ErrOrStderr())
	if err != nil {
		return err
	}
	o.reg.Addr, o.reg.LogLevel = defaultRegistryAddr, o.logLevel
	cfg, err := registry.LoadConfig(o.reg)
	if err != nil {
		return err
	}
	if err := registry.ConfigureLogging(cfg); err != nil {
		return err
	}
	lock, err := lockStorage(cfg, "mreg gc")
	if err != nil {
		return err
	}
	defer lock.Release()
	stats, err := runGC(cmd.Context(), log, cfg, o.gc)
	fmt.Fprintln(cmd.OutOrStdout(), stats.Summary())
	return err
}

// lockStorage takes the storage lock for filesystem storage. Other drivers
// (S3 …) have no shared lock; there the pod's single replica is the guard.
func lockStorage(cfg *configuration.Configuration, holder string) (*storelock.Lock, error) {
	root := registry.StorageRoot(cfg)
	if root == "" {
		return nil, nil
	}
	lock, err := storelock.Acquire(root, holder)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", holder, err)
	}
	return lock, nil
}

// runGC runs GC and writes its one structured report line.
func runGC(ctx context.Context, log *slog.Logger, cfg *configuration.Configuration, opts gc.Options) (gc.Stats, error) {
	stats, err := gc.RunConfig(ctx, cfg, opts)
	attrs := stats.LogAttrs()
	if err != nil {
		log.LogAttrs(ctx, slog.LevelError, "gc failed", append(attrs, slog.String("err", err.Error()))...)
		return stats, fmt.Errorf("gc: %w", err)
	}
	log.LogAttrs(ctx, slog.LevelInfo, "gc finished", attrs...)
	return stats, nil
}
