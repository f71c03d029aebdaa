package main

import (
	"github.com/spf13/cobra"

	"github.com/mreg-dev/mreg/internal/registry"
)

type registryOpts struct {
	*rootOpts
	reg registry.Options
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
  mreg registry --config /etc/mreg/registry.yml
  REGISTRY_STORAGE=s3 REGISTRY_STORAGE_S3_BUCKET=images mreg registry --config base.yml`,
		Args: cobra.NoArgs,
		RunE: o.run,
	}
	f := cmd.Flags()
	f.StringVar(&o.reg.Addr, "addr", defaultRegistryAddr, "listen address (keep it on loopback: the registry has no auth)")
	f.StringVar(&o.reg.Root, "root", defaultRoot, "filesystem storage root (without --config)")
	f.StringVar(&o.reg.ConfigFile, "config", "", "full Distribution configuration file")
	return cmd
}

func (o *registryOpts) run(cmd *cobra.Command, _ []string) error {
	log, err := o.logger(cmd.ErrOrStderr())
	if err != nil {
		return err
	}
	o.reg.LogLevel = o.logLevel
	cfg, err := registry.LoadConfig(o.reg)
	if err != nil {
		return err
	}
	srv, err := registry.New(cmd.Context(), cfg, log)
	if err != nil {
		return err
	}
	return srv.ListenAndServe(cmd.Context())
}
