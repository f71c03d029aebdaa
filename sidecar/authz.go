package sidecar

import "net/http"

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
