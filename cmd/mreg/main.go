// Command mreg is a minimal private OCI registry: the embedded Distribution
// registry, its auth/TLS sidecar, garbage collection and operator tools in
// one multi-call binary (invoked as manage-user or manage-tls it runs that
// subcommand).
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := newRootCmd(os.Args).ExecuteContext(ctx)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "mreg:", err)
		os.Exit(1)
	}
}
