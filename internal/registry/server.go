package registry

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/distribution/distribution/v3/configuration"
	"github.com/distribution/distribution/v3/registry/handlers"
	"github.com/distribution/distribution/v3/registry/storage/driver/factory"
	gometrics "github.com/docker/go-metrics"

	"github.com/mreg-dev/mreg/internal/mirror"
	"github.com/sirupsen/logrus"

	// Storage drivers and their middleware register themselves with
	// Distribution's factory; a --config file may name any of them.
	// Azure and GCS add 21 MB to the binary and 14 MiB of RSS to every
	// mreg process, so they are built in only with -tags mreg_azure /
	// mreg_gcs (drivers_*.go).
	_ "github.com/distribution/distribution/v3/registry/storage/driver/filesystem"
	_ "github.com/distribution/distribution/v3/registry/storage/driver/inmemory"
	_ "github.com/distribution/distribution/v3/registry/storage/driver/middleware/cloudfront"
	_ "github.com/distribution/distribution/v3/registry/storage/driver/middleware/redirect"
	_ "github.com/distribution/distribution/v3/registry/storage/driver/middleware/rewrite"
	_ "github.com/distribution/distribution/v3/registry/storage/driver/s3-aws"
)

// Sentinel errors of this package.
var (
	// ErrConfig reports an invalid or unusable registry configuration.
	ErrConfig = errors.New("invalid registry configuration")
)

// shutdownGrace bounds how long in-flight requests may run after the
// context is cancelled (Kubernetes sends SIGKILL after 30 s by default).
const shutdownGrace = 20 * time.Second

// Server is an embedded Distribution registry.
type Server struct {
	cfg     *configuration.Configuration
	handler http.Handler
	log     *slog.Logger
	// MetricsAddr, when set, serves Distribution's metrics (see Options).
	MetricsAddr string
}

// New builds the Distribution application for cfg, with pull-through
// caches for upstreams in front of it. Distribution panics on many
// configuration errors (unknown storage driver, bad parameters); New turns
// those panics into ErrConfig errors.
func New(ctx context.Context, cfg *configuration.Configuration, log *slog.Logger, upstreams ...mirror.Upstream) (srv *Server, err error) {
	if err := ConfigureLogging(cfg); err != nil {
		return nil, err
	}
	defer func() {
		if p := recover(); p != nil {
			srv, err = nil, fmt.Errorf("%w: %v", ErrConfig, p)
		}
	}()
	app := handlers.NewApp(ctx, cfg)
	d, err := factory.Create(ctx, cfg.Storage.Type(), cfg.Storage.Parameters())
	if err != nil {
		return nil, fmt.Errorf("%w: storage driver: %v", ErrConfig, err)
	}
	urls := cfg.Validation.Manifests.URLs
	rf, err := newOCIFront(ctx, d, app, log, urls.Allow, urls.Deny)
	if err != nil {
		return nil, err
	}
	mirrors, err := mirror.New(ctx, cfg, upstreams, log)
	if err != nil {
		return nil, err
	}
	return &Server{cfg: cfg, handler: mirrors.Wrap(rf), log: log}, nil
}

// Handler returns the registry's HTTP handler.
func (s *Server) Handler() http.Handler { return s.handler }

// ListenAndServe listens on the configured address and serves until ctx is
// cancelled, then shuts down gracefully.
func (s *Server) ListenAndServe(ctx context.Context) error {
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", s.cfg.HTTP.Addr)
	if err != nil {
		return fmt.Errorf("registry listen: %w", err)
	}
	return s.Serve(ctx, ln)
}

// Serve serves on ln until ctx is cancelled.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	hs := &http.Server{
		Handler:           s.handler,
		ReadHeaderTimeout: 30 * time.Second,
		IdleTimeout:       5 * time.Minute,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
		BaseContext:       func(net.Listener) context.Context { return context.WithoutCancel(ctx) },
	}
	s.log.InfoContext(ctx, "registry listening", "addr", ln.Addr().String(),
		"storage", s.cfg.Storage.Type(), "version", Version())
	errc := make(chan error, 2)
	go func() { errc <- hs.Serve(ln) }()
	if s.MetricsAddr != "" {
		ms := &http.Server{Addr: s.MetricsAddr, Handler: gometrics.Handler(), ReadHeaderTimeout: 10 * time.Second}
		go func() {
			if err := ms.ListenAndServe(); err != nil && !errors.Is(err, http.ErrServerClosed) {
				errc <- fmt.Errorf("metrics listener: %w", err)
			}
		}()
		defer ms.Close()
		s.log.InfoContext(ctx, "registry metrics", "addr", s.MetricsAddr, "path", "/metrics")
	}
	select {
	case err := <-errc:
		return fmt.Errorf("registry serve: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), shutdownGrace)
	defer cancel()
	if err := hs.Shutdown(sctx); err != nil {
		return fmt.Errorf("registry shutdown: %w", err)
	}
	return nil
}

// ConfigureLogging points Distribution's logrus logger at JSON on stderr.
// Distribution logs through the logrus globals; there is no other handle,
// and its default logger is logrus.StandardLogger().
func ConfigureLogging(cfg *configuration.Configuration) error {
	level, err := logrus.ParseLevel(string(cfg.Log.Level))
	if err != nil {
		level = logrus.InfoLevel
	}
	logrus.SetLevel(level)
	logrus.SetOutput(os.Stdout)
	switch cfg.Log.Formatter {
	case "text":
		logrus.SetFormatter(&logrus.TextFormatter{TimestampFormat: time.RFC3339Nano})
	case "json", "logstash", "":
		logrus.SetFormatter(&logrus.JSONFormatter{TimestampFormat: time.RFC3339Nano, DisableHTMLEscape: true})
	default:
		return fmt.Errorf("%w: unsupported log formatter %q", ErrConfig, cfg.Log.Formatter)
	}
	return nil
}
