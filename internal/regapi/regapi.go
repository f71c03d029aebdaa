// Package regapi holds the response helpers of the registry protocol that
// mreg's handlers in front of Distribution share: the JSON error envelope,
// and a writer that holds back some answers of the handler it wraps so the
// caller can replace them.
package regapi

import (
	"bytes"
	"encoding/json"
	"net/http"
	"strconv"
)

// WriteError answers with the registry protocol's error envelope,
// {"errors":[{"code","message","detail"}]}. Headers already set on w (a
// challenge, Allow, Retry-After) are kept; HEAD answers carry no body.
func WriteError(w http.ResponseWriter, r *http.Request, status int, code, message string, detail any) {
	body, _ := json.Marshal(map[string]any{"errors": []map[string]any{{"code": code, "message": message, "detail": detail}}})
	body = append(body, '\n')
	h := w.Header()
	h.Set("Docker-Distribution-API-Version", "registry/2.0")
	h.Set("Content-Type", "application/json; charset=utf-8")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(status)
	if r == nil || r.Method != http.MethodHead {
		_, _ = w.Write(body)
	}
}

// Holder passes a handler's answer through unless Hold says to hold it
// back by its status; a held answer (status and up to 4 KiB of body) is
// either released unchanged or replaced by the caller.
type Holder struct {
	http.ResponseWriter
	Hold   func(status int) bool
	Status int
	Held   bool
	Body   bytes.Buffer
}

func (h *Holder) WriteHeader(code int) {
	h.Status = code
	if h.Hold(code) {
		h.Held = true
		return
	}
	h.ResponseWriter.WriteHeader(code)
}

func (h *Holder) Write(b []byte) (int, error) {
	if h.Status == 0 {
		h.WriteHeader(http.StatusOK)
	}
	if h.Held {
		if h.Body.Len() < 4096 {
			h.Body.Write(b)
		}
		return len(b), nil
	}
	return h.ResponseWriter.Write(b)
}

// Flush forwards streaming flushes of answers that are not held.
func (h *Holder) Flush() {
	if f, ok := h.ResponseWriter.(http.Flusher); ok && !h.Held {
		f.Flush()
	}
}

func (h *Holder) Unwrap() http.ResponseWriter { return h.ResponseWriter }

// Release sends a held answer unchanged.
func (h *Holder) Release() {
	h.ResponseWriter.WriteHeader(h.Status)
	_, _ = h.ResponseWriter.Write(h.Body.Bytes())
}

// Replace drops the held answer's headers, so that the caller can answer
// differently.
func (h *Holder) Replace() {
	for k := range h.Header() {
		delete(h.Header(), k)
	}
}
