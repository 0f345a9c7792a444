package version

import (
	"bytes"
	"runtime"
	"runtime/debug"
	"strings"
	"testing"
)

func TestFromBuildInfo(t *testing.T) {
	bi := &debug.BuildInfo{
		GoVersion: "go1.26.8",
		Main:      debug.Module{Path: "github.com/buildsvc/buildsvc", Version: "v1.2.0"},
		Deps: []*debug.Module{
			{Path: "github.com/urfave/cli/v2", Version: "v2.27.7"},
			{Path: "github.com/moby/buildkit", Version: "v0.34.2"},
		},
		Settings: []debug.BuildSetting{
			{Key: "GOOS", Value: "linux"}, {Key: "GOARCH", Value: "arm64"},
			{Key: "vcs", Value: "git"},
			{Key: "vcs.revision", Value: "60114eb0123456789abcdef0123456789abcdef0"},
			{Key: "vcs.modified", Value: "true"},
		},
	}
	want := Info{Version: "v1.2.0", Revision: "60114eb0123456789abcdef0123456789abcdef0", Modified: true,
		GoVersion: "go1.26.8", Platform: "linux/arm64", BuildKit: "v0.34.2"}
	if got := FromBuildInfo(bi); got != want {
		t.Errorf("FromBuildInfo = %+v, want %+v", got, want)
	}

	bi.Deps[1].Replace = &debug.Module{Path: "../buildkit", Version: ""}
	if got := FromBuildInfo(bi).BuildKit; got != "v0.34.2 (replaced by ../buildkit)" {
		t.Errorf("replaced BuildKit = %q", got)
	}
}

func TestWrite(t *testing.T) {
	tests := []struct {
		info Info
		want string
	}{
		{
			Info{Version: "v1.2.0", Revision: "abc", Modified: true, GoVersion: "go1.26.8", Platform: "linux/amd64", BuildKit: "v0.34.2"},
			"buildsvc  v1.2.0\ncommit    abc (modified)\ngo        go1.26.8 linux/amd64\nbuildkit  v0.34.2\n",
		},
		{
			// A test binary or a build outside git: no vcs stamp, no BuildKit.
			Info{Version: "(devel)", GoVersion: "go1.26.8"},
			"buildsvc  (devel)\ncommit    unknown\ngo        go1.26.8\nbuildkit  unknown\n",
		},
	}
	for _, tt := range tests {
		var b bytes.Buffer
		if err := tt.info.Write(&b, "buildsvc"); err != nil {
			t.Fatal(err)
		}
		if b.String() != tt.want {
			t.Errorf("Write(%+v) =\n%s\nwant\n%s", tt.info, b.String(), tt.want)
		}
	}
}

func TestGet(t *testing.T) {
	if got := Get(); got.GoVersion != runtime.Version() || !strings.HasPrefix(got.GoVersion, "go") {
		t.Errorf("Get().GoVersion = %q, want %q", got.GoVersion, runtime.Version())
	}
}
