package main

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"time"

	"github.com/spf13/cobra"

	"github.com/mreg-dev/mreg/sidecar"
)

type sidecarOpts struct {
	*rootOpts
	cfg                sidecar.Config
	trustedProxies     []string
	metricsAddr        string
	registryMetricsURL string
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
	f.BoolVar(&o.cfg.AnonymousRead, "anonymous-read", false, "let clients without credentials pull and list")
	f.StringVar(&o.cfg.AuthMode, "auth", sidecar.AuthToken, "challenge clients with token (Bearer, tokens from /token) or basic; Basic credentials work in both")
	f.DurationVar(&o.cfg.Token.TTL, "token-ttl", 5*time.Minute, "lifetime of access tokens")
	f.DurationVar(&o.cfg.Token.RefreshTTL, "refresh-token-ttl", 7*24*time.Hour, "lifetime of refresh tokens (OAuth2 offline access)")
	f.StringVar(&o.cfg.Token.Service, "token-service", "mreg", "service name of the token endpoint (audience of tokens)")
	f.StringVar(&o.cfg.ExternalURL, "external-url", "", "URL clients use to reach mreg behind a reverse proxy, e.g. https://registry.example.com")
	f.StringVar(&o.metricsAddr, "metrics-addr", "127.0.0.1:9090", "Prometheus metrics listener, never the public port (\":9090\" for a pod-internal port); empty disables")
	f.StringVar(&o.registryMetricsURL, "registry-metrics-url", "http://127.0.0.1:5002/metrics", "the registry's metrics, appended to the sidecar's; empty disables")
	f.StringSliceVar(&o.trustedProxies, "trusted-proxies", nil, "addresses or CIDRs of reverse proxies whose Forwarded / X-Forwarded-* headers are believed")
	f.DurationVar(&o.cfg.Auth.CacheTTL, "credential-cache-ttl", 0, "how long a verified credential is remembered (default 5m; dropped on any user change)")
	f.IntVar(&o.cfg.Auth.Concurrency, "bcrypt-concurrency", 1, "password checks running at once (bounds CPU spent on wrong passwords)")
	return cmd
}

func (o *sidecarOpts) run(cmd *cobra.Command, _ []string) error {
	// Logs, the audit lines among them, go to stdout.
	log, err := o.logger(cmd.OutOrStdout())
	if err != nil {
		return err
	}
	o.cfg.Logger = log
	for _, p := range o.trustedProxies {
		prefix, err := parsePrefix(p)
		if err != nil {
			return fmt.Errorf("--trusted-proxies: %w", err)
		}
		o.cfg.TrustedProxies = append(o.cfg.TrustedProxies, prefix)
	}
	srv, err := sidecar.New(cmd.Context(), o.cfg)
	if err != nil {
		return err
	}
	if o.metricsAddr != "" {
		if err := serveMetrics(cmd.Context(), o.metricsAddr, srv.MetricsHandler(o.registryMetricsURL)); err != nil {
			return err
		}
		log.InfoContext(cmd.Context(), "sidecar metrics", "addr", o.metricsAddr, "path", "/metrics")
	}
	return srv.ListenAndServe(cmd.Context())
}

// parsePrefix accepts a CIDR or a single address.
func parsePrefix(s string) (netip.Prefix, error) {
	if p, err := netip.ParsePrefix(s); err == nil {
		return p.Masked(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("%q is neither an address nor a CIDR", s)
	}
	return netip.PrefixFrom(a, a.BitLen()), nil
}

// serveMetrics listens on addr and serves h at /metrics until ctx ends.
func serveMetrics(ctx context.Context, addr string, h http.Handler) error {
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", addr)
	if err != nil {
		return fmt.Errorf("metrics listener: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", h)
	ms := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = ms.Serve(ln) }()
	go func() {
		<-ctx.Done()
		_ = ms.Close()
	}()
	return nil
}
