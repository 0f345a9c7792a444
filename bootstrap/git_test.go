package bootstrap

import (
	"debug/elf"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
)

// A fake host is a map from an absolute path to what is there: "dir", a
// symlink "-> TARGET", or a regular file whose content is the value, or
// its own path when the value is empty. Parent directories are implied.
type fakeTree map[string]string

func (ft fakeTree) make(t *testing.T) string {
	t.Helper()
	root := t.TempDir()
	for _, p := range keys(ft) {
		v := ft[p]
		hp := filepath.Join(root, p)
		if err := os.MkdirAll(filepath.Dir(hp), 0o755); err != nil {
			t.Fatal(err)
		}
		var err error
		switch {
		case v == "dir":
			err = os.MkdirAll(hp, 0o755)
		case strings.HasPrefix(v, "-> "):
			err = os.Symlink(strings.TrimPrefix(v, "-> "), hp)
		default:
			if v == "" {
				v = p
			}
			err = os.WriteFile(hp, []byte(v), 0o755)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	return root
}

// with returns a copy of ft with the changes; an empty change removes a
// path.
func (ft fakeTree) with(changes fakeTree) fakeTree {
	out := fakeTree{}
	for k, v := range ft {
		out[k] = v
	}
	for k, v := range changes {
		if v == "-" {
			delete(out, k)
			continue
		}
		out[k] = v
	}
	return out
}

// fakeELF maps a file's real path under the fake root to its ELF
// information; any other file is not ELF.
type fakeELF map[string]elfInfo

func (fe fakeELF) reader(root string) func(string) (elfInfo, error) {
	return func(name string) (elfInfo, error) {
		rel, err := filepath.Rel(root, name)
		if err != nil {
			return elfInfo{}, err
		}
		if info, ok := fe["/"+filepath.ToSlash(rel)]; ok {
			return info, nil
		}
		return elfInfo{}, fmt.Errorf("%s: %w", name, errNotELF)
	}
}

const interp = "/lib64/ld-linux-x86-64.so.2"

func x64(needed ...string) elfInfo {
	return elfInfo{Class: elf.ELFCLASS64, Machine: elf.EM_X86_64, Interp: interp, Needed: needed}
}

func x64lib(needed ...string) elfInfo {
	return elfInfo{Class: elf.ELFCLASS64, Machine: elf.EM_X86_64, Needed: needed}
}

// debianGit is Debian 12's git on a merged-/usr host, trimmed: /lib and
// /lib64 are symlinks into /usr, the loader is reached through two
// symlinks, libraries have soname symlinks, /usr/lib/git-core/git is a
// second copy of /usr/bin/git and git-remote-https a symlink.
var debianGit = fakeTree{
	"/bin":                            "-> usr/bin",
	"/lib":                            "-> usr/lib",
	"/lib64":                          "-> usr/lib64",
	"/usr/lib64/ld-linux-x86-64.so.2": "-> /lib/x86_64-linux-gnu/ld-linux-x86-64.so.2",
	"/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2":    "",
	"/usr/lib/x86_64-linux-gnu/libc.so.6":               "",
	"/usr/lib/x86_64-linux-gnu/libz.so.1":               "-> libz.so.1.2.13",
	"/usr/lib/x86_64-linux-gnu/libz.so.1.2.13":          "",
	"/usr/lib/x86_64-linux-gnu/libcurl-gnutls.so.4":     "-> libcurl-gnutls.so.4.8.0",
	"/usr/lib/x86_64-linux-gnu/libcurl-gnutls.so.4.8.0": "",
	"/usr/lib/x86_64-linux-gnu/libgnutls.so.30":         "",
	"/usr/lib/x86_64-linux-gnu/libunrelated.so.1":       "",
	"/usr/bin/git":                                      "the git binary",
	"/usr/bin/unrelated":                                "",
	"/usr/lib/git-core/git":                             "the git binary",
	"/usr/lib/git-core/git-remote-http":                 "",
	"/usr/lib/git-core/git-remote-https":                "-> git-remote-http",
	"/usr/lib/git-core/git-sh-setup":                    "",
	"/usr/share/git-core/templates/description":         "",
	"/usr/share/git-core/templates/branches":            "dir",
	"/usr/share/git-core/templates/hooks/update.sample": "",
}

var debianELF = fakeELF{
	"/usr/bin/git":                                      x64("libz.so.1", "libc.so.6"),
	"/usr/lib/git-core/git":                             x64("libz.so.1", "libc.so.6"),
	"/usr/lib/git-core/git-remote-http":                 x64("libcurl-gnutls.so.4", "libz.so.1", "libc.so.6"),
	"/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2":    x64lib(),
	"/usr/lib/x86_64-linux-gnu/libc.so.6":               {Class: elf.ELFCLASS64, Machine: elf.EM_X86_64, Interp: interp, Needed: []string{"ld-linux-x86-64.so.2"}},
	"/usr/lib/x86_64-linux-gnu/libz.so.1.2.13":          x64lib("libc.so.6"),
	"/usr/lib/x86_64-linux-gnu/libcurl-gnutls.so.4.8.0": x64lib("libgnutls.so.30", "libz.so.1", "libc.so.6"),
	"/usr/lib/x86_64-linux-gnu/libgnutls.so.30":         x64lib("libc.so.6"),
}

// debianFiles is what the builder gets of debianGit.
var debianFiles = []string{
	"l /lib -> usr/lib",
	"l /lib64 -> usr/lib64",
	"d /usr",
	"d /usr/bin",
	"f /usr/bin/git",
	"d /usr/lib",
	"d /usr/lib/git-core",
	"l /usr/lib/git-core/git -> /usr/bin/git",
	"f /usr/lib/git-core/git-remote-http",
	"l /usr/lib/git-core/git-remote-https -> git-remote-http",
	"d /usr/lib/x86_64-linux-gnu",
	"f /usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2",
	"f /usr/lib/x86_64-linux-gnu/libc.so.6",
	"l /usr/lib/x86_64-linux-gnu/libcurl-gnutls.so.4 -> libcurl-gnutls.so.4.8.0",
	"f /usr/lib/x86_64-linux-gnu/libcurl-gnutls.so.4.8.0",
	"f /usr/lib/x86_64-linux-gnu/libgnutls.so.30",
	"l /usr/lib/x86_64-linux-gnu/libz.so.1 -> libz.so.1.2.13",
	"f /usr/lib/x86_64-linux-gnu/libz.so.1.2.13",
	"d /usr/lib64",
	"l /usr/lib64/ld-linux-x86-64.so.2 -> /lib/x86_64-linux-gnu/ld-linux-x86-64.so.2",
	"d /usr/share",
	"d /usr/share/git-core",
	"d /usr/share/git-core/templates",
	"d /usr/share/git-core/templates/branches",
	"f /usr/share/git-core/templates/description",
	"d /usr/share/git-core/templates/hooks",
	"f /usr/share/git-core/templates/hooks/update.sample",
}

var debianLibs = []string{
	"/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2",
	"/lib/x86_64-linux-gnu/libc.so.6",
	"/lib/x86_64-linux-gnu/libcurl-gnutls.so.4",
	"/lib/x86_64-linux-gnu/libgnutls.so.30",
	"/lib/x86_64-linux-gnu/libz.so.1",
	"/lib64/ld-linux-x86-64.so.2",
}

func listing(files []HostFile) []string {
	var out []string
	for _, f := range files {
		switch f.Kind {
		case KindDir:
			out = append(out, "d "+f.Path)
		case KindFile:
			out = append(out, "f "+f.Path)
		case KindSymlink:
			out = append(out, "l "+f.Path+" -> "+f.Target)
		}
	}
	return out
}

func collectFake(t *testing.T, tree fakeTree, elfs fakeELF, goarch string) (*GitFiles, string, error) {
	t.Helper()
	root := tree.make(t)
	c := newCollector(root)
	c.readELF = elfs.reader(root)
	g, err := collectGitWith(c, goarch)
	return g, root, err
}

func TestCollectGit(t *testing.T) {
	// split is the same host without merged /usr: real /lib and /lib64.
	split := fakeTree{}
	splitELF := fakeELF{}
	for p, v := range debianGit {
		switch {
		case p == "/bin" || p == "/lib" || p == "/lib64" || p == "/usr/lib64/ld-linux-x86-64.so.2":
		case strings.HasPrefix(p, "/usr/lib/x86_64-linux-gnu/"):
			split["/lib/x86_64-linux-gnu/"+filepath.Base(p)] = v
		default:
			split[p] = v
		}
	}
	split["/lib64/ld-linux-x86-64.so.2"] = "-> /lib/x86_64-linux-gnu/ld-linux-x86-64.so.2"
	for p, v := range debianELF {
		splitELF[strings.Replace(p, "/usr/lib/x86_64-linux-gnu/", "/lib/x86_64-linux-gnu/", 1)] = v
	}

	for _, tc := range []struct {
		name      string
		tree      fakeTree
		elfs      fakeELF
		files     []string // nil: debianFiles
		libraries []string // nil: debianLibs
	}{
		{name: "merged /usr", tree: debianGit, elfs: debianELF},
		{
			name: "split /usr",
			tree: split,
			elfs: splitELF,
			files: []string{
				"d /lib",
				"d /lib/x86_64-linux-gnu",
				"f /lib/x86_64-linux-gnu/ld-linux-x86-64.so.2",
				"f /lib/x86_64-linux-gnu/libc.so.6",
				"l /lib/x86_64-linux-gnu/libcurl-gnutls.so.4 -> libcurl-gnutls.so.4.8.0",
				"f /lib/x86_64-linux-gnu/libcurl-gnutls.so.4.8.0",
				"f /lib/x86_64-linux-gnu/libgnutls.so.30",
				"l /lib/x86_64-linux-gnu/libz.so.1 -> libz.so.1.2.13",
				"f /lib/x86_64-linux-gnu/libz.so.1.2.13",
				"d /lib64",
				"l /lib64/ld-linux-x86-64.so.2 -> /lib/x86_64-linux-gnu/ld-linux-x86-64.so.2",
				"d /usr",
				"d /usr/bin",
				"f /usr/bin/git",
				"d /usr/lib",
				"d /usr/lib/git-core",
				"l /usr/lib/git-core/git -> /usr/bin/git",
				"f /usr/lib/git-core/git-remote-http",
				"l /usr/lib/git-core/git-remote-https -> git-remote-http",
				"d /usr/share",
				"d /usr/share/git-core",
				"d /usr/share/git-core/templates",
				"d /usr/share/git-core/templates/branches",
				"f /usr/share/git-core/templates/description",
				"d /usr/share/git-core/templates/hooks",
				"f /usr/share/git-core/templates/hooks/update.sample",
			},
		},
		{
			// The loader skips a library of another class or machine in an
			// earlier directory, and so does the collector: libz.so.1 is
			// then /lib/libz.so.1.
			name: "32-bit library first in the search path",
			tree: debianGit.with(fakeTree{
				"/usr/lib/x86_64-linux-gnu/libz.so.1":      "a 32-bit libz",
				"/usr/lib/x86_64-linux-gnu/libz.so.1.2.13": "-",
				"/usr/lib/libz.so.1":                       "",
			}),
			elfs: debianELF.with(fakeELF{
				"/usr/lib/x86_64-linux-gnu/libz.so.1": {Class: elf.ELFCLASS32, Machine: elf.EM_386},
				"/usr/lib/libz.so.1":                  x64lib("libc.so.6"),
			}),
			files: slices.Insert(slices.DeleteFunc(slices.Clone(debianFiles), func(s string) bool { return strings.Contains(s, "libz") }),
				10, "f /usr/lib/libz.so.1"),
			libraries: []string{
				"/lib/libz.so.1",
				"/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2",
				"/lib/x86_64-linux-gnu/libc.so.6",
				"/lib/x86_64-linux-gnu/libcurl-gnutls.so.4",
				"/lib/x86_64-linux-gnu/libgnutls.so.30",
				"/lib64/ld-linux-x86-64.so.2",
			},
		},
		{
			// DT_RUNPATH with $ORIGIN comes before the default search path.
			name: "runpath",
			tree: debianGit.with(fakeTree{"/usr/lib/git-core/private/libgnutls.so.30": ""}),
			elfs: debianELF.with(fakeELF{
				"/usr/lib/git-core/git-remote-http": {Class: elf.ELFCLASS64, Machine: elf.EM_X86_64, Interp: interp,
					Needed: []string{"libgnutls.so.30", "libc.so.6"}, RunPath: []string{"$ORIGIN/private"}},
				"/usr/lib/git-core/private/libgnutls.so.30": x64lib("libc.so.6"),
			}),
			files: []string{
				"l /lib -> usr/lib",
				"l /lib64 -> usr/lib64",
				"d /usr",
				"d /usr/bin",
				"f /usr/bin/git",
				"d /usr/lib",
				"d /usr/lib/git-core",
				"l /usr/lib/git-core/git -> /usr/bin/git",
				"f /usr/lib/git-core/git-remote-http",
				"l /usr/lib/git-core/git-remote-https -> git-remote-http",
				"d /usr/lib/git-core/private",
				"f /usr/lib/git-core/private/libgnutls.so.30",
				"d /usr/lib/x86_64-linux-gnu",
				"f /usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2",
				"f /usr/lib/x86_64-linux-gnu/libc.so.6",
				"l /usr/lib/x86_64-linux-gnu/libz.so.1 -> libz.so.1.2.13",
				"f /usr/lib/x86_64-linux-gnu/libz.so.1.2.13",
				"d /usr/lib64",
				"l /usr/lib64/ld-linux-x86-64.so.2 -> /lib/x86_64-linux-gnu/ld-linux-x86-64.so.2",
				"d /usr/share",
				"d /usr/share/git-core",
				"d /usr/share/git-core/templates",
				"d /usr/share/git-core/templates/branches",
				"f /usr/share/git-core/templates/description",
				"d /usr/share/git-core/templates/hooks",
				"f /usr/share/git-core/templates/hooks/update.sample",
			},
			libraries: []string{
				"/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2",
				"/lib/x86_64-linux-gnu/libc.so.6",
				"/lib/x86_64-linux-gnu/libz.so.1",
				"/lib64/ld-linux-x86-64.so.2",
				"/usr/lib/git-core/private/libgnutls.so.30",
			},
		},
		{
			// A static git (and helpers that are scripts) needs nothing more.
			name:      "static git",
			tree:      debianGit,
			elfs:      fakeELF{"/usr/bin/git": {Class: elf.ELFCLASS64, Machine: elf.EM_X86_64}},
			files:     []string{"d /usr", "d /usr/bin", "f /usr/bin/git", "d /usr/lib", "d /usr/lib/git-core", "l /usr/lib/git-core/git -> /usr/bin/git", "f /usr/lib/git-core/git-remote-http", "l /usr/lib/git-core/git-remote-https -> git-remote-http", "d /usr/share", "d /usr/share/git-core", "d /usr/share/git-core/templates", "d /usr/share/git-core/templates/branches", "f /usr/share/git-core/templates/description", "d /usr/share/git-core/templates/hooks", "f /usr/share/git-core/templates/hooks/update.sample"},
			libraries: []string{},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g, root, err := collectFake(t, tc.tree, tc.elfs, "amd64")
			if err != nil {
				t.Fatal(err)
			}
			want := tc.files
			if want == nil {
				want = debianFiles
			}
			// Every tree has the builder's own system gitconfig.
			want = append([]string{"d /etc", "f /etc/gitconfig"}, want...)
			if got := listing(g.Files); !slices.Equal(got, want) {
				t.Errorf("files:\n  %s\nwant:\n  %s", strings.Join(got, "\n  "), strings.Join(want, "\n  "))
			}
			wantLibs := tc.libraries
			if wantLibs == nil {
				wantLibs = debianLibs
			}
			if len(g.Libraries) != len(wantLibs) || (len(wantLibs) > 0 && !slices.Equal(g.Libraries, wantLibs)) {
				t.Errorf("libraries = %q, want %q", g.Libraries, wantLibs)
			}
			for _, f := range g.Files {
				if f.Kind != KindFile {
					continue
				}
				if f.Path == GitSystemConfigPath {
					if f.Source != "" || f.Data != GitSystemConfig || f.Mode != 0o644 || f.Size != int64(len(f.Data)) {
						t.Errorf("system gitconfig = %+v", f)
					}
					continue
				}
				if f.Source != filepath.Join(root, f.Path) {
					t.Errorf("%s: source %s", f.Path, f.Source)
				}
				if fi, err := os.Stat(f.Source); err != nil || fi.Size() != f.Size || fi.Mode().Perm() != f.Mode {
					t.Errorf("%s: size %d mode %o, host %v %v", f.Path, f.Size, f.Mode, fi, err)
				}
			}
		})
	}
}

func (fe fakeELF) with(changes fakeELF) fakeELF {
	out := fakeELF{}
	for k, v := range fe {
		out[k] = v
	}
	for k, v := range changes {
		out[k] = v
	}
	return out
}

func TestCollectGitErrors(t *testing.T) {
	for _, tc := range []struct {
		name   string
		tree   fakeTree
		elfs   fakeELF
		goarch string
		want   []string // substrings of the error
		is     error
	}{
		{
			name: "git not installed",
			tree: fakeTree{"/usr/bin/busybox": ""},
			want: []string{"git is not installed", "apt-get install git", "--no-git"},
			is:   ErrNoGit,
		},
		{
			name: "missing library",
			tree: debianGit.with(fakeTree{"/usr/lib/x86_64-linux-gnu/libgnutls.so.30": "-"}),
			elfs: debianELF,
			want: []string{"needs libgnutls.so.30", "/lib/x86_64-linux-gnu, /usr/lib/x86_64-linux-gnu, /lib, /usr/lib"},
		},
		{
			name: "dangling soname link",
			tree: debianGit.with(fakeTree{"/usr/lib/x86_64-linux-gnu/libz.so.1.2.13": "-"}),
			elfs: debianELF,
			want: []string{"needs libz.so.1"},
		},
		{
			name: "missing helper",
			tree: debianGit.with(fakeTree{"/usr/lib/git-core/git-remote-http": "-"}),
			elfs: debianELF,
			want: []string{"git-remote-http", "apt-get install --reinstall git"},
		},
		{
			name: "missing templates",
			tree: debianGit.with(fakeTree{"/usr/share/git-core/templates/description": "-", "/usr/share/git-core/templates/branches": "-", "/usr/share/git-core/templates/hooks/update.sample": "-", "/usr/share/git-core/placeholder": ""}),
			elfs: debianELF,
			want: []string{"templates", "no such file"},
		},
		{
			name:   "another architecture",
			tree:   debianGit,
			elfs:   debianELF,
			goarch: "arm64",
			want:   []string{"built for EM_X86_64", "arm64"},
		},
		{
			name: "helper of another machine",
			tree: debianGit,
			elfs: debianELF.with(fakeELF{"/usr/lib/git-core/git-remote-http": {Class: elf.ELFCLASS64, Machine: elf.EM_AARCH64}}),
			want: []string{"git-remote-http is ELFCLASS64 EM_AARCH64"},
		},
		{
			name: "symlink loop",
			tree: debianGit.with(fakeTree{"/usr/lib/x86_64-linux-gnu/libz.so.1": "-> libz.so.1", "/usr/lib/x86_64-linux-gnu/libz.so.1.2.13": "-"}),
			elfs: debianELF.with(fakeELF{"/usr/bin/git": x64("/usr/lib/x86_64-linux-gnu/libz.so.1")}),
			want: []string{"too many levels of symbolic links"},
		},
		{
			// /bin is a symlink on the host but busybox's directory in the
			// builder.
			name: "through /bin",
			tree: debianGit.with(fakeTree{"/usr/bin/libextra.so": ""}),
			elfs: debianELF.with(fakeELF{"/usr/bin/git": x64("/bin/libextra.so", "libc.so.6")}),
			want: []string{"replace the builder's /bin"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			goarch := tc.goarch
			if goarch == "" {
				goarch = "amd64"
			}
			_, _, err := collectFake(t, tc.tree, tc.elfs, goarch)
			if err == nil {
				t.Fatal("no error")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
			if tc.is != nil && !errors.Is(err, tc.is) {
				t.Errorf("error %v is not %v", err, tc.is)
			}
		})
	}
}

func TestDedupe(t *testing.T) {
	root := fakeTree{
		"/a/one":   "same",
		"/b/two":   "same",
		"/c/three": "same",
		"/d/other": "diff", // same size, other content
		"/e/big":   "same but longer",
	}.make(t)
	f := func(p string, mode fs.FileMode) HostFile {
		fi, err := os.Stat(filepath.Join(root, p))
		if err != nil {
			t.Fatal(err)
		}
		return HostFile{Path: p, Kind: KindFile, Mode: mode, Source: filepath.Join(root, p), Size: fi.Size()}
	}
	files := []HostFile{f("/a/one", 0o755), f("/b/two", 0o755), f("/c/three", 0o644), f("/d/other", 0o755), f("/e/big", 0o755)}
	if err := dedupe(files); err != nil {
		t.Fatal(err)
	}
	want := []string{
		"f /a/one",
		"l /b/two -> /a/one",
		"f /c/three", // another mode: a symlink would change it
		"f /d/other",
		"f /e/big",
	}
	if got := listing(files); !slices.Equal(got, want) {
		t.Errorf("dedupe = %q, want %q", got, want)
	}
}

func TestStageTree(t *testing.T) {
	g, root, err := collectFake(t, debianGit, debianELF, "amd64")
	if err != nil {
		t.Fatal(err)
	}
	// A read-only directory on the host stays read-only in the stage,
	// and is still filled.
	for i, f := range g.Files {
		if f.Path == "/usr/share/git-core/templates/branches" {
			g.Files[i].Mode = 0o555
		}
	}
	dir := t.TempDir()
	if err := os.Chmod(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := stageTree(dir, g.Files); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { removeTree(dir) })
	if fi, err := os.Stat(dir); err != nil || fi.Mode().Perm() != 0o755 {
		t.Errorf("stage root %v %v, want mode 755", fi, err)
	}
	var staged []string
	err = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == dir {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		staged = append(staged, "/"+filepath.ToSlash(rel))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	var want []string
	for _, f := range g.Files {
		want = append(want, f.Path)
	}
	if !slices.Equal(staged, want) {
		t.Errorf("staged %q\nwant %q", staged, want)
	}
	for _, f := range g.Files {
		p := filepath.Join(dir, f.Path)
		fi, err := os.Lstat(p)
		if err != nil {
			t.Fatal(err)
		}
		switch f.Kind {
		case KindDir:
			if !fi.IsDir() || fi.Mode().Perm() != f.Mode {
				t.Errorf("%s: %v, want a directory of mode %o", f.Path, fi.Mode(), f.Mode)
			}
		case KindSymlink:
			if target, err := os.Readlink(p); err != nil || target != f.Target {
				t.Errorf("%s -> %q %v, want -> %s", f.Path, target, err, f.Target)
			}
		case KindFile:
			got, err := os.ReadFile(p)
			host, _ := os.ReadFile(filepath.Join(root, f.Path))
			if f.Source == "" {
				host = []byte(f.Data)
			}
			if err != nil || string(got) != string(host) || fi.Mode().Perm() != f.Mode {
				t.Errorf("%s: %q mode %o %v, want the host's %q mode %o", f.Path, got, fi.Mode().Perm(), err, host, f.Mode)
			}
		}
	}
	// The staged git resolves its loader through the symlinks, as the
	// image will.
	if dt, err := os.ReadFile(filepath.Join(dir, "usr/lib/git-core/git-remote-https")); err != nil || string(dt) != "/usr/lib/git-core/git-remote-http" {
		t.Errorf("git-remote-https reads %q %v", dt, err)
	}
}

func TestReadELF(t *testing.T) {
	text := filepath.Join(t.TempDir(), "script")
	mustWrite(t, text, "#!/bin/sh\necho hi\n")
	if _, err := readELF(text); !errors.Is(err, errNotELF) {
		t.Errorf("a script: err = %v, want errNotELF", err)
	}
	if _, err := readELF(text + ".missing"); err == nil || errors.Is(err, errNotELF) {
		t.Errorf("a missing file: err = %v", err)
	}

	// The host's git, when it is there: what ldd shows of it.
	if _, err := os.Stat(GitPath); err != nil {
		t.Skipf("%s: %v", GitPath, err)
	}
	info, err := readELF(GitPath)
	if err != nil {
		t.Fatal(err)
	}
	if info.Interp == "" || !strings.HasPrefix(info.Interp, "/") {
		t.Errorf("git's interpreter = %q", info.Interp)
	}
	if !slices.Contains(info.Needed, "libc.so.6") {
		t.Errorf("git needs %q, no libc.so.6", info.Needed)
	}
}

// On this machine's real git, when it is installed: every library ldd
// lists is collected.
func TestCollectHostGit(t *testing.T) {
	if _, err := os.Stat(GitPath); err != nil {
		t.Skipf("%s: %v", GitPath, err)
	}
	g, err := collectGit("/", runtime.GOARCH)
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	for _, l := range g.Libraries {
		names[filepath.Base(l)] = true
	}
	for _, want := range []string{"libc.so.6", "libz.so.1", "libcurl-gnutls.so.4", "libgnutls.so.30", "libnettle.so.8"} {
		if !names[want] {
			t.Errorf("libraries %q lack %s", g.Libraries, want)
		}
	}
	var paths []string
	for _, f := range g.Files {
		paths = append(paths, f.Path)
	}
	for _, want := range []string{GitPath, GitExecDir + "/git", GitExecDir + "/git-remote-http", GitExecDir + "/git-remote-https", GitTemplatesDir} {
		if !slices.Contains(paths, want) {
			t.Errorf("no %s in the collected files", want)
		}
	}
	t.Logf("%d files, %d libraries, %.1f MB", len(g.Files), len(g.Libraries), float64(g.Size())/1e6)
}

// The builder's git trusts the CA bundle even when http.sslCAPath points
// elsewhere.
func TestGitSystemConfig(t *testing.T) {
	if !strings.Contains(GitSystemConfig, "[http]\n\tsslCAInfo = "+CACertsPath+"\n") {
		t.Errorf("system gitconfig = %q", GitSystemConfig)
	}
}
