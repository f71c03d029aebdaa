// Package fileid tells whether a file changed since it was last seen, with
// one stat: identity (device and inode), size and modification time. A
// stat follows symlinks, so a Kubernetes-style swap of a ..data symlink is a
// change as well.
package fileid

import (
	"errors"
	"io/fs"
	"os"
)

// Stat returns the file's info, or nil (and no error) when it does not exist.
func Stat(path string) (os.FileInfo, error) {
	info, err := os.Stat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	return info, err
}

// Same reports whether a and b describe the same, unchanged file. Two
// missing files (nil) are the same.
func Same(a, b os.FileInfo) bool {
	if a == nil || b == nil {
		return a == nil && b == nil
	}
	return os.SameFile(a, b) && a.Size() == b.Size() && a.ModTime().Equal(b.ModTime())
}
