package main

import (
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/spf13/cobra"
)

type healthcheckOpts struct {
	*rootOpts
	url     string
	timeout time.Duration
}

func newHealthcheckCmd(root *rootOpts) *cobra.Command {
	o := &healthcheckOpts{rootOpts: root}
	cmd := &cobra.Command{
		Use:   "healthcheck",
		Short: "Exit 0 when the local server answers (for container probes)",
		Long: `Probe a local mreg server; the image has no shell, curl or wget.

Any answer below 500 counts as healthy: the sidecar answers 401 to a request
without credentials, and that is an answer. A sidecar that serves HTTPS is
detected and probed over TLS without certificate verification (the probe
checks liveness, not identity).`,
		Example: `  mreg healthcheck                                     # sidecar on :5000
  mreg healthcheck --url http://127.0.0.1:5001/v2/     # registry`,
		Args: cobra.NoArgs,
		RunE: o.run,
	}
	cmd.Flags().StringVar(&o.url, "url", "http://127.0.0.1:5000/v2/", "URL to probe")
	cmd.Flags().DurationVar(&o.timeout, "timeout", 3*time.Second, "probe timeout")
	return cmd
}

func (o *healthcheckOpts) run(cmd *cobra.Command, _ []string) error {
	client := &http.Client{
		Timeout: o.timeout,
		Transport: &http.Transport{
			Proxy:           nil,
			TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, //nolint:gosec // liveness probe of our own loopback server
		},
	}
	status, err := probe(cmd, client, o.url)
	if err == nil && status == http.StatusBadRequest && strings.HasPrefix(o.url, "http://") {
		// "Client sent an HTTP request to an HTTPS server": the sidecar
		// has a certificate now.
		status, err = probe(cmd, client, "https://"+strings.TrimPrefix(o.url, "http://"))
	}
	if err != nil {
		return fmt.Errorf("healthcheck: %w", err)
	}
	if status >= 500 {
		return fmt.Errorf("healthcheck: %s answered %d", o.url, status)
	}
	fmt.Fprintf(cmd.OutOrStdout(), "ok %d\n", status)
	return nil
}

func probe(cmd *cobra.Command, client *http.Client, url string) (int, error) {
	req, err := http.NewRequestWithContext(cmd.Context(), http.MethodGet, url, nil)
	if err != nil {
		return 0, err
	}
	resp, err := client.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4096))
	return resp.StatusCode, nil
}
