package buildcache

import (
	"io"
	"os"
	"path/filepath"
)

// WriteFile writes the file p through a temporary file in tmpDir (on the
// same file system) renamed into place, so that readers sharing the
// directory see whole files only; p's directory is made with dirPerm if
// missing, and p gets perm. On error nothing is left behind. The store and
// the GOCACHEPROG helper both write this way.
func WriteFile(tmpDir, p string, dirPerm, perm os.FileMode, write func(io.Writer) error) error {
	if err := os.MkdirAll(filepath.Dir(p), dirPerm); err != nil {
		return err
	}
	f, err := os.CreateTemp(tmpDir, "w-")
	if err != nil {
		return err
	}
	tmp := f.Name()
	err = write(f)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Chmod(tmp, perm)
	}
	if err == nil {
		err = os.Rename(tmp, p)
	}
	if err != nil {
		_ = os.Remove(tmp)
	}
	return err
}
