package sidecar

import (
	"errors"
	"fmt"
	"net/http"

	"github.com/mreg-dev/mreg/internal/regapi"
)

// Sentinel errors of this package.
var (
	// ErrBadCredentials: unknown user or wrong password. The two are not
	// told apart, to the client or in timing.
	ErrBadCredentials = errors.New("invalid username or password")
	// ErrMalformedAuth: an Authorization header that cannot be parsed.
	ErrMalformedAuth = errors.New("malformed authorization header")
	// ErrUnsupportedScheme: an Authorization scheme mreg does not accept.
	ErrUnsupportedScheme = errors.New("unsupported authorization scheme")
	// ErrBusy: too many password checks are queued (bcrypt work is bounded).
	ErrBusy = errors.New("too many concurrent logins")
	// ErrConfig: invalid sidecar configuration.
	ErrConfig = errors.New("invalid sidecar configuration")
)

// Error codes of the distribution spec that the sidecar answers itself.
const (
	codeUnauthorized = "UNAUTHORIZED"
	codeDenied       = "DENIED"
	codeUnsupported  = "UNSUPPORTED"
	codeNotFound     = "NAME_UNKNOWN"
	codeUnavailable  = "UNAVAILABLE"
	codeTooMany      = "TOOMANYREQUESTS"
)

// regError is an error the sidecar answers with the registry protocol's
// JSON envelope. It is the one place that writes error responses.
type regError struct {
	status  int
	code    string
	message string
	detail  any
	// challenge, when set, is sent as WWW-Authenticate (401 responses).
	challenge string
	// header holds extra response headers (Allow, Retry-After).
	header http.Header
}

func (e *regError) Error() string {
	return fmt.Sprintf("%d %s: %s", e.status, e.code, e.message)
}

// write sends e. HEAD responses carry the headers but no body.
func (e *regError) write(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	for k, v := range e.header {
		h[k] = v
	}
	if e.challenge != "" {
		h.Set("WWW-Authenticate", e.challenge)
	}
	regapi.WriteError(w, r, e.status, e.code, e.message, e.detail)
}

func errUnauthorized(challenge, message string) *regError {
	return &regError{status: http.StatusUnauthorized, code: codeUnauthorized, message: message, challenge: challenge}
}

func errDenied(message string) *regError {
	return &regError{status: http.StatusForbidden, code: codeDenied, message: message}
}

func errMethod(method string) *regError {
	return &regError{
		status: http.StatusMethodNotAllowed, code: codeUnsupported,
		message: "method not allowed", detail: map[string]string{"method": method},
		header: http.Header{"Allow": {"GET, HEAD, POST, PUT, PATCH, DELETE"}},
	}
}

func errNotFound(path string) *regError {
	return &regError{status: http.StatusNotFound, code: codeNotFound, message: "not found", detail: map[string]string{"path": path}}
}

func errBadGateway() *regError {
	return &regError{status: http.StatusBadGateway, code: codeUnavailable, message: "registry unavailable"}
}

func errTooMany() *regError {
	return &regError{
		status: http.StatusTooManyRequests, code: codeTooMany, message: "too many concurrent logins, retry later",
		header: http.Header{"Retry-After": {"1"}},
	}
}
