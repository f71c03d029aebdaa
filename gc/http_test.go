package gc_test

import (
	"bytes"
	"io"
	"net/http"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

func httpPost(url string) (int, error) {
	resp, err := http.Post(url, "", nil)
	if err != nil {
		return 0, err
	}
	resp.Body.Close()
	return resp.StatusCode, nil
}

// putManifest uploads img's blobs and PUTs its manifest by digest with
// plain HTTP, so that no client-side referrers fallback tag is created.
func putManifest(t *testing.T, host, repo string, img v1.Image) {
	t.Helper()
	cfg, _ := img.RawConfigFile()
	blobs := [][]byte{cfg}
	ls, _ := img.Layers()
	for _, l := range ls {
		rc, err := l.Compressed()
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(rc)
		rc.Close()
		blobs = append(blobs, b)
	}
	for _, b := range blobs {
		resp, err := http.Post("http://"+host+"/v2/"+repo+"/blobs/uploads/", "", nil)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		loc := resp.Header.Get("Location")
		req, _ := http.NewRequest(http.MethodPut, loc+"&digest="+digestBytes(b), bytes.NewReader(b))
		resp, err = http.DefaultClient.Do(req)
		if err != nil || resp.StatusCode != http.StatusCreated {
			t.Fatalf("blob upload: %v %v", err, resp.Status)
		}
		resp.Body.Close()
	}
	raw, _ := img.RawManifest()
	mt, _ := img.MediaType()
	d, _ := img.Digest()
	req, _ := http.NewRequest(http.MethodPut, "http://"+host+"/v2/"+repo+"/manifests/"+d.String(), bytes.NewReader(raw))
	req.Header.Set("Content-Type", string(mt))
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != http.StatusCreated {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("manifest put: %v %v %s", err, resp.Status, b)
	}
	resp.Body.Close()
}

func digestBytes(b []byte) string {
	h, _, _ := v1.SHA256(bytes.NewReader(b))
	return h.String()
}
