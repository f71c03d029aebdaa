package main

import (
	"os"

	"github.com/distribution/distribution/v3/configuration"
	"github.com/spf13/cobra"

	"github.com/mreg-dev/mreg/gc"
	"github.com/mreg-dev/mreg/internal/mirror"
	"github.com/mreg-dev/mreg/internal/registry"
)

type registryOpts struct {
	*rootOpts
	reg       registry.Options
	gc        bool
	gcOpts    gc.Options
	upstreams string
}

func newRegistryCmd(root *rootOpts) *cobra.Command {
	o := &registryOpts{rootOpts: root}
	cmd := &cobra.Command{
		Use:   "registry",
		Short: "Run the embedded Distribution registry (pod loopback only)",
		Long: `Run CNCF Distribution v3 as a library, listening on the pod's loopback.

Without --config it uses filesystem storage at --root with delete enabled.
With --config it reads a full Distribution configuration (storage drivers such
as s3, gcs or azure, caches, notifications …), including Distribution's
REGISTRY_* environment overrides.`,
		Example: `  mreg registry --root ./data/registry
  mreg registry --root /var/lib/registry --gc     # collect garbage, then serve
  mreg registry --config /etc/mreg/registry.yml
  REGISTRY_STORAGE=s3 REGISTRY_STORAGE_S3_BUCKET=images mreg registry --config base.yml`,
		Args: cobra.NoArgs,
		RunE: o.run,
	}
	f := cmd.Flags()
	f.StringVar(&o.reg.Addr, "addr", defaultRegistryAddr, "listen address (keep it on loopback: the registry has no auth)")
	f.StringVar(&o.reg.Root, "root", defaultRoot, "filesystem storage root (without --config)")
	f.StringVar(&o.reg.ConfigFile, "config", "", "full Distribution configuration file")
	f.StringVar(&o.reg.MetricsAddr, "metrics-addr", "127.0.0.1:5002", "Prometheus metrics of the registry (the sidecar republishes them); empty disables")
	f.StringVar(&o.upstreams, "upstreams", "", "YAML file of upstream registries to serve as pull-through caches (credentials from MREG_UPSTREAM_CREDENTIALS)")
	f.BoolVar(&o.gc, "gc", false, "garbage-collect before serving (the pod's init step)")
	f.BoolVar(&o.gcOpts.KeepUntagged, "gc-keep-untagged", false, "with --gc: keep manifests that have no tag")
	return cmd
}

func (o *registryOpts) run(cmd *cobra.Command, _ []string) error {
	// Logs go to stdout, with Distribution's.
	log, err := o.logger(cmd.OutOrStdout())
	if err != nil {
		return err
	}
	o.reg.LogLevel = o.logLevel
	cfg, err := registry.LoadConfig(o.reg)
	if err != nil {
		return err
	}
	var ups []mirror.Upstream
	if o.upstreams != "" {
		if ups, err = mirror.Load(o.upstreams, os.Getenv("MREG_UPSTREAM_CREDENTIALS")); err != nil {
			return err
		}
	}
	// The lock is held for the registry's whole life: `mreg gc` refuses
	// to run beside it, and it refuses to start beside a running GC.
	lock, err := lockStorage(cfg, "mreg registry")
	if err != nil {
		return err
	}
	defer lock.Release()
	if o.gc {
		// A failed GC is logged loudly (level error, "gc failed") and the
		// registry serves anyway: GC deletes nothing unless its mark phase
		// read every manifest, so a failure leaves garbage, not damage, and
		// a registry that will not start over one bad file is worse.
		_, _ = runGC(cmd.Context(), log, cfg, o.gcOpts)
		if root := registry.StorageRoot(cfg); root != "" {
			// Caches keep everything they hold (untagged children too);
			// GC there removes what expired content left behind.
			for _, u := range ups {
				mcfg := *cfg
				mcfg.Storage = configuration.Storage{"filesystem": configuration.Parameters{"rootdirectory": mirror.MirrorRoot(root, u.Namespace)}}
				_, _ = runGC(cmd.Context(), log.With("mirror", u.Namespace), &mcfg, gc.Options{KeepUntagged: true})
			}
		}
	}
	srv, err := registry.New(cmd.Context(), cfg, log, ups...)
	if err != nil {
		return err
	}
	srv.MetricsAddr = o.reg.MetricsAddr
	return srv.ListenAndServe(cmd.Context())
}
