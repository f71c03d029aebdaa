//go:build ignore

// imagefs prepares the runtime image's file tree in the Containerfile's
// builder stage, which may have no shell or coreutils (the offline builder
// is only a Go toolchain): the manage-user and manage-tls links to mreg,
// and the volume mount points, later owned by the image's user.
//
//	go run ./scripts/imagefs.go /out
package main

import (
	"fmt"
	"os"
	"path/filepath"
)

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: go run ./scripts/imagefs.go OUTDIR")
		os.Exit(2)
	}
	out := os.Args[1]
	for _, link := range []string{"manage-user", "manage-tls"} {
		p := filepath.Join(out, "bin", link)
		_ = os.Remove(p)
		if err := os.Symlink("mreg", p); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
	}
	for dir, mode := range map[string]os.FileMode{
		"var/lib/registry":  0o755,
		"var/lib/mreg-auth": 0o700,
	} {
		p := filepath.Join(out, "rootfs", dir)
		if err := os.MkdirAll(p, mode); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		if err := os.Chmod(p, mode); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
	}
}
