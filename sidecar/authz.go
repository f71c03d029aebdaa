package sidecar

import (
	"net/http"
	"strings"
)

// access is what a request needs.
type access int

const (
	accessNone  access = iota // method not served at all
	accessRead                // GET, HEAD: any user
	accessWrite               // POST, PUT, PATCH, DELETE: admins
)

// required maps a method to the access it needs.
func required(method string) access {
	switch method {
	case http.MethodGet, http.MethodHead:
		return accessRead
	case http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete:
		return accessWrite
	}
	return accessNone
}

// allowed is the authorization decision: role × access.
func allowed(id Identity, need access, anonymousRead bool) bool {
	switch need {
	case accessRead:
		return !id.Anonymous() || anonymousRead
	case accessWrite:
		return !id.Anonymous() && id.Admin
	}
	return false
}

// isRegistryPath reports whether path belongs to the registry API, the only
// thing the sidecar forwards.
func isRegistryPath(path string) bool {
	return path == "/v2" || strings.HasPrefix(path, "/v2/")
}
