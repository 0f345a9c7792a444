//go:build !linux

package buildkitd

import (
	"errors"
	"os"
)

// errNotLinux: ephemeral builders (buildkitd with the OCI worker) run only
// on Linux.
var errNotLinux = errors.New("ephemeral buildkitd instances need Linux")

func unmount(string) error { return errNotLinux }

func lockDir(string) (*os.File, error) { return nil, errNotLinux }

func killGroup(pid int) error {
	p, err := os.FindProcess(pid)
	if err != nil {
		return err
	}
	return p.Kill()
}
