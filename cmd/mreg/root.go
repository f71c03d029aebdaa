package main

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// Defaults shared by the subcommands; they match manifests/mreg.yml so that
// `kubectl exec … -- manage-user ls` needs no flags.
const (
	defaultAuthDir      = "/var/lib/mreg-auth"
	defaultRegistryAddr = "127.0.0.1:5001"
	defaultSidecarAddr  = ":5000"
	defaultUpstream     = "http://127.0.0.1:5001"
	defaultRoot         = "/var/lib/registry"
	envPrefix           = "MREG_"
)

// rootOpts are the flags every subcommand has.
type rootOpts struct {
	logLevel  string
	logFormat string
}

// newRootCmd builds the command tree. argv is os.Args: when the binary is
// invoked through a link named after a subcommand (manage-user,
// manage-tls), that subcommand runs.
func newRootCmd(argv []string) *cobra.Command {
	opts := &rootOpts{}
	cmd := &cobra.Command{
		Use:   "mreg",
		Short: "Minimal private OCI registry: Distribution behind an auth/TLS sidecar",
		Long: `mreg is a private OCI image registry for small teams.

One binary, several roles: "mreg registry" embeds the CNCF Distribution
registry on the pod's loopback, "mreg sidecar" is the public front (TLS,
users and admins, reverse proxy), and manage-user / manage-tls are the
operator tools run with kubectl exec or podman exec.

Every flag can also be set as an environment variable MREG_<FLAG>
(for example --auth-dir as MREG_AUTH_DIR); flags win.`,
		Example: `  mreg registry --root ./data/registry
  mreg sidecar --auth-dir ./data/auth
  mreg manage-user add --admin alice
  mreg manage-tls generate registry.example.com 10.0.0.5`,
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			return bindEnv(cmd.Flags())
		},
	}
	cmd.PersistentFlags().StringVar(&opts.logLevel, "log-level", "info", "log level: debug, info, warn, error")
	cmd.PersistentFlags().StringVar(&opts.logFormat, "log-format", "json", "log format: json or text")
	cmd.AddCommand(
		newRegistryCmd(opts),
		newSidecarCmd(opts),
		newGCCmd(opts),
		newManageUserCmd(opts),
		newManageTLSCmd(opts),
		newHealthcheckCmd(opts),
		newVersionCmd(opts),
	)
	args := argv[1:]
	if len(argv) > 0 {
		switch name := filepath.Base(argv[0]); name {
		case "manage-user", "manage-tls":
			args = append([]string{name}, args...)
		}
	}
	cmd.SetArgs(args)
	return cmd
}

// errNoSubcommand: a command group was run without one of its commands.
var errNoSubcommand = errors.New("missing subcommand")

// needSubcommand is the RunE of command groups: unknown words are refused
// by cobra.NoArgs, and no word at all shows the help and fails.
func needSubcommand(cmd *cobra.Command, _ []string) error {
	_ = cmd.Help()
	return fmt.Errorf("%s: %w", cmd.CommandPath(), errNoSubcommand)
}

// bindEnv fills every flag the user did not set from MREG_<FLAG>.
func bindEnv(fs *pflag.FlagSet) error {
	var err error
	fs.VisitAll(func(f *pflag.Flag) {
		if err != nil || f.Changed {
			return
		}
		name := envPrefix + strings.ToUpper(strings.ReplaceAll(f.Name, "-", "_"))
		v, ok := os.LookupEnv(name)
		if !ok {
			return
		}
		if e := fs.Set(f.Name, v); e != nil {
			err = fmt.Errorf("environment %s: %w", name, e)
		}
	})
	return err
}

// logger returns the structured logger for long-running subcommands.
func (o *rootOpts) logger(w io.Writer) (*slog.Logger, error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(o.logLevel)); err != nil {
		return nil, fmt.Errorf("--log-level: %w", err)
	}
	hopts := &slog.HandlerOptions{Level: level}
	switch o.logFormat {
	case "json":
		return slog.New(slog.NewJSONHandler(w, hopts)), nil
	case "text":
		return slog.New(slog.NewTextHandler(w, hopts)), nil
	}
	return nil, fmt.Errorf("--log-format %q: want json or text", o.logFormat)
}
