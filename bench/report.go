package main

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"
)

// report is everything the run measured; it is also the JSON file.
type report struct {
	Time       string        `json:"time"`
	Host       hostInfo      `json:"host"`
	Quick      bool          `json:"quick"`
	Settings   settings      `json:"settings"`
	Results    []result      `json:"results"`
	Bursts     []burstResult `json:"bursts"`
	Memory     memReport     `json:"memory"`
	Checks     []check       `json:"checks"`
	RunSeconds float64       `json:"run_seconds"`
}

type settings struct {
	RateSeconds  float64 `json:"rate_seconds"`
	RateRounds   int     `json:"rate_rounds"`
	Rounds       int     `json:"transfer_rounds"`
	BlobBytes    int64   `json:"blob_bytes"`
	ChunkBytes   int64   `json:"chunk_bytes"`
	Layers       int     `json:"layers"`
	LayerBytes   int64   `json:"layer_bytes"`
	BcryptCost   int     `json:"bcrypt_cost"`
	BurstN       int     `json:"burst_requests"`
	BurstSeconds float64 `json:"burst_max_seconds"`
}

// memReport: per process (registry, sidecar, sidecar-tls).
type memReport struct {
	Idle     map[string]memInfo `json:"idle"`      // after start, before any load
	BlobPeak map[string]memInfo `json:"blob_peak"` // peak_rss: highest RSS during the blob rows
	End      map[string]memInfo `json:"end"`       // peak_rss: since start
}

type check struct {
	Name   string  `json:"name"`
	Pass   bool    `json:"pass"`
	Value  float64 `json:"value"`
	Limit  float64 `json:"limit"`
	Detail string  `json:"detail"`
}

func newReport(cfg *config) *report {
	return &report{
		Time:  time.Now().UTC().Format(time.RFC3339),
		Host:  host(),
		Quick: cfg.quick,
		Settings: settings{RateSeconds: cfg.rateDur.Seconds(), RateRounds: cfg.rateRounds, Rounds: cfg.rounds, BlobBytes: cfg.blobSize, ChunkBytes: cfg.chunkSize,
			Layers: cfg.layers, LayerBytes: cfg.layerSize, BcryptCost: cfg.cost, BurstN: cfg.burstN,
			BurstSeconds: cfg.burstMax.Seconds()},
	}
}

func firstField(b []byte, name string) string {
	for _, line := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == name {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

// kind of a scenario's main number.
func kindOf(id string) string {
	switch {
	case strings.HasPrefix(id, "head_"), strings.HasPrefix(id, "get_"):
		return "rate"
	case strings.HasPrefix(id, "image_"):
		return "seconds"
	}
	return "mbps"
}

func (r result) summary() string {
	switch kindOf(r.Scenario) {
	case "rate":
		return fmt.Sprintf("%8.0f req/s  p50 %.2f ms  p99 %.2f ms", r.ReqPerS, r.P50ms, r.P99ms)
	case "seconds":
		return fmt.Sprintf("%8.2f s (%.0f MB/s)", r.Seconds, r.MBps)
	}
	return fmt.Sprintf("%8.0f MB/s (%.2f s)", r.MBps, r.Seconds)
}

func (rep *report) find(scenario, col string) (result, bool) {
	for _, r := range rep.Results {
		if r.Scenario == scenario && r.Column == col {
			return r, true
		}
	}
	return result{}, false
}

// speed is the cell's main number, higher is better.
func (r result) speed() float64 {
	switch kindOf(r.Scenario) {
	case "rate":
		return r.ReqPerS
	case "seconds":
		if r.Seconds == 0 {
			return 0
		}
		return 1 / r.Seconds
	}
	return r.MBps
}

// main is the number the table shows for the cell.
func (r result) main() float64 {
	switch kindOf(r.Scenario) {
	case "rate":
		return r.ReqPerS
	case "seconds":
		return r.Seconds
	}
	return r.MBps
}

// ratio is the column's speed relative to direct.
func (rep *report) ratio(scenario, col string) float64 {
	d, ok1 := rep.find(scenario, colDirect)
	c, ok2 := rep.find(scenario, col)
	if !ok1 || !ok2 || d.speed() == 0 {
		return 0
	}
	return c.speed() / d.speed()
}

const mib = 1 << 20

func (rep *report) addCheck(name string, value, limit float64, atMost bool, detail string) {
	pass := value >= limit
	if atMost {
		pass = value <= limit
	}
	rep.Checks = append(rep.Checks, check{Name: name, Pass: pass, Value: value, Limit: limit, Detail: detail})
}

func (rep *report) failed() int {
	n := 0
	for _, c := range rep.Checks {
		if !c.Pass {
			n++
		}
	}
	return n
}

// evaluate checks the targets, all as ratios within this run.
func (rep *report) evaluate() {
	for _, col := range []string{colBasic, colBearer} {
		v := rep.ratio("head_c16", col)
		rep.addCheck(fmt.Sprintf("manifest HEAD c16, %s ≥ 0.70× direct", columnTitles[col]), v, 0.70, false,
			fmt.Sprintf("%.2f×", v)+rep.disturbed("head_c16", col))
	}
	for _, sc := range []string{"pull_c1", "pull_c4", "push_mono", "push_chunked"} {
		for _, col := range []string{colBasic, colBearer, colHTTPS} {
			limit := 0.9
			if col == colHTTPS {
				limit = 0.6
			}
			v := rep.ratio(sc, col)
			rep.addCheck(fmt.Sprintf("%s, %s ≥ %.2f× direct", rowLabel(rep, sc), columnTitles[col], limit), v, limit, false,
				fmt.Sprintf("%.2f×", v)+rep.disturbed(sc, col))
		}
	}
	idle := rep.Memory.Idle
	rss := idle["registry"].RSS + idle["sidecar"].RSS
	pss := idle["registry"].PSS + idle["sidecar"].PSS
	rep.addCheck("idle RSS, registry + sidecar ≤ 40 MiB", float64(rss)/mib, 40, true,
		fmt.Sprintf("RSS %.1f MiB (registry %.1f + sidecar %.1f); PSS %.1f MiB (%.1f + %.1f)",
			float64(rss)/mib, float64(idle["registry"].RSS)/mib, float64(idle["sidecar"].RSS)/mib,
			float64(pss)/mib, float64(idle["registry"].PSS)/mib, float64(idle["sidecar"].PSS)/mib))
	for _, name := range []string{"registry", "sidecar", "sidecar-tls"} {
		i, p := idle[name], rep.Memory.BlobPeak[name]
		rep.addCheck(fmt.Sprintf("peak RSS during blob rows, %s ≤ idle + 64 MiB", name), float64(p.HWM-i.RSS)/mib, 64, true,
			fmt.Sprintf("peak %.1f MiB, idle %.1f MiB: +%.1f MiB", float64(p.HWM)/mib, float64(i.RSS)/mib, float64(p.HWM-i.RSS)/mib))
	}
	for _, br := range rep.Bursts {
		rep.addCheck(fmt.Sprintf("%s: sidecar cores ≤ 1.1", br.Label), br.Cores, 1.1, true,
			fmt.Sprintf("%.2f cores (%.2f s CPU in %.2f s)", br.Cores, br.CPU, br.Seconds))
	}
}

func rowLabel(rep *report, id string) string {
	cfg := config{blobSize: rep.Settings.BlobBytes, chunkSize: rep.Settings.ChunkBytes,
		layers: rep.Settings.Layers, layerSize: rep.Settings.LayerBytes}
	for _, sc := range (&bench{cfg: &cfg}).scenarios() {
		if sc.id == id {
			return sc.label
		}
	}
	return id
}

// print writes the table and the PASS/FAIL lines.
func (rep *report) print(w io.Writer) {
	s := rep.Settings
	mode := "full run"
	if rep.Quick {
		mode = "quick run (-quick: small sizes, targets not meaningful)"
	}
	fmt.Fprintf(w, "\nmreg bench, %s: %d CPUs (%s), %s %s, %s\n", rep.Time, rep.Host.CPUs, rep.Host.Model, rep.Host.Go, rep.Host.OSArch, mode)
	fmt.Fprintf(w, "rate cells %.1f s each (%d rounds, column order alternating); transfers: median of %d rounds; blob %d MiB, chunks %d MiB; image %d × %d MiB; bcrypt cost %d\n",
		s.RateSeconds, s.RateRounds, s.Rounds, s.BlobBytes>>20, s.ChunkBytes>>20, s.Layers, s.LayerBytes>>20, s.BcryptCost)
	fmt.Fprintln(w, "(×) speed relative to direct, higher is better; MB = 10^6 bytes; all HTTP/1.1, keep-alive; https = TLS with Bearer token")
	fmt.Fprintln(w, "cpu: CPU time of registry + sidecar + bench client per request (µs) or per GB moved (s), and (how busy all CPUs were)")
	fmt.Fprintln(w, "memory: direct = the registry process, basic and bearer = the plain sidecar, https = the TLS sidecar")
	fmt.Fprintln(w)

	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	row := func(cells ...string) { fmt.Fprintln(tw, strings.Join(cells, "\t")+"\t") }
	head := []string{"scenario", ""}
	for _, k := range columnKeys {
		head = append(head, columnTitles[k])
	}
	row(head...)
	// cells formats the scenario's result in every column.
	cells := func(id string, f func(r result, col string) string) []string {
		var out []string
		for _, k := range columnKeys {
			if r, ok := rep.find(id, k); ok {
				out = append(out, f(r, k))
			} else {
				out = append(out, "-")
			}
		}
		return out
	}
	ratio := func(r result, col string) string {
		if col == colDirect {
			return ""
		}
		return fmt.Sprintf(" (%.2f×)", rep.ratio(r.Scenario, col))
	}
	// cpu: CPU time of registry (+ sidecar) + this client per request in
	// µs, or per GB in s, and how busy that kept the machine's CPUs.
	cpu := func(r result, col string) string {
		per, prec := float64(r.Bytes)/1e9, 2
		if kindOf(r.Scenario) == "rate" {
			per, prec = float64(r.Ops)/1e6, 0
		}
		if per == 0 || r.Seconds == 0 {
			return "-"
		}
		busy := (r.CPU.Registry + r.CPU.Sidecar + r.CPU.Client) / r.Seconds / float64(rep.Host.CPUs) * 100
		f := func(v float64) string { return fmt.Sprintf("%.*f", prec, v/per) }
		if col == colDirect {
			return fmt.Sprintf("%s+%s (%.0f%%)", f(r.CPU.Registry), f(r.CPU.Client), busy)
		}
		return fmt.Sprintf("%s+%s+%s (%.0f%%)", f(r.CPU.Registry), f(r.CPU.Sidecar), f(r.CPU.Client), busy)
	}
	seen := map[string]bool{}
	for _, r := range rep.Results {
		id := r.Scenario
		if seen[id] {
			continue
		}
		seen[id] = true
		label := rowLabel(rep, id)
		switch kindOf(id) {
		case "rate":
			row(append([]string{label, "req/s"}, cells(id, func(r result, col string) string {
				return fmt.Sprintf("%.0f%s", r.ReqPerS, ratio(r, col))
			})...)...)
			row(append([]string{"", "p50 / p99 ms"}, cells(id, func(r result, col string) string {
				return fmt.Sprintf("%.2f / %.2f", r.P50ms, r.P99ms)
			})...)...)
			row(append([]string{"", "cpu µs/req"}, cells(id, cpu)...)...)
		case "seconds":
			row(append([]string{label, "s"}, cells(id, func(r result, col string) string {
				return fmt.Sprintf("%.2f%s", r.Seconds, ratio(r, col))
			})...)...)
		default:
			row(append([]string{label, "MB/s"}, cells(id, func(r result, col string) string {
				return fmt.Sprintf("%.0f%s", r.MBps, ratio(r, col))
			})...)...)
			row(append([]string{"", "cpu s/GB"}, cells(id, cpu)...)...)
		}
	}
	procOf := map[string]string{colDirect: "registry", colBasic: "sidecar", colBearer: "sidecar", colHTTPS: "sidecar-tls"}
	memRow := func(label, unit string, m map[string]memInfo, f func(memInfo) int64) {
		cells := []string{label, unit}
		for _, k := range columnKeys {
			mi, ok := m[procOf[k]]
			if !ok {
				cells = append(cells, "-")
				continue
			}
			cells = append(cells, fmt.Sprintf("%.1f", float64(f(mi))/mib))
		}
		row(cells...)
	}
	memRow("memory idle", "RSS MiB", rep.Memory.Idle, func(m memInfo) int64 { return m.RSS })
	memRow("", "RSS anon MiB", rep.Memory.Idle, func(m memInfo) int64 { return m.Anon })
	memRow("", "PSS MiB", rep.Memory.Idle, func(m memInfo) int64 { return m.PSS })
	memRow("memory, blob rows", "peak RSS MiB", rep.Memory.BlobPeak, func(m memInfo) int64 { return m.HWM })
	// Bursts go against the Basic column only.
	for _, br := range rep.Bursts {
		only := func(label, unit, v string) { row(label, unit, "-", v, "-", "-") }
		only(br.Label, "answered/s", fmt.Sprintf("%.0f", br.Answered))
		only("", "401 / 429 / cut", fmt.Sprintf("%d / %d / %d", br.Status["401"], br.Status["429"], br.Status["canceled"]))
		only("", "cpu ms per 401", fmt.Sprintf("%.0f", br.CPUPer401ms))
		only("", "sidecar cores", fmt.Sprintf("%.2f", br.Cores))
	}
	tw.Flush()

	fmt.Fprintln(w)
	fmt.Fprintln(w, rep.interference())
	for _, c := range rep.Checks {
		verdict := "PASS"
		if !c.Pass {
			verdict = "FAIL"
		}
		fmt.Fprintf(w, "%s  %s: %s\n", verdict, c.Name, c.Detail)
	}
	fmt.Fprintf(w, "%d of %d targets met\n", len(rep.Checks)-rep.failed(), len(rep.Checks))
}

// disturbed notes when other processes took more than 10% of the CPUs
// during the direct cell or the column's cell of a scenario.
func (rep *report) disturbed(scenario, col string) string {
	worst := 0.0
	for _, k := range []string{colDirect, col} {
		if r, ok := rep.find(scenario, k); ok && r.Seconds > 0 {
			worst = max(worst, r.CPU.Other/r.Seconds/float64(rep.Host.CPUs))
		}
	}
	if worst <= 0.10 {
		return ""
	}
	return fmt.Sprintf(" (disturbed: other processes took up to %.0f%% of the CPUs)", worst*100)
}

// interference says how much CPU other processes took during the timed
// cells: on a shared machine that, not the sidecar, can decide a ratio.
func (rep *report) interference() string {
	var other, wall, worst float64
	worstCell := ""
	for _, r := range rep.Results {
		other += r.CPU.Other
		wall += r.Seconds
		if r.Seconds > 0 && r.CPU.Other/r.Seconds > worst {
			worst = r.CPU.Other / r.Seconds
			worstCell = rowLabel(rep, r.Scenario) + " / " + columnTitles[r.Column]
		}
	}
	if wall == 0 {
		return ""
	}
	cpus := float64(rep.Host.CPUs)
	msg := fmt.Sprintf("other processes (and hypervisor steal) took %.0f%% of the CPUs during the timed cells", other/wall/cpus*100)
	if worstCell != "" {
		msg += fmt.Sprintf(", most in %s: %.0f%%", worstCell, worst/cpus*100)
	}
	if worst/cpus > 0.10 {
		msg += "\nWARNING: the machine was not quiet; ratios of the disturbed cells are not reliable (rerun on an idle machine)"
	}
	return msg
}
