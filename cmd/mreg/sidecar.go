package main

import (
	"github.com/spf13/cobra"

	"github.com/mreg-dev/mreg/sidecar"
)

type sidecarOpts struct {
	*rootOpts
	cfg sidecar.Config
}

func newSidecarCmd(root *rootOpts) *cobra.Command {
	o := &sidecarOpts{rootOpts: root}
	cmd := &cobra.Command{
		Use:   "sidecar",
		Short: "Run the public auth/TLS front that proxies to the registry",
		Long: `Run the sidecar: the pod's public port.

It serves HTTPS when tls.crt and tls.key exist in the auth directory and plain
HTTP otherwise, picking up changes to them (and to users.db) without a restart.
Users may GET and HEAD, admins may also POST, PUT, PATCH and DELETE; anonymous
requests get 401 unless --anonymous-read is set.`,
		Example: `  mreg sidecar --auth-dir ./data/auth
  MREG_AUTH_DIR=/var/lib/mreg-auth mreg sidecar --addr :5000 --upstream http://127.0.0.1:5001`,
		Args: cobra.NoArgs,
		RunE: o.run,
	}
	f := cmd.Flags()
	f.StringVar(&o.cfg.Addr, "addr", defaultSidecarAddr, "public listen address")
	f.StringVar(&o.cfg.Upstream, "upstream", defaultUpstream, "URL of the registry")
	f.StringVar(&o.cfg.AuthDir, "auth-dir", defaultAuthDir, "directory with users.db, tls.crt and tls.key")
	f.StringVar(&o.cfg.CertFile, "tls-cert", "", "certificate file (default AUTH_DIR/tls.crt), e.g. from a mounted kubernetes.io/tls Secret")
	f.StringVar(&o.cfg.KeyFile, "tls-key", "", "private key file (default AUTH_DIR/tls.key)")
	f.StringVar(&o.cfg.Realm, "realm", "mreg", "realm in Basic challenges")
	f.BoolVar(&o.cfg.AnonymousRead, "anonymous-read", false, "let clients without credentials pull (GET/HEAD)")
	f.DurationVar(&o.cfg.Auth.CacheTTL, "credential-cache-ttl", 0, "how long a verified credential is remembered (default 5m; dropped on any user change)")
	f.IntVar(&o.cfg.Auth.Concurrency, "bcrypt-concurrency", 1, "password checks running at once (bounds CPU spent on wrong passwords)")
	return cmd
}

func (o *sidecarOpts) run(cmd *cobra.Command, _ []string) error {
	log, err := o.logger(cmd.ErrOrStderr())
	if err != nil {
		return err
	}
	o.cfg.Logger = log
	srv, err := sidecar.New(cmd.Context(), o.cfg)
	if err != nil {
		return err
	}
	return srv.ListenAndServe(cmd.Context())
}
