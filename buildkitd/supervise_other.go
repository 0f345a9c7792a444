//go:build !linux

package buildkitd

import "syscall"

// sysProcAttr: buildkitd with the OCI worker runs only on Linux; elsewhere
// the daemon is started with the default attributes.
func sysProcAttr() *syscall.SysProcAttr { return nil }
