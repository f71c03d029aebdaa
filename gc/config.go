package gc

import (
	"context"
	"fmt"

	"github.com/distribution/distribution/v3/configuration"
	"github.com/distribution/distribution/v3/registry/storage/driver/factory"
)

// RunConfig runs GC over the storage that a Distribution configuration
// names, exactly as the registry would open it.
func RunConfig(ctx context.Context, cfg *configuration.Configuration, opts Options) (Stats, error) {
	d, err := factory.Create(ctx, cfg.Storage.Type(), cfg.Storage.Parameters())
	if err != nil {
		return Stats{}, fmt.Errorf("storage driver %s: %w", cfg.Storage.Type(), err)
	}
	return Run(ctx, d, opts)
}
