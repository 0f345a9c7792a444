package buildkitd

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// mountInfoPath is where the kernel lists this process's mounts.
const mountInfoPath = "/proc/self/mountinfo"

// parseMountPoints returns the mount points listed in a mountinfo file
// (proc(5): the fifth field, with spaces, tabs, newlines and backslashes
// escaped as \ooo), in the file's order, which is the order they were
// mounted in.
func parseMountPoints(r io.Reader) ([]string, error) {
	var out []string
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 {
			continue
		}
		out = append(out, unescapeMountField(fields[4]))
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read mountinfo: %w", err)
	}
	return out, nil
}

// unescapeMountField undoes the kernel's \ooo octal escapes.
func unescapeMountField(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// mountsUnder returns the mount points at or below dir, last mounted
// first: the order to unmount them in (a mount on top of another, or inside
// it, comes after it in mountinfo).
func mountsUnder(points []string, dir string) []string {
	dir = filepath.Clean(dir)
	var out []string
	for i := len(points) - 1; i >= 0; i-- {
		if p := points[i]; p == dir || strings.HasPrefix(p, dir+"/") {
			out = append(out, p)
		}
	}
	return out
}

// unmountUnder unmounts everything mounted at or below dir, as seen in this
// process's mount namespace.
func unmountUnder(dir string) error {
	// A few passes: a mount the kernel refuses at first (busy) is detached,
	// and a mount hidden under another shows up once the top one is gone.
	var last []string
	for range 5 {
		f, err := os.Open(mountInfoPath)
		if err != nil {
			return fmt.Errorf("unmount under %s: %w", dir, err)
		}
		points, err := parseMountPoints(f)
		f.Close()
		if err != nil {
			return fmt.Errorf("unmount under %s: %w", dir, err)
		}
		last = mountsUnder(points, dir)
		if len(last) == 0 {
			return nil
		}
		for _, p := range last {
			_ = unmount(p) // checked by the next pass
		}
	}
	return fmt.Errorf("unmount under %s: still mounted: %s", dir, strings.Join(last, ", "))
}

// runcContainer is one entry of `runc list --format json`.
type runcContainer struct {
	ID     string `json:"id"`
	Pid    int    `json:"pid"`
	Bundle string `json:"bundle"`
}

// runcContainersUnder returns the ids of the containers in a `runc list
// --format json` output whose bundle is below root: the build containers of
// the buildkitd whose state is root.
func runcContainersUnder(listJSON []byte, root string) ([]string, error) {
	listJSON = bytes.TrimSpace(listJSON)
	if len(listJSON) == 0 {
		return nil, nil
	}
	var cs []runcContainer // "null" when there are none
	if err := json.Unmarshal(listJSON, &cs); err != nil {
		return nil, fmt.Errorf("parse runc list: %w", err)
	}
	root = filepath.Clean(root)
	var ids []string
	for _, c := range cs {
		if strings.HasPrefix(filepath.Clean(c.Bundle), root+"/") {
			ids = append(ids, c.ID)
		}
	}
	return ids, nil
}

// removeRuncContainers force-deletes (kills and removes) the runc
// containers whose bundle is below root. buildkitd removes its containers
// when it exits normally; after a SIGKILL they outlive it. runc is the runc
// binary, "" to skip (no runc found).
func removeRuncContainers(ctx context.Context, runc, root string) error {
	if runc == "" {
		return nil
	}
	out, err := exec.CommandContext(ctx, runc, "list", "--format", "json").Output()
	if err != nil {
		return fmt.Errorf("runc list: %w", err)
	}
	ids, err := runcContainersUnder(out, root)
	if err != nil {
		return err
	}
	var errs []error
	for _, id := range ids {
		if out, err := exec.CommandContext(ctx, runc, "delete", "--force", id).CombinedOutput(); err != nil {
			errs = append(errs, fmt.Errorf("runc delete --force %s: %w: %s", id, err, bytes.TrimSpace(out)))
		}
	}
	return errors.Join(errs...)
}

// leftoverDirs returns the directories in stateDir: each is an instance
// directory of an earlier Launcher (the caller holds stateDir's lock, so no
// live Launcher owns them). Files are not instance directories and are left
// alone.
func leftoverDirs(stateDir string) ([]string, error) {
	entries, err := os.ReadDir(stateDir)
	if err != nil {
		return nil, fmt.Errorf("list %s: %w", stateDir, err)
	}
	var out []string
	for _, e := range entries {
		if e.IsDir() {
			out = append(out, filepath.Join(stateDir, e.Name()))
		}
	}
	return out, nil
}

// ownsDir reports whether the process with the given command line (as in
// /proc/PID/cmdline: NUL-separated) is a daemon started for the instance
// directory dir: one of its arguments is a path in dir (its --config).
// This keeps a reused pid from being killed.
func ownsDir(cmdline []byte, dir string) bool {
	dir = filepath.Clean(dir)
	for _, a := range bytes.Split(cmdline, []byte{0}) {
		if s := string(a); strings.HasPrefix(s, dir+"/") {
			return true
		}
	}
	return false
}

// killLeftover kills (SIGKILL, its whole process group) the daemon an
// earlier run left in dir, if its pid file names a process that is still
// running for dir, and waits until it is gone.
func killLeftover(dir string) error {
	pid, err := readPidFile(filepath.Join(dir, PidFileName))
	if err != nil || pid <= 0 {
		return nil // never started, or gone with its pid file unreadable
	}
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil || !ownsDir(cmdline, dir) {
		return nil // exited, or the pid now belongs to someone else
	}
	if err := killGroup(pid); err != nil {
		return fmt.Errorf("kill leftover buildkitd %d: %w", pid, err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for processAlive(pid) {
		if time.Now().After(deadline) {
			return fmt.Errorf("leftover buildkitd %d still running after SIGKILL", pid)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return nil
}

// processAlive reports whether pid runs (a zombie does not count).
func processAlive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// pid (comm) STATE ...; comm may hold spaces and parentheses.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 || i+2 >= len(b) {
		return false
	}
	return b[i+2] != 'Z' && b[i+2] != 'X'
}

// removeInstanceDir removes an instance directory whose daemon is no
// longer running: its build containers, then whatever is still mounted
// below it, then the directory itself. Each step's time goes to log at
// debug level.
func removeInstanceDir(ctx context.Context, log *slog.Logger, runc, dir string) error {
	var errs []error
	t := time.Now()
	step := func(name string, err error) {
		if err != nil {
			errs = append(errs, err)
		}
		log.Debug("ephemeral buildkitd cleanup", "dir", dir, "step", name, "took", time.Since(t).Round(time.Millisecond), "err", err)
		t = time.Now()
	}
	step("runc delete", removeRuncContainers(ctx, runc, filepath.Join(dir, RootName)))
	step("unmount", unmountUnder(dir))
	err := os.RemoveAll(dir)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		err = fmt.Errorf("remove %s: %w", dir, err)
	}
	step("remove", err)
	return errors.Join(errs...)
}

// logTail returns the last lines of the file at path (at most n lines and
// 8 KiB), for an error message; "" when it cannot be read.
func logTail(path string, n int) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	const maxBytes = 8 << 10
	if st, err := f.Stat(); err == nil && st.Size() > maxBytes {
		_, _ = f.Seek(st.Size()-maxBytes, io.SeekStart)
	}
	b, _ := io.ReadAll(io.LimitReader(f, maxBytes))
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// lookPathIn finds an executable named name in the directories of the
// PATH-style list path.
func lookPathIn(name, path string) string {
	for _, d := range filepath.SplitList(path) {
		if d == "" {
			continue
		}
		p := filepath.Join(d, name)
		if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0 {
			return p
		}
	}
	return ""
}
