// Command bench measures what the sidecar costs: the same requests, on the
// same data and in the same run, straight to `mreg registry` and through
// `mreg sidecar` with Basic credentials, with Bearer tokens, and over HTTPS.
// It starts the servers itself, as separate processes on loopback with fresh
// storage, prints one table with PASS/FAIL lines for the targets, and writes
// the numbers as JSON.
//
//	go build -o bin/mreg ./cmd/mreg && go run ./bench -mreg bin/mreg   (or: scripts/bench)
//	go run ./bench -mreg bin/mreg -quick                                (smoke run, seconds)
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"syscall"
	"time"
)

type config struct {
	mreg    string        // the mreg binary
	out     string        // JSON file
	quick   bool          // small sizes, short rate cells
	keep    bool          // keep the temporary directory (storage, logs)
	strict  bool          // exit 1 when a target is missed
	timeout time.Duration // bound on the whole run

	rateDur    time.Duration // per rate cell, all rounds together
	rateRounds int           // rate cells are split into rounds, alternating the column order
	rounds     int           // rounds of the transfer cells; the median counts
	blobSize   int64
	chunkSize  int64
	layers     int
	layerSize  int64
	burstN     int           // requests per wrong-password burst
	burstMax   time.Duration // time bound per burst
	cost       int           // bcrypt cost of the users
	settle     time.Duration // wait after start before the idle memory reading
}

func defaults(quick bool) config {
	if quick {
		return config{quick: true, timeout: 3 * time.Minute, rateDur: time.Second, rateRounds: 1, rounds: 1,
			blobSize: 16 << 20, chunkSize: 4 << 20, layers: 5, layerSize: 1 << 20,
			burstN: 50, burstMax: 1500 * time.Millisecond, cost: 12, settle: 300 * time.Millisecond}
	}
	return config{timeout: 10 * time.Minute, rateDur: 5 * time.Second, rateRounds: 2, rounds: 3,
		blobSize: 256 << 20, chunkSize: 16 << 20, layers: 5, layerSize: 32 << 20,
		burstN: 200, burstMax: 8 * time.Second, cost: 12, settle: time.Second}
}

func main() {
	var (
		mreg   = flag.String("mreg", "bin/mreg", "path of the mreg binary (scripts/bench builds it)")
		out    = flag.String("out", "", "JSON results file (default bench-results/bench-TIMESTAMP.json)")
		quick  = flag.Bool("quick", false, "short smoke run: small sizes, 1 s per rate cell")
		keep   = flag.Bool("keep", false, "keep the temporary directory with storage and server logs")
		strict = flag.Bool("strict", false, "exit 1 when a target is missed")
		dur    = flag.Duration("dur", 0, "duration of each rate cell (default 5s, -quick 1s)")
	)
	flag.Parse()
	if flag.NArg() > 0 {
		fmt.Fprintln(os.Stderr, "bench: no arguments expected")
		os.Exit(2)
	}
	cfg := defaults(*quick)
	cfg.mreg, cfg.out, cfg.keep, cfg.strict = *mreg, *out, *keep, *strict
	if *dur > 0 {
		cfg.rateDur = *dur
	}
	if cfg.out == "" {
		cfg.out = filepath.Join("bench-results", "bench-"+time.Now().Format("20060102-150405")+".json")
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	rep, err := run(ctx, &cfg, os.Stdout, os.Stderr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		if !cfg.keep {
			fmt.Fprintln(os.Stderr, "bench: rerun with -keep to keep the servers' logs and storage")
		}
		os.Exit(1)
	}
	if cfg.strict && rep.failed() > 0 {
		os.Exit(1)
	}
}

// run starts the servers, runs every scenario, prints the table to stdout,
// writes the JSON file and stops the servers. Progress goes to progress.
func run(ctx context.Context, cfg *config, stdout, progress io.Writer) (*report, error) {
	began := time.Now()
	ctx, cancel := context.WithTimeout(ctx, cfg.timeout)
	defer cancel()
	bin, err := filepath.Abs(cfg.mreg)
	if err != nil {
		return nil, err
	}
	if _, err := os.Stat(bin); err != nil {
		return nil, fmt.Errorf("mreg binary: %w (build it: go build -o bin/mreg ./cmd/mreg)", err)
	}
	cfg.mreg = bin
	dir, err := os.MkdirTemp("", "mreg-bench-")
	if err != nil {
		return nil, err
	}
	if cfg.keep {
		fmt.Fprintln(progress, "bench: keeping", dir)
	} else {
		defer os.RemoveAll(dir)
	}
	say := func(format string, a ...any) {
		fmt.Fprintf(progress, "[%5.1fs] "+format+"\n", append([]any{time.Since(began).Seconds()}, a...)...)
	}

	say("starting registry and two sidecars (users with bcrypt cost %d, self-signed certificate)", cfg.cost)
	st, err := startStack(ctx, cfg, dir)
	if err != nil {
		return nil, err
	}
	stopped := false
	defer func() {
		if !stopped {
			_ = st.stop()
		}
	}()
	rep := newReport(cfg)
	time.Sleep(cfg.settle)
	rep.Memory.Idle = readMems(st)

	b := &bench{cfg: cfg, st: st, cols: newColumns(st), progress: progress,
		images: map[string]string{}, imageLayers: map[string][]string{}}
	defer func() {
		for _, c := range b.cols {
			c.close()
		}
	}()
	say("fixtures: a manifest and a %d MiB blob, pushed straight to the registry", cfg.blobSize>>20)
	if err := b.fixtures(ctx); err != nil {
		return nil, err
	}

	for _, sc := range b.scenarios() {
		if sc.id == "pull_c1" { // blob rows start: peak RSS from here
			for _, p := range st.procs() {
				if err := resetPeak(p.pid()); err != nil {
					return nil, fmt.Errorf("reset peak RSS of %s: %w", p.name, err)
				}
			}
		}
		rounds := cfg.rounds
		if kindOf(sc.id) == "rate" {
			rounds = cfg.rateRounds
		}
		cells := map[string][]result{}
		for i := range rounds {
			keys := slices.Clone(columnKeys)
			if i%2 == 1 { // even out drift: every other round backwards
				slices.Reverse(keys)
			}
			for _, key := range keys {
				r, err := b.runCell(ctx, sc, b.cols[key])
				if err != nil {
					return nil, err
				}
				cells[key] = append(cells[key], r)
				say("%-32s %-15s %s", sc.label, columnTitles[key], r.summary())
			}
		}
		for _, key := range columnKeys {
			rep.Results = append(rep.Results, merge(cells[key]))
		}
		if sc.id == "push_chunked" { // blob rows end
			rep.Memory.BlobPeak = readMems(st)
		}
	}

	for _, f := range []func(context.Context) (burstResult, error){b.burstThrottled, b.burstSpread} {
		br, err := f(ctx)
		if err != nil {
			return nil, err
		}
		rep.Bursts = append(rep.Bursts, br)
		say("%-32s %-15s %d sent, %v, %.1f s, sidecar %.2f cores", br.Label, columnTitles[colBasic], br.Sent, br.Status, br.Seconds, br.Cores)
	}
	rep.Memory.End = readMems(st)
	if err := st.alive(); err != nil {
		return nil, err
	}
	stopped = true
	if err := st.stop(); err != nil {
		return nil, fmt.Errorf("stopping the servers: %w", err)
	}
	rep.RunSeconds = time.Since(began).Seconds()
	rep.evaluate()
	rep.print(stdout)
	if err := rep.write(cfg.out); err != nil {
		return rep, err
	}
	fmt.Fprintf(stdout, "\nresults: %s; run took %.0f s\n", cfg.out, rep.RunSeconds)
	return rep, nil
}

func readMems(st *stack) map[string]memInfo {
	m := map[string]memInfo{}
	for _, p := range st.procs() {
		if mi, err := readMem(p.pid()); err == nil {
			m[p.name] = mi
		}
	}
	return m
}

func (r *report) write(path string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}

// hostInfo describes the machine the numbers come from.
type hostInfo struct {
	CPUs   int    `json:"cpus"`
	Model  string `json:"cpu_model,omitempty"`
	Go     string `json:"go"`
	OSArch string `json:"os_arch"`
}

func host() hostInfo {
	h := hostInfo{CPUs: runtime.NumCPU(), Go: runtime.Version(), OSArch: runtime.GOOS + "/" + runtime.GOARCH}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		h.Model = firstField(b, "model name")
	}
	return h
}
