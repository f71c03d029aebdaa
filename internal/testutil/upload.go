package testutil

import (
	"io"
	"net/http"
	"net/url"
	"testing"
)

// UploadBlob pushes one blob through the registry API (POST to start the
// upload, PUT with the digest to finish it), as a client would. auth, if
// not nil, adds credentials to both requests.
func UploadBlob(t testing.TB, c *http.Client, base, repo string, body io.Reader, size int64, digest string, auth func(*http.Request)) {
	t.Helper()
	if c == nil {
		c = http.DefaultClient
	}
	req, _ := http.NewRequest(http.MethodPost, base+"/v2/"+repo+"/blobs/uploads/", nil)
	if auth != nil {
		auth(req)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	loc, err := url.Parse(resp.Header.Get("Location"))
	if err != nil || resp.StatusCode != http.StatusAccepted {
		t.Fatalf("start upload: %d %v", resp.StatusCode, err)
	}
	loc = req.URL.ResolveReference(loc)
	q := loc.Query()
	q.Set("digest", digest)
	loc.RawQuery = q.Encode()
	req, _ = http.NewRequest(http.MethodPut, loc.String(), body)
	req.ContentLength = size
	req.Header.Set("Content-Type", "application/octet-stream")
	if auth != nil {
		auth(req)
	}
	resp, err = c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		t.Fatalf("finish upload: %d %s", resp.StatusCode, b)
	}
}
