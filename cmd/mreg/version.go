package main

import (
	"encoding/json"
	"fmt"
	"runtime"
	"runtime/debug"

	"github.com/spf13/cobra"

	"github.com/mreg-dev/mreg/internal/registry"
)

// versionInfo is what `mreg version` reports.
type versionInfo struct {
	Version      string `json:"version"`
	Commit       string `json:"commit"`
	Go           string `json:"go"`
	Distribution string `json:"distribution"`
}

// buildVersion reads the module version and VCS commit stamped by `go build`
// (a build outside a git checkout has neither).
func buildVersion() versionInfo {
	v := versionInfo{Version: "(devel)", Commit: "unknown", Go: runtime.Version(), Distribution: registry.Version()}
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return v
	}
	if bi.Main.Version != "" {
		v.Version = bi.Main.Version
	}
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			v.Commit = s.Value
		case "vcs.modified":
			if s.Value == "true" {
				v.Commit += "-dirty"
			}
		}
	}
	return v
}

func newVersionCmd(_ *rootOpts) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:     "version",
		Short:   "Print mreg's version, commit, and the Go and Distribution versions",
		Example: "  mreg version\n  mreg version --json",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			v := buildVersion()
			if asJSON {
				return json.NewEncoder(cmd.OutOrStdout()).Encode(v)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "mreg %s\ncommit %s\ngo %s\ndistribution %s\n", v.Version, v.Commit, v.Go, v.Distribution)
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}
