package bootstrap

import (
	"bytes"
	"crypto/sha256"
	"debug/elf"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
)

// Where Debian's git package puts what the builder needs. The exec path
// and the template directory are compiled into git, so the builder has
// every file at the same path as the host.
const (
	GitPath         = "/usr/bin/git"
	GitExecDir      = "/usr/lib/git-core"
	GitTemplatesDir = "/usr/share/git-core/templates"
)

// GitHelpers are the programs in GitExecDir that git runs to fetch over
// HTTP(S), as `GIT_TRACE=1 git fetch https://…` shows: git-remote-https (a
// symlink to git-remote-http), which runs `git fetch-pack` through
// GitExecDir/git. Every command Go's module fetcher runs (init, remote,
// config, ls-remote, fetch, log, cat-file, archive, index-pack) is a
// builtin of git itself. git-remote-http is the one program that links
// libcurl-gnutls, and with it GnuTLS, nettle, nghttp2, libssh2, libpsl,
// libidn2, zstd, Kerberos and LDAP.
var GitHelpers = []string{"git", "git-remote-http", "git-remote-https"}

// GitSystemConfigPath is git's system-wide configuration file.
const GitSystemConfigPath = "/etc/gitconfig"

// GitSystemConfig is the builder's /etc/gitconfig. Debian's git fetches
// over HTTPS with libcurl-gnutls, which has no CA bundle file compiled in:
// it trusts the directory /etc/ssl/certs (where the builder has only the
// bundle, which GnuTLS reads whole). An http.sslCAPath, as the build
// service sets for an internal CA, replaces that directory, and git would
// then trust the internal CA alone. Naming the bundle as http.sslCAInfo
// keeps the public roots whatever http.sslCAPath says; GIT_SSL_CAINFO or a
// user's http.sslCAInfo still override it.
const GitSystemConfig = "# Written by buildsvc bootstrap: trust the CA bundle whatever http.sslCAPath says.\n" +
	"[http]\n\tsslCAInfo = " + CACertsPath + "\n"

// ErrNoGit is wrapped by the error of Resolve when git is not installed on
// the host.
var ErrNoGit = errors.New("git is not installed on this machine")

// FileKind is the kind of a HostFile.
type FileKind int

// The kinds of HostFile.
const (
	KindDir FileKind = iota + 1
	KindFile
	KindSymlink
)

// HostFile is one entry of a tree copied from the host into an image, at
// the same absolute path.
type HostFile struct {
	// Path is the entry's absolute, clean path, in the image and on the
	// host (under the root it was collected from).
	Path string
	Kind FileKind
	// Mode is a directory's or a file's permission bits.
	Mode fs.FileMode
	// Source is the host file a KindFile's content comes from; when it is
	// empty, the content is Data.
	Source string
	Data   string
	// Size is a KindFile's size in bytes.
	Size int64
	// Target is a KindSymlink's target, as on the host.
	Target string
}

// GitFiles is the host's git as the builder gets it: the git binary, the
// helpers it runs for HTTP(S) fetches, its templates, every shared library
// these load and the dynamic loader, each at its path on the host, with
// the directories and symlinks on the way (on a merged-/usr host, /lib is
// a symlink to usr/lib, and the loader /lib64/ld-linux-x86-64.so.2 is
// reached through two), so that the loader finds every library in its
// default search path without an ld.so.cache; and a system gitconfig of
// its own (GitSystemConfig), not the host's.
type GitFiles struct {
	// Files is sorted by path, so a directory comes before what it holds.
	Files []HostFile
	// Libraries are the shared libraries, by the path the dynamic loader
	// opens, sorted; the loader itself is one of them.
	Libraries []string
}

// Size is the total size of the files, in bytes.
func (g *GitFiles) Size() int64 {
	var n int64
	for _, f := range g.Files {
		n += f.Size
	}
	return n
}

// elfInfo is what the dynamic loader reads of one ELF file.
type elfInfo struct {
	Class   elf.Class
	Machine elf.Machine
	// Interp is the PT_INTERP path, empty for a static binary or a library
	// without one.
	Interp string
	// Needed are the DT_NEEDED entries, in order.
	Needed []string
	// RunPath are the directories of DT_RUNPATH, or of DT_RPATH when there
	// is no DT_RUNPATH.
	RunPath []string
}

// errNotELF is readELF's error for a file that is not ELF (a script).
var errNotELF = errors.New("not an ELF file")

// readELF reads an ELF file's class, machine, interpreter and dynamic
// dependencies with debug/elf.
func readELF(name string) (elfInfo, error) {
	r, err := os.Open(name)
	if err != nil {
		return elfInfo{}, err
	}
	defer r.Close()
	magic := make([]byte, len(elf.ELFMAG))
	if _, err := io.ReadFull(r, magic); err != nil || string(magic) != elf.ELFMAG {
		return elfInfo{}, fmt.Errorf("%s: %w", name, errNotELF)
	}
	f, err := elf.NewFile(r)
	if err != nil {
		return elfInfo{}, fmt.Errorf("%s: %w", name, err)
	}
	info := elfInfo{Class: f.Class, Machine: f.Machine}
	for _, p := range f.Progs {
		if p.Type != elf.PT_INTERP {
			continue
		}
		dt, err := io.ReadAll(p.Open())
		if err != nil {
			return elfInfo{}, fmt.Errorf("%s: PT_INTERP: %w", name, err)
		}
		info.Interp = string(bytes.TrimRight(dt, "\x00"))
	}
	// A static binary has no dynamic section: no entries, no error.
	if info.Needed, err = f.DynString(elf.DT_NEEDED); err != nil {
		return elfInfo{}, fmt.Errorf("%s: DT_NEEDED: %w", name, err)
	}
	runpath, err := f.DynString(elf.DT_RUNPATH)
	if err != nil {
		return elfInfo{}, fmt.Errorf("%s: DT_RUNPATH: %w", name, err)
	}
	if len(runpath) == 0 {
		if runpath, err = f.DynString(elf.DT_RPATH); err != nil {
			return elfInfo{}, fmt.Errorf("%s: DT_RPATH: %w", name, err)
		}
	}
	for _, r := range runpath {
		info.RunPath = append(info.RunPath, strings.Split(r, ":")...)
	}
	return info, nil
}

// multiarch is Debian's multiarch tuple of each machine: the loader's
// default search path starts with /lib/TUPLE and /usr/lib/TUPLE.
var multiarch = map[elf.Machine]string{
	elf.EM_X86_64:  "x86_64-linux-gnu",
	elf.EM_AARCH64: "aarch64-linux-gnu",
	elf.EM_386:     "i386-linux-gnu",
	elf.EM_ARM:     "arm-linux-gnueabihf",
	elf.EM_PPC64:   "powerpc64le-linux-gnu",
	elf.EM_S390:    "s390x-linux-gnu",
	elf.EM_RISCV:   "riscv64-linux-gnu",
}

// elfMachines is the ELF machine of each GOARCH the images can be for.
var elfMachines = map[string]elf.Machine{
	"amd64":   elf.EM_X86_64,
	"arm64":   elf.EM_AARCH64,
	"386":     elf.EM_386,
	"arm":     elf.EM_ARM,
	"ppc64le": elf.EM_PPC64,
	"s390x":   elf.EM_S390,
	"riscv64": elf.EM_RISCV,
}

// systemLibDirs is the dynamic loader's default search path, the one it
// uses when there is no /etc/ld.so.cache, as `ld.so --help` lists it on
// Debian: /lib/TUPLE, /usr/lib/TUPLE, /lib, /usr/lib.
func systemLibDirs(m elf.Machine) []string {
	if t, ok := multiarch[m]; ok {
		return []string{"/lib/" + t, "/usr/lib/" + t, "/lib", "/usr/lib"}
	}
	return []string{"/lib", "/usr/lib"}
}

// maxSymlinks is how many symlinks one path may go through, as Linux's
// limit.
const maxSymlinks = 40

// collector gathers a tree of host files. Every path is an absolute path
// under root, resolved the way the kernel would resolve it in a chroot
// there, so a test can give a fake root.
type collector struct {
	root    string
	readELF func(name string) (elfInfo, error)

	files map[string]HostFile
	libs  map[string]bool
	elfs  map[string]elfInfo // by real path
	done  map[string]bool    // ELF files whose dependencies are added
	// class and machine are the first ELF file's (git's); every other
	// must match.
	class   elf.Class
	machine elf.Machine
}

func newCollector(root string) *collector {
	return &collector{
		root:    root,
		readELF: readELF,
		files:   map[string]HostFile{},
		libs:    map[string]bool{},
		elfs:    map[string]elfInfo{},
		done:    map[string]bool{},
	}
}

// host is the host path of an absolute path under the root.
func (c *collector) host(p string) string {
	return filepath.Join(c.root, filepath.FromSlash(p))
}

// put adds an entry; adding the same entry twice is fine, two different
// ones at one path are not.
func (c *collector) put(f HostFile) error {
	if old, ok := c.files[f.Path]; ok {
		if old != f {
			return fmt.Errorf("%s is reached both as %v and as %v", f.Path, old, f)
		}
		return nil
	}
	c.files[f.Path] = f
	return nil
}

// components splits a path into its names, dropping empty ones and ".".
func components(p string) []string {
	var out []string
	for _, s := range strings.Split(p, "/") {
		if s != "" && s != "." {
			out = append(out, s)
		}
	}
	return out
}

// walk follows p name by name under the root and returns the path of what
// it names with every symlink resolved, and that file's Lstat. With record,
// every directory it passes and every symlink it follows is added, so that
// p resolves in the image as on the host.
func (c *collector) walk(p string, record bool) (string, fs.FileInfo, error) {
	rest := components(p)
	cur := "/"
	links := 0
	for len(rest) > 0 {
		next := path.Join(cur, rest[0])
		rest = rest[1:]
		fi, err := os.Lstat(c.host(next))
		if err != nil {
			return "", nil, fmt.Errorf("%s: %w", p, pathErr(err, next))
		}
		switch {
		case fi.Mode()&fs.ModeSymlink != 0:
			if links++; links > maxSymlinks {
				return "", nil, fmt.Errorf("%s: too many levels of symbolic links", p)
			}
			target, err := os.Readlink(c.host(next))
			if err != nil {
				return "", nil, fmt.Errorf("%s: %w", p, pathErr(err, next))
			}
			if record {
				if err := c.put(HostFile{Path: next, Kind: KindSymlink, Target: target}); err != nil {
					return "", nil, err
				}
			}
			if path.IsAbs(target) {
				cur = "/"
			}
			rest = append(components(target), rest...)
		case len(rest) == 0:
			return next, fi, nil
		case !fi.IsDir():
			return "", nil, fmt.Errorf("%s: %s is not a directory", p, next)
		default:
			if record {
				if err := c.put(HostFile{Path: next, Kind: KindDir, Mode: fi.Mode().Perm()}); err != nil {
					return "", nil, err
				}
			}
			cur = next
		}
	}
	fi, err := os.Lstat(c.host(cur))
	if err != nil {
		return "", nil, fmt.Errorf("%s: %w", p, pathErr(err, cur))
	}
	return cur, fi, nil
}

// pathErr replaces the host path in an *fs.PathError with the path under
// the root, so that errors name the paths a user knows.
func pathErr(err error, p string) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return &fs.PathError{Op: pe.Op, Path: p, Err: pe.Err}
	}
	return err
}

// elf reads (once) the ELF file at a real path.
func (c *collector) elf(real string) (elfInfo, error) {
	if info, ok := c.elfs[real]; ok {
		return info, nil
	}
	info, err := c.readELF(c.host(real))
	if err != nil {
		return elfInfo{}, err
	}
	c.elfs[real] = info
	return info, nil
}

// addFile adds the regular file p names, and the path to it.
func (c *collector) addFile(p string) (string, fs.FileInfo, error) {
	real, fi, err := c.walk(p, true)
	if err != nil {
		return "", nil, err
	}
	if !fi.Mode().IsRegular() {
		return "", nil, fmt.Errorf("%s is not a regular file", p)
	}
	err = c.put(HostFile{Path: real, Kind: KindFile, Mode: fi.Mode().Perm(), Source: c.host(real), Size: fi.Size()})
	return real, fi, err
}

// addProgram adds the file p names and, if it is an ELF file, its program
// interpreter and every shared library it needs, recursively, each found
// the way the dynamic loader finds it. A file that is not ELF (a script)
// is added alone.
func (c *collector) addProgram(p string) error {
	real, _, err := c.addFile(p)
	if err != nil {
		return err
	}
	if c.done[real] {
		return nil
	}
	c.done[real] = true
	info, err := c.elf(real)
	if errors.Is(err, errNotELF) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("%s: %w", p, err)
	}
	if c.machine == 0 {
		c.class, c.machine = info.Class, info.Machine
	} else if info.Class != c.class || info.Machine != c.machine {
		return fmt.Errorf("%s is %v %v, git is %v %v", p, info.Class, info.Machine, c.class, c.machine)
	}
	if info.Interp != "" {
		if err := c.addProgram(info.Interp); err != nil {
			return fmt.Errorf("program interpreter of %s: %w", p, err)
		}
		c.libs[info.Interp] = true
	}
	for _, name := range info.Needed {
		lib, err := c.findLibrary(name, real, info)
		if err != nil {
			return err
		}
		c.libs[lib] = true
		if err := c.addProgram(lib); err != nil {
			return fmt.Errorf("%s, needed by %s: %w", lib, p, err)
		}
	}
	return nil
}

// findLibrary finds a DT_NEEDED entry of the ELF file at real, as the
// dynamic loader does without an ld.so.cache: a name with a slash is a
// path; any other is looked up in the file's DT_RUNPATH (or DT_RPATH),
// with $ORIGIN expanded, then in the default search path, skipping files
// of another class or machine. It returns the path the loader opens.
func (c *collector) findLibrary(name, real string, info elfInfo) (string, error) {
	if strings.Contains(name, "/") {
		if !path.IsAbs(name) {
			return "", fmt.Errorf("%s needs %s, a relative path", real, name)
		}
		return name, nil
	}
	var dirs []string
	for _, d := range info.RunPath {
		d = strings.ReplaceAll(strings.ReplaceAll(d, "${ORIGIN}", "$ORIGIN"), "$ORIGIN", path.Dir(real))
		if path.IsAbs(d) && !strings.Contains(d, "$") {
			dirs = append(dirs, path.Clean(d))
		}
	}
	dirs = append(dirs, systemLibDirs(c.machine)...)
	for _, d := range dirs {
		cand := path.Join(d, name)
		lreal, fi, err := c.walk(cand, false)
		if err != nil || !fi.Mode().IsRegular() {
			continue
		}
		li, err := c.elf(lreal)
		if err != nil || li.Class != c.class || li.Machine != c.machine {
			continue
		}
		return cand, nil
	}
	return "", fmt.Errorf("%s needs %s, which is in none of %s", real, name, strings.Join(dirs, ", "))
}

// addTree adds a directory and everything in it, symlinks as symlinks.
func (c *collector) addTree(dir string) error {
	real, fi, err := c.walk(dir, true)
	if err != nil {
		return err
	}
	if !fi.IsDir() {
		return fmt.Errorf("%s is not a directory", dir)
	}
	top := c.host(real)
	return filepath.WalkDir(top, func(hp string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(top, hp)
		if err != nil {
			return err
		}
		p := path.Join(real, filepath.ToSlash(rel))
		fi, err := d.Info()
		if err != nil {
			return err
		}
		switch {
		case fi.IsDir():
			return c.put(HostFile{Path: p, Kind: KindDir, Mode: fi.Mode().Perm()})
		case fi.Mode().IsRegular():
			return c.put(HostFile{Path: p, Kind: KindFile, Mode: fi.Mode().Perm(), Source: hp, Size: fi.Size()})
		case fi.Mode()&fs.ModeSymlink != 0:
			target, err := os.Readlink(hp)
			if err != nil {
				return err
			}
			return c.put(HostFile{Path: p, Kind: KindSymlink, Target: target})
		default:
			return nil // sockets, devices: nothing git reads
		}
	})
}

// sorted is the collected tree, sorted by path.
func (c *collector) sorted() []HostFile {
	out := make([]HostFile, 0, len(c.files))
	for _, f := range c.files {
		out = append(out, f)
	}
	slices.SortFunc(out, func(a, b HostFile) int { return strings.Compare(a.Path, b.Path) })
	return out
}

// dedupe turns every file that has the same content and mode as a file
// earlier in files into a symlink to that one, in place. Debian ships git
// twice, as /usr/bin/git and /usr/lib/git-core/git (3.7 MB each); git
// finds its exec path from its compile-time default, not from its own
// path, so the second can be a symlink.
func dedupe(files []HostFile) error {
	type key struct {
		size int64
		mode fs.FileMode
	}
	bySize := map[key][]int{}
	for i, f := range files {
		if f.Kind == KindFile && f.Source != "" {
			k := key{f.Size, f.Mode}
			bySize[k] = append(bySize[k], i)
		}
	}
	for _, idx := range bySize {
		if len(idx) < 2 {
			continue
		}
		first := map[[sha256.Size]byte]string{}
		for _, i := range idx { // in path order
			sum, err := fileSum(files[i].Source)
			if err != nil {
				return err
			}
			if p, ok := first[sum]; ok {
				files[i] = HostFile{Path: files[i].Path, Kind: KindSymlink, Target: p}
				continue
			}
			first[sum] = files[i].Path
		}
	}
	return nil
}

func fileSum(name string) ([sha256.Size]byte, error) {
	var sum [sha256.Size]byte
	f, err := os.Open(name)
	if err != nil {
		return sum, err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return sum, err
	}
	copy(sum[:], h.Sum(nil))
	return sum, nil
}

// builderPaths are what the builder's other layers make. The git layer may
// add to their directories but not put a symlink or a file in their way.
var builderPaths = []string{"/bin", BusyboxPath, "/etc/passwd", "/etc/group", CACertsPath, "/tmp", HomePath, GoPath, GoRootPath}

// checkConflicts refuses a tree that would replace one of builderPaths, or
// a directory above one, with a symlink or a file: on a merged-/usr host,
// /bin is a symlink to usr/bin, but the builder's /bin is busybox's.
func checkConflicts(files []HostFile) error {
	for _, f := range files {
		if f.Kind == KindDir {
			continue
		}
		for _, b := range builderPaths {
			if f.Path == b || strings.HasPrefix(b, f.Path+"/") {
				return fmt.Errorf("git's files would replace the builder's %s with the host's %s", b, f.Path)
			}
		}
	}
	return nil
}

// collectGit collects the host's git under root ("/" but for tests) for
// images of the given GOARCH.
func collectGit(root, goarch string) (*GitFiles, error) {
	return collectGitWith(newCollector(root), goarch)
}

func collectGitWith(c *collector, goarch string) (*GitFiles, error) {
	if _, _, err := c.walk(GitPath, false); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("%w (no %s): install it with `apt-get install git`, or build the builder without git (--no-git), which leaves Go unable to fetch modules straight from a git host (GOPRIVATE, GONOPROXY)", ErrNoGit, GitPath)
		}
		return nil, fmt.Errorf("git: %w", err)
	}
	if err := c.addProgram(GitPath); err != nil {
		return nil, fmt.Errorf("git: %w", err)
	}
	for _, h := range GitHelpers {
		if err := c.addProgram(path.Join(GitExecDir, h)); err != nil {
			return nil, fmt.Errorf("git's helper %s (reinstall git: `apt-get install --reinstall git`): %w", h, err)
		}
	}
	if err := c.addTree(GitTemplatesDir); err != nil {
		return nil, fmt.Errorf("git's templates (reinstall git: `apt-get install --reinstall git`): %w", err)
	}
	if want, ok := elfMachines[goarch]; ok && c.machine != 0 && c.machine != want {
		return nil, fmt.Errorf("%s is built for %v, the images are for %s", GitPath, c.machine, goarch)
	}
	if err := c.put(HostFile{Path: path.Dir(GitSystemConfigPath), Kind: KindDir, Mode: 0o755}); err != nil {
		return nil, err
	}
	if err := c.put(HostFile{Path: GitSystemConfigPath, Kind: KindFile, Mode: 0o644, Data: GitSystemConfig, Size: int64(len(GitSystemConfig))}); err != nil {
		return nil, err
	}
	files := c.sorted()
	if err := dedupe(files); err != nil {
		return nil, fmt.Errorf("git: %w", err)
	}
	if err := checkConflicts(files); err != nil {
		return nil, err
	}
	g := &GitFiles{Files: files}
	for l := range c.libs {
		g.Libraries = append(g.Libraries, l)
	}
	slices.Sort(g.Libraries)
	return g, nil
}

// stageTree writes files under dir, each at its path, as the local context
// the builder's git layer is copied from. dir's own mode becomes 0755: the
// copy into the image does not change /'s, but a 0700 temporary directory
// should not stand for it. Times are left alone: BuildKit's content hash of
// a local context ignores them, and the copy sets the epoch.
func stageTree(dir string, files []HostFile) error {
	for _, f := range files {
		p := filepath.Join(dir, filepath.FromSlash(f.Path))
		var err error
		switch f.Kind {
		case KindDir:
			err = os.Mkdir(p, 0o700)
		case KindFile:
			if f.Source == "" {
				err = os.WriteFile(p, []byte(f.Data), 0o600)
				break
			}
			err = copyHostFile(f.Source, p)
		case KindSymlink:
			err = os.Symlink(f.Target, p)
		default:
			err = fmt.Errorf("%s: unknown kind %d", f.Path, f.Kind)
		}
		if err != nil {
			return fmt.Errorf("stage %s: %w", f.Path, err)
		}
	}
	// Modes last, deepest first, so that a read-only directory is filled
	// before it becomes read-only.
	for i := len(files) - 1; i >= 0; i-- {
		f := files[i]
		if f.Kind == KindSymlink {
			continue
		}
		if err := os.Chmod(filepath.Join(dir, filepath.FromSlash(f.Path)), f.Mode); err != nil {
			return fmt.Errorf("stage %s: %w", f.Path, err)
		}
	}
	return os.Chmod(dir, 0o755)
}

func copyHostFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}
