package sidecar

import (
	"context"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// metrics are the sidecar's Prometheus metrics, in a registry of their own
// (no globals): requests, latency and bytes by route class, authentication
// outcomes, the credential cache, token issuance and throttling.
type metrics struct {
	reg       *prometheus.Registry
	requests  *prometheus.CounterVec
	latency   *prometheus.HistogramVec
	bytesIn   *prometheus.CounterVec
	bytesOut  *prometheus.CounterVec
	auth      *prometheus.CounterVec
	tokens    *prometheus.CounterVec
	throttled prometheus.Counter
}

func newMetrics(a *Authenticator) *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mreg_http_requests_total", Help: "Requests by method, route class and status.",
		}, []string{"method", "route", "status"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "mreg_http_request_duration_seconds", Help: "Request latency by method and route class, including the registry's time.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300},
		}, []string{"method", "route"}),
		bytesIn: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mreg_http_request_bytes_total", Help: "Request body bytes received, by route class.",
		}, []string{"route"}),
		bytesOut: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mreg_http_response_bytes_total", Help: "Response body bytes sent, by route class.",
		}, []string{"route"}),
		auth: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mreg_auth_total", Help: "Authentication attempts by scheme and outcome (ok, bad_credentials, invalid_token, throttled, busy).",
		}, []string{"scheme", "outcome"}),
		tokens: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mreg_tokens_issued_total", Help: "Tokens issued by the token endpoint, by grant (get, password, refresh_token).",
		}, []string{"grant"}),
		throttled: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "mreg_throttled_total", Help: "Login attempts refused with 429 by the brute-force throttle.",
		}),
	}
	m.reg.MustRegister(m.requests, m.latency, m.bytesIn, m.bytesOut, m.auth, m.tokens, m.throttled,
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "mreg_credential_cache_hits_total", Help: "Basic credentials verified from the cache (no bcrypt).",
		}, func() float64 { return float64(a.hits.Load()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "mreg_credential_cache_misses_total", Help: "Basic credentials verified with bcrypt.",
		}, func() float64 { return float64(a.runs.Load()) }),
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	return m
}

// routeClass names the kind of endpoint without the repository name, so
// the label set stays small.
func routeClass(path string) string {
	switch {
	case path == "/v2/" || path == "/v2":
		return "base"
	case path == "/v2/_catalog":
		return "catalog"
	case path == tokenPath:
		return "token"
	}
	if _, kind, _, ok := splitRoute(path); ok {
		return kind
	}
	return "other"
}

// observe records one finished request.
func (m *metrics) observe(r *http.Request, status int, in, out int64, d time.Duration) {
	if m == nil {
		return
	}
	route := routeClass(r.URL.Path)
	method := r.Method
	if required(method) == accessNone && method != http.MethodOptions {
		method = "other" // keep arbitrary methods out of the label set
	}
	m.requests.WithLabelValues(method, route, strconv.Itoa(status)).Inc()
	m.latency.WithLabelValues(method, route).Observe(d.Seconds())
	if in > 0 {
		m.bytesIn.WithLabelValues(route).Add(float64(in))
	}
	m.bytesOut.WithLabelValues(route).Add(float64(out))
}

func (m *metrics) authResult(scheme, outcome string) {
	if m != nil {
		m.auth.WithLabelValues(scheme, outcome).Inc()
	}
}

func (m *metrics) tokenIssued(grant string) {
	if m != nil {
		m.tokens.WithLabelValues(grant).Inc()
	}
}

func (m *metrics) throttle() {
	if m != nil {
		m.throttled.Inc()
	}
}

// MetricsHandler serves the sidecar's metrics followed by the registry's
// own (fetched from registryURL, when set), so one scrape gets both.
func (s *Server) MetricsHandler(registryURL string) http.Handler {
	// Uncompressed text format, so the two bodies can be concatenated.
	own := promhttp.HandlerFor(s.metrics.reg, promhttp.HandlerOpts{DisableCompression: true})
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{Proxy: nil}}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		r.Header.Del("Accept")
		r.Header.Del("Accept-Encoding")
		own.ServeHTTP(w, r)
		if registryURL == "" {
			return
		}
		up := 0
		if err := copyRegistryMetrics(r.Context(), client, registryURL, w); err == nil {
			up = 1
		}
		io.WriteString(w, "# HELP mreg_registry_metrics_up Whether the registry's metrics could be fetched for this scrape.\n# TYPE mreg_registry_metrics_up gauge\nmreg_registry_metrics_up "+strconv.Itoa(up)+"\n")
	})
}

func copyRegistryMetrics(ctx context.Context, c *http.Client, url string, w io.Writer) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Accept", "text/plain")
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return io.ErrUnexpectedEOF
	}
	_, err = io.Copy(w, resp.Body)
	return err
}
