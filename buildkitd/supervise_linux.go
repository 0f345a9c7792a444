package buildkitd

import "syscall"

// sysProcAttr puts the daemon in a process group of its own, so that a
// Ctrl-C meant for the server does not reach it (the server stops it once
// its builds have ended), and has the kernel send it SIGTERM if the server
// dies without stopping it.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
}
