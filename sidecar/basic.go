package sidecar

import (
	"encoding/base64"
	"fmt"
	"strings"
)

// maxAuthHeader bounds the Authorization header we are willing to decode.
const maxAuthHeader = 4096

// parseBasic extracts user and password from an Authorization header value.
// It returns ErrUnsupportedScheme for other schemes and ErrMalformedAuth for
// anything that is not "Basic base64(user:password)" with a non-empty user.
func parseBasic(header string) (user, password string, err error) {
	if len(header) > maxAuthHeader {
		return "", "", fmt.Errorf("%w: too long", ErrMalformedAuth)
	}
	scheme, rest, _ := strings.Cut(header, " ")
	if !strings.EqualFold(scheme, "Basic") {
		return "", "", ErrUnsupportedScheme
	}
	raw, err := base64.StdEncoding.DecodeString(strings.TrimSpace(rest))
	if err != nil {
		return "", "", fmt.Errorf("%w: bad base64", ErrMalformedAuth)
	}
	user, password, ok := strings.Cut(string(raw), ":")
	if !ok || user == "" {
		return "", "", fmt.Errorf("%w: expected user:password", ErrMalformedAuth)
	}
	return user, password, nil
}
