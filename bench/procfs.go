package main

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// Process accounting from /proc (Linux only).

// clockTick is USER_HZ, 100 on every Linux architecture Go supports.
const clockTick = 10 * time.Millisecond

// cpuTime is utime+stime of pid (all threads, not children).
func cpuTime(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name may contain spaces and parentheses; the fields
	// after the last ')' start with the state (field 3 of proc(5)).
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("/proc/%d/stat: unexpected format", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: too few fields", pid)
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64) // field 14, utime
	st, err2 := strconv.ParseInt(f[12], 10, 64) // field 15, stime
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("/proc/%d/stat: bad utime/stime", pid)
	}
	return time.Duration(ut+st) * clockTick, nil
}

// memInfo is a process's memory in bytes.
type memInfo struct {
	RSS  int64 `json:"rss"`      // VmRSS
	HWM  int64 `json:"peak_rss"` // VmHWM: peak RSS since start or the last resetPeak
	PSS  int64 `json:"pss"`      // Pss from smaps_rollup: shared pages divided among their users
	Anon int64 `json:"rss_anon"` // anonymous part of RSS (heap, stacks): the rest is the binary's file pages
}

func readMem(pid int) (memInfo, error) {
	var m memInfo
	st, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return m, err
	}
	m.RSS = kbField(st, "VmRSS:")
	m.HWM = kbField(st, "VmHWM:")
	if sm, err := os.ReadFile(fmt.Sprintf("/proc/%d/smaps_rollup", pid)); err == nil {
		m.PSS = kbField(sm, "Pss:")
		m.Anon = kbField(sm, "Anonymous:")
	}
	return m, nil
}

func kbField(b []byte, name string) int64 {
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, name) {
			f := strings.Fields(line)
			if len(f) >= 2 {
				kb, _ := strconv.ParseInt(f[1], 10, 64)
				return kb << 10
			}
		}
	}
	return -1
}

// resetPeak sets VmHWM back to the current RSS (proc(5), clear_refs "5").
func resetPeak(pid int) error {
	return os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", pid), []byte("5"), 0)
}

// systemBusy is the CPU time the whole machine was busy (/proc/stat: user,
// nice, system, irq, softirq and steal, the time the hypervisor gave to
// others). A process's stime includes the interrupt work done in its
// context, such as loopback networking, so irq and softirq belong here.
func systemBusy() (time.Duration, error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, err
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 9 || f[0] != "cpu" {
		return 0, fmt.Errorf("/proc/stat: unexpected format")
	}
	var sum int64
	for _, i := range []int{1, 2, 3, 6, 7, 8} { // user nice system [idle iowait] irq softirq steal
		n, err := strconv.ParseInt(f[i], 10, 64)
		if err != nil {
			return 0, err
		}
		sum += n
	}
	return time.Duration(sum) * clockTick, nil
}
