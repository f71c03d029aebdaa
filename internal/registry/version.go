package registry

import "runtime/debug"

// Version returns the version of the embedded Distribution module.
func Version() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "unknown"
	}
	for _, m := range bi.Deps {
		if m.Path == "github.com/distribution/distribution/v3" {
			return m.Version
		}
	}
	return "unknown"
}
