package policy

import (
	"errors"
	"strings"
	"testing"
)

func TestCheckBuildFlag(t *testing.T) {
	toolexec := Extra{BuildFlags: []string{"-toolexec"}}
	tests := []struct {
		flag    string
		extra   Extra
		refused string // the flag name the error names; "" means allowed
		denied  bool   // refused as outside the allow-list
	}{
		{flag: "-tags=netgo,osusergo"},
		{flag: "--tags=netgo"},
		{flag: "-tags=a b"},
		{flag: "-v"},
		{flag: "-x"},
		{flag: "-a"},
		{flag: "-trimpath"},
		{flag: "-mod=vendor"},
		{flag: "-mod=readonly"},
		{flag: "-buildvcs=false"},
		{flag: "-p=4"},
		{flag: "-gcflags=all=-N -l"},
		{flag: "-gcflags=-m=2"},
		{flag: "-gcflags=example.com/x/...=-l"},
		{flag: "-asmflags=-S"},
		{flag: "-pgo=off"},
		// Every injection that was accepted before.
		{flag: "-toolexec=/bin/sh -c id", refused: "-toolexec", denied: true},
		{flag: "-overlay=/tmp/o.json", refused: "-overlay", denied: true},
		{flag: "-modfile=/tmp/go.mod", refused: "-modfile", denied: true},
		{flag: "-exec=/bin/sh", refused: "-exec", denied: true},
		{flag: "-pkgdir=/tmp", refused: "-pkgdir", denied: true},
		{flag: "-compiler=gccgo", refused: "-compiler", denied: true},
		{flag: "-gccgoflags=-x", refused: "-gccgoflags", denied: true},
		{flag: "-race", refused: "-race", denied: true},
		{flag: "-work", refused: "-work", denied: true},
		{flag: "-modcacherw", refused: "-modcacherw", denied: true},
		{flag: "-gcflags=-importcfg=/etc/passwd", refused: "-gcflags", denied: true},
		{flag: "-gcflags=all=-cpuprofile=/x", refused: "-gcflags", denied: true},
		{flag: "-asmflags=-I=/etc", refused: "-asmflags", denied: true},
		{flag: "-gcflags=$(id)=-l", refused: "-gcflags"},
		{flag: "-mod=mod2", refused: "-mod"},
		{flag: "-p=0", refused: "-p"},
		{flag: "-tags=a;b", refused: "-tags"},
		{flag: "-tags", refused: "-tags"},
		{flag: "-v=yes", refused: "-v"},
		{flag: "-o=/x", refused: "-o"},
		{flag: "-ldflags=-s", refused: "-ldflags"},
		{flag: "-C=sub", refused: "-C"},
		{flag: "netgo", refused: "netgo"},
		{flag: "-", refused: "-"},
		{flag: "---x", refused: "---x"},
		{flag: "-tags=a\nb", refused: "-tags"},
		// A tenant may widen the list.
		{flag: "-toolexec=/src/tool.sh", extra: toolexec},
		{flag: "-overlay=/x", extra: toolexec, refused: "-overlay", denied: true},
	}
	for _, tt := range tests {
		err := CheckBuildFlag(tt.flag, tt.extra)
		check(t, tt.flag, err, tt.refused, tt.denied)
	}
}

func TestCheckLDFlags(t *testing.T) {
	tests := []struct {
		ldflags string
		extra   Extra
		refused string
		denied  bool
	}{
		{ldflags: ""},
		{ldflags: "-s -w"},
		{ldflags: "-s -w -X main.version=v1.2.3"},
		{ldflags: "-X=main.version=1 -X 'example.com/x/internal/build.Date=2024 01 02'"},
		{ldflags: `-X "main.msg=hello world"`},
		{ldflags: "-buildid= -compressdwarf=false"},
		{ldflags: "-extld=/bin/sh", refused: "-extld", denied: true},
		{ldflags: "-s -extldflags=-Wl,--wrap", refused: "-extldflags", denied: true},
		{ldflags: "-linkmode=external", refused: "-linkmode", denied: true},
		{ldflags: "-linkmode external", refused: "-linkmode", denied: true},
		{ldflags: "-importcfg /etc/passwd", refused: "-importcfg", denied: true},
		{ldflags: "-r /tmp", refused: "-r", denied: true},
		{ldflags: "-X main.version", refused: "-X"},
		{ldflags: "-X", refused: "-X"},
		{ldflags: "-X ../x.y=1", refused: "-X"},
		{ldflags: "-s=false", refused: "-s"},
		{ldflags: "main.version=1", refused: "main.version=1"},
		{ldflags: "-X 'main.v=1", refused: "ldflags"},
		{ldflags: "-s\n-w", refused: "ldflags"},
		{ldflags: "-extldflags=-static", extra: Extra{LDFlags: []string{"-extldflags"}}},
		{ldflags: "-extldflags=-static -s", extra: Extra{LDFlags: []string{"-extldflags"}}},
	}
	for _, tt := range tests {
		err := CheckLDFlags(tt.ldflags, tt.extra)
		check(t, tt.ldflags, err, tt.refused, tt.denied)
	}
}

func TestCheckEnv(t *testing.T) {
	tests := []struct {
		key, value string
		extra      Extra
		denied     bool
		bad        bool
	}{
		{key: "GOEXPERIMENT", value: "rangefunc,aliastypeparams"},
		{key: "GOAMD64", value: "v3"},
		{key: "GOARM64", value: "v8.2,lse"},
		{key: "CGO_ENABLED", value: "0"},
		{key: "GOFIPS140", value: "latest"},
		{key: "CGO_ENABLED", value: "1", bad: true},
		{key: "GOAMD64", value: "v9", bad: true},
		{key: "GOEXPERIMENT", value: "x;rm", bad: true},
		{key: "GOEXPERIMENT", value: "a\x00b", bad: true},
		// Every injection that was accepted before.
		{key: "GOFLAGS", value: "-toolexec=/bin/sh", denied: true},
		{key: "GOPROXY", value: "http://evil", denied: true},
		{key: "GOSUMDB", value: "off", denied: true},
		{key: "GONOSUMDB", value: "*", denied: true},
		{key: "GOINSECURE", value: "*", denied: true},
		{key: "GOTOOLCHAIN", value: "go1.99+auto", denied: true},
		{key: "LD_PRELOAD", value: "/tmp/x.so", denied: true},
		{key: "CC", value: "/bin/sh", denied: true},
		{key: "GOPRIVATE", value: "*", denied: true},
		{key: "HTTPS_PROXY", value: "http://x", denied: true},
		// A tenant may widen the list.
		{key: "GOFLAGS", value: "-mod=mod", extra: Extra{Env: []string{"GOFLAGS"}}},
		{key: "CGO_ENABLED", value: "1", extra: Extra{Env: []string{"CGO_ENABLED"}}},
	}
	for _, tt := range tests {
		err := CheckEnv(tt.key, tt.value, tt.extra)
		refused := ""
		if tt.denied || tt.bad {
			refused = tt.key
		}
		check(t, tt.key+"="+tt.value, err, refused, tt.denied)
	}
}

// check compares err with what a test case wants.
func check(t *testing.T, input string, err error, refused string, denied bool) {
	t.Helper()
	if refused == "" {
		if err != nil {
			t.Errorf("%q refused: %v", input, err)
		}
		return
	}
	var fe *BuildFlagError
	if !errors.As(err, &fe) {
		t.Errorf("%q: err = %v, want a *BuildFlagError", input, err)
		return
	}
	if fe.Name != refused {
		t.Errorf("%q: error names %q, want %q (%v)", input, fe.Name, refused, err)
	}
	if got := strings.Contains(fe.Reason, ErrNotAllowed.Error()); got != denied {
		t.Errorf("%q: refused as not allowed = %v, want %v (%v)", input, got, denied, err)
	}
}

// A long bad value is quoted only in part.
func TestErrorsQuoteAShortPrefix(t *testing.T) {
	long := strings.Repeat("x", 100000)
	for _, err := range []error{
		CheckBuildFlag("-mod="+long, Extra{}),
		CheckBuildFlag("-"+long, Extra{}),
		CheckLDFlags("-X "+long, Extra{}),
		CheckEnv("GOAMD64", long, Extra{}),
	} {
		if err == nil || len(err.Error()) > 200 {
			t.Errorf("error of %d bytes: %.100s", len(err.Error()), err)
		}
	}
}

func TestSplitQuoted(t *testing.T) {
	tests := map[string]string{
		"":                        "[]",
		"-s -w":                   "[-s -w]",
		"  -s   -w  ":             "[-s -w]",
		`-X 'a.b=c d' -X "e.f=g"`: "[-X a.b=c d -X e.f=g]",
		`-X a.b=''`:               "[-X a.b=]",
	}
	for in, want := range tests {
		got, err := splitQuoted(in)
		if err != nil {
			t.Errorf("%q: %v", in, err)
			continue
		}
		if s := "[" + strings.Join(got, " ") + "]"; s != want {
			t.Errorf("%q split to %s, want %s", in, s, want)
		}
	}
}
