//go:build mreg_azure

package registry

import _ "github.com/distribution/distribution/v3/registry/storage/driver/azure"
