package main

import (
	"runtime"
	"runtime/debug"
	"strings"
	"testing"
)

// --version and the version command print the same block: the program and
// its version, the commit, the Go version and BuildKit's.
func TestVersion(t *testing.T) {
	bk := "unknown"
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, d := range bi.Deps {
			if d.Path == "github.com/moby/buildkit" {
				bk = d.Version
			}
		}
	}
	var outputs []string
	for _, args := range [][]string{{"--version"}, {"version"}} {
		r := runCLI(t, args...)
		if r.code != exitOK || r.stderr != "" {
			t.Fatalf("%s: exit code %d, stderr %q", args, r.code, r.stderr)
		}
		lines := strings.Split(strings.TrimSuffix(r.stdout, "\n"), "\n")
		fields := map[string]string{}
		for _, l := range lines {
			name, value, _ := strings.Cut(l, " ")
			fields[name] = strings.TrimSpace(value)
		}
		if len(lines) != 4 || fields["buildsvc"] == "" || fields["commit"] == "" ||
			!strings.HasPrefix(fields["go"], runtime.Version()+" ") || fields["buildkit"] != bk {
			t.Errorf("%s printed\n%s\nwant buildsvc, commit, go %s and buildkit %s lines", args, r.stdout, runtime.Version(), bk)
		}
		outputs = append(outputs, r.stdout)
	}
	if outputs[0] != outputs[1] {
		t.Errorf("--version and version differ:\n%s\n%s", outputs[0], outputs[1])
	}
	if r := runCLI(t, "version", "extra"); r.code != exitUsage || !strings.Contains(r.stderr, `unexpected argument "extra"`) {
		t.Errorf("version extra: exit code %d, stderr %q; want 2", r.code, r.stderr)
	}
}
