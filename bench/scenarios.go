package main

import (
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"sync/atomic"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"golang.org/x/sync/errgroup"
)

// Repositories of the fixtures every column reads.
const (
	manifestRepo = "bench/app"
	manifestTag  = "v1"
	blobRepo     = "bench/blob"
)

const manifestAccept = "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json"

// result is one cell of the table: a scenario in one column.
type result struct {
	Scenario    string  `json:"scenario"`
	Column      string  `json:"column"`
	Concurrency int     `json:"concurrency"`
	Ops         int     `json:"ops"`
	Bytes       int64   `json:"bytes,omitempty"`
	Seconds     float64 `json:"seconds"`
	ReqPerS     float64 `json:"req_per_s,omitempty"`
	P50ms       float64 `json:"p50_ms,omitempty"`
	P99ms       float64 `json:"p99_ms,omitempty"`
	MBps        float64 `json:"mb_per_s,omitempty"`
	CPU         cpuUse  `json:"cpu_seconds"`
	// Rounds: the main number (req/s, MB/s or seconds) of every round.
	Rounds []float64 `json:"rounds"`

	lat []time.Duration // rate cells: every request's latency
}

// cpuUse is CPU time spent during a cell, per process.
type cpuUse struct {
	Registry float64 `json:"registry"`
	Sidecar  float64 `json:"sidecar"`
	Client   float64 `json:"client"`
	// Other: the machine's busy CPU time minus the bench's processes:
	// other processes and hypervisor steal (approximate: kernel threads
	// working for the bench, such as disk writeback, count too). High
	// values mean the cell was disturbed.
	Other float64 `json:"other"`
}

// scenario is a row group of the table.
type scenario struct {
	id, label string
	conc      int
	run       func(ctx context.Context, c *column, r *result) error
}

// bench holds the running stack and the fixtures.
type bench struct {
	cfg      *config
	st       *stack
	cols     map[string]*column
	progress io.Writer

	manifestDigest string
	pullBlob       blobSpec
	seed           atomic.Uint64
	images         map[string]string   // column → digest of the image it pushed last
	imageLayers    map[string][]string // column → its layers' digests
}

func (b *bench) nextSeed() uint64 { return b.seed.Add(1) + 1000 }

func (b *bench) scenarios() []scenario {
	mib := func(n int64) string { return fmt.Sprintf("%d MiB", n>>20) }
	return []scenario{
		{id: "head_c1", label: "manifest HEAD c1", conc: 1, run: b.rateRun(http.MethodHead)},
		{id: "head_c16", label: "manifest HEAD c16", conc: 16, run: b.rateRun(http.MethodHead)},
		{id: "get_c1", label: "manifest GET c1", conc: 1, run: b.rateRun(http.MethodGet)},
		{id: "get_c16", label: "manifest GET c16", conc: 16, run: b.rateRun(http.MethodGet)},
		{id: "pull_c1", label: "blob pull " + mib(b.cfg.blobSize) + " c1", conc: 1, run: b.pullRun},
		{id: "pull_c4", label: "blob pull " + mib(b.cfg.blobSize) + " c4", conc: 4, run: b.pullRun},
		{id: "push_mono", label: "blob push " + mib(b.cfg.blobSize) + " monolithic", conc: 1, run: b.pushRun(false)},
		{id: "push_chunked", label: "blob push " + mib(b.cfg.blobSize) + " chunked " + mib(b.cfg.chunkSize), conc: 1, run: b.pushRun(true)},
		{id: "image_push", label: fmt.Sprintf("image push %d×%s", b.cfg.layers, mib(b.cfg.layerSize)), conc: 1, run: b.imagePush},
		{id: "image_pull", label: fmt.Sprintf("image pull %d×%s", b.cfg.layers, mib(b.cfg.layerSize)), conc: 1, run: b.imagePull},
	}
}

// runCell runs one scenario in one column.
func (b *bench) runCell(ctx context.Context, sc scenario, c *column) (result, error) {
	r := result{Scenario: sc.id, Column: c.key, Concurrency: sc.conc}
	if err := sc.run(ctx, c, &r); err != nil {
		if aerr := b.st.alive(); aerr != nil {
			return r, fmt.Errorf("%s/%s: %v (%v)", sc.id, c.key, err, aerr)
		}
		return r, fmt.Errorf("%s/%s: %w", sc.id, c.key, err)
	}
	return r, nil
}

// cpuMeter measures the CPU time of registry, sidecar (if any) and this
// client over the timed part of a cell, warm-ups excluded.
type cpuMeter struct {
	pids  [3]int // registry, sidecar (0 for direct), client
	t0    [3]time.Duration
	all   []int // every bench process, for Other
	sys0  time.Duration
	ours0 time.Duration
	wall  time.Time
}

func (m *cpuMeter) ours() time.Duration {
	var t time.Duration
	for _, pid := range m.all {
		d, _ := cpuTime(pid)
		t += d
	}
	return t
}

func (b *bench) meter(c *column) *cpuMeter {
	m := &cpuMeter{pids: [3]int{b.st.registry.pid(), 0, os.Getpid()}, wall: time.Now()}
	if s := c.sidecarProc(); s != nil {
		m.pids[1] = s.pid()
	}
	for _, p := range b.st.procs() {
		m.all = append(m.all, p.pid())
	}
	m.all = append(m.all, os.Getpid())
	m.sys0, _ = systemBusy()
	m.ours0 = m.ours()
	for i, pid := range m.pids {
		if pid != 0 {
			m.t0[i], _ = cpuTime(pid)
		}
	}
	return m
}

// stop fills r.CPU and returns the wall time since the meter started.
func (m *cpuMeter) stop(r *result) time.Duration {
	wall := time.Since(m.wall)
	var d [3]float64
	for i, pid := range m.pids {
		if pid != 0 {
			t1, _ := cpuTime(pid)
			d[i] = (t1 - m.t0[i]).Seconds()
		}
	}
	sys1, _ := systemBusy()
	other := (sys1 - m.sys0 - (m.ours() - m.ours0)).Seconds()
	r.CPU = cpuUse{Registry: d[0], Sidecar: d[1], Client: d[2], Other: max(other, 0)}
	return wall
}

// warm sends one authenticated GET /v2/ with the credentials a push (or
// pull) uses, so that the sidecar's single bcrypt run for them (or the
// token fetch) happens before the timing.
func (b *bench) warm(ctx context.Context, c *column, repo string, push bool) error {
	auth, err := c.authHeader(ctx, repo, push)
	if err != nil {
		return err
	}
	req, err := c.request(ctx, http.MethodGet, c.base+"/v2/", auth, nil, 0)
	if err != nil {
		return err
	}
	resp, err := c.do(req, http.StatusOK)
	if err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	return resp.Body.Close()
}

// fixtures pushes, straight to the registry, the manifest the rate rows
// read and the blob the pull rows read.
func (b *bench) fixtures(ctx context.Context) error {
	c := b.cols[colDirect]
	layer := static.NewLayer([]byte("mreg bench layer\n"), types.OCILayer)
	img, err := mutate.AppendLayers(empty.Image, layer)
	if err != nil {
		return err
	}
	img = mutate.ConfigMediaType(mutate.MediaType(img, types.OCIManifestSchema1), types.OCIConfigJSON)
	ref, err := c.ref(manifestRepo + ":" + manifestTag)
	if err != nil {
		return err
	}
	if err := remote.Write(ref, img, c.remoteOptions(ctx)...); err != nil {
		return fmt.Errorf("push fixture image: %w", err)
	}
	d, err := img.Digest()
	if err != nil {
		return err
	}
	b.manifestDigest = d.String()
	b.pullBlob = newBlob(1, b.cfg.blobSize)
	return b.pushBlob(ctx, c, blobRepo, b.pullBlob, 0)
}

// rateRun: as many manifest requests as the workers manage in cfg.rateDur.
func (b *bench) rateRun(method string) func(ctx context.Context, c *column, r *result) error {
	return func(ctx context.Context, c *column, r *result) error {
		auth, err := c.authHeader(ctx, manifestRepo, false)
		if err != nil {
			return err
		}
		u := c.base + "/v2/" + manifestRepo + "/manifests/" + manifestTag
		one := func(ctx context.Context) error {
			req, err := c.request(ctx, method, u, auth, nil, 0)
			if err != nil {
				return err
			}
			req.Header.Set("Accept", manifestAccept)
			resp, err := c.do(req, http.StatusOK)
			if err != nil {
				return err
			}
			defer resp.Body.Close()
			if method == http.MethodHead {
				_, _ = io.Copy(io.Discard, resp.Body)
				return nil
			}
			h := sha256.New()
			if _, err := io.Copy(h, resp.Body); err != nil {
				return err
			}
			if got := fmt.Sprintf("sha256:%x", h.Sum(nil)); got != b.manifestDigest {
				return fmt.Errorf("manifest digest %s, want %s", got, b.manifestDigest)
			}
			return nil
		}
		// Warm up: the credential cache (one bcrypt), then a connection
		// per worker.
		if err := one(ctx); err != nil {
			return err
		}
		wg, wctx := errgroup.WithContext(ctx)
		for range r.Concurrency {
			wg.Go(func() error { return one(wctx) })
		}
		if err := wg.Wait(); err != nil {
			return err
		}

		lat := make([][]time.Duration, r.Concurrency)
		m := b.meter(c)
		deadline := time.Now().Add(b.cfg.rateDur / time.Duration(b.cfg.rateRounds))
		g, gctx := errgroup.WithContext(ctx)
		for w := range r.Concurrency {
			lat[w] = make([]time.Duration, 0, 1<<14)
			g.Go(func() error {
				for time.Now().Before(deadline) {
					t0 := time.Now()
					if err := one(gctx); err != nil {
						return err
					}
					lat[w] = append(lat[w], time.Since(t0))
				}
				return nil
			})
		}
		if err := g.Wait(); err != nil {
			return err
		}
		wall := m.stop(r)
		all := slices.Concat(lat...)
		slices.Sort(all)
		r.Ops = len(all)
		r.Seconds = wall.Seconds()
		r.ReqPerS = float64(r.Ops) / wall.Seconds()
		r.P50ms = ms(percentile(all, 0.50))
		r.P99ms = ms(percentile(all, 0.99))
		r.lat = all
		return nil
	}
}

func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(float64(len(sorted)-1) * p)
	return sorted[i]
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// merge combines a cell's rounds: rate cells as if they had been one run
// (requests and time added, percentiles over every request), transfer
// cells by their median round.
func merge(rounds []result) result {
	if len(rounds) == 0 {
		return result{}
	}
	var speeds []float64
	for _, r := range rounds {
		speeds = append(speeds, r.main())
	}
	if kindOf(rounds[0].Scenario) != "rate" {
		sorted := slices.Clone(rounds)
		slices.SortFunc(sorted, func(a, b result) int { return cmpFloat(a.speed(), b.speed()) })
		m := sorted[len(sorted)/2]
		m.Rounds = speeds
		return m
	}
	m := result{Scenario: rounds[0].Scenario, Column: rounds[0].Column, Concurrency: rounds[0].Concurrency, Rounds: speeds}
	var all []time.Duration
	for _, r := range rounds {
		m.Ops += r.Ops
		m.Seconds += r.Seconds
		m.CPU.Registry += r.CPU.Registry
		m.CPU.Sidecar += r.CPU.Sidecar
		m.CPU.Client += r.CPU.Client
		m.CPU.Other += r.CPU.Other
		all = append(all, r.lat...)
	}
	slices.Sort(all)
	m.ReqPerS = float64(m.Ops) / m.Seconds
	m.P50ms = ms(percentile(all, 0.50))
	m.P99ms = ms(percentile(all, 0.99))
	return m
}

func cmpFloat(a, b float64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}
