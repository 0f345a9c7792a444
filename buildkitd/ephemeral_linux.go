package buildkitd

import (
	"errors"
	"fmt"
	"os"
	"syscall"
)

// unmount unmounts p, detaching it when it is busy. A path that is no
// longer a mount point is not an error.
func unmount(p string) error {
	err := syscall.Unmount(p, 0)
	if errors.Is(err, syscall.EBUSY) {
		err = syscall.Unmount(p, syscall.MNT_DETACH)
	}
	if err == nil || errors.Is(err, syscall.EINVAL) || errors.Is(err, syscall.ENOENT) {
		return nil
	}
	return fmt.Errorf("unmount %s: %w", p, err)
}

// lockDir takes an exclusive lock on the file path (created if need be)
// without waiting. The lock lasts until the returned file is closed or the
// process dies.
func lockDir(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, errStateDirInUse
		}
		return nil, err
	}
	return f, nil
}

// killGroup sends SIGKILL to the process group led by pid (each daemon is
// started as the leader of a group of its own), and to pid itself should
// it have left that group.
func killGroup(pid int) error {
	gerr := syscall.Kill(-pid, syscall.SIGKILL)
	perr := syscall.Kill(pid, syscall.SIGKILL)
	if gerr == nil || perr == nil || errors.Is(perr, syscall.ESRCH) {
		return nil
	}
	return perr
}
