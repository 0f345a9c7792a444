//go:build integration

package integration

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	buildv1 "github.com/buildsvc/buildsvc/proto/build/v1"
	"github.com/buildsvc/buildsvc/server"
)

// goIn runs the host's go command in dir, for making fixtures.
func goIn(t testing.TB, dir string, args ...string) string {
	t.Helper()
	cmd := exec.Command("go", args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GOFLAGS=-mod=mod", "GOTOOLCHAIN=local", "GOWORK=off")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("go %v: %v\n%s", args, err, out)
	}
	return string(out)
}

// writeFiles writes files into a fresh temp dir and returns it.
func writeFiles(t testing.TB, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, content := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// Real repositories are not all a main package at the root of a module
// with a few dependencies. Each layout here is built and its binary run.
func TestRealLayouts(t *testing.T) {
	c := startServer(t, nil)

	t.Run("vendor directory, module proxy off", func(t *testing.T) {
		c := startServer(t, func(cfg *server.Config) { cfg.GoProxy = "off" })
		dir := writeFiles(t, sampleFiles(t))
		goIn(t, dir, "mod", "vendor")
		repo := newRepo(t, readDir(t, dir))
		if _, err := os.Stat(filepath.Join(repo.work, "vendor", "modules.txt")); err != nil {
			t.Fatal("fixture has no vendor dir")
		}
		// With GOPROXY=off the build can only succeed from vendor/.
		res := requireSuccess(t, build(t, c, &buildv1.CreateImageRequest{
			GitRepo: repo.URL, GitCommit: "main", ImageTag: tagFor(t, "vendor"),
		}))
		if out := runEntrypoint(t, pushedImage(t, res.Image)); !strings.HasPrefix(out, sampleOutput) {
			t.Errorf("binary printed %q", out)
		}
	})

	t.Run("main under cmd in a module in a subdirectory", func(t *testing.T) {
		repo := newRepo(t, map[string]string{
			"README.md":                            "a monorepo\n",
			"services/greeter/go.mod":              "module example.com/greeter\n\ngo 1.26\n",
			"services/greeter/internal/greet/g.go": "package greet\n\n// Hello greets.\nfunc Hello(n string) string { return \"hi \" + n }\n",
			"services/greeter/cmd/greeter/main.go": "package main\n\nimport (\n\t\"fmt\"\n\t\"os\"\n\n\t\"example.com/greeter/internal/greet\"\n)\n\nvar version = \"dev\"\n\nfunc main() { fmt.Println(greet.Hello(version), len(os.Args)) }\n",
		})
		res := requireSuccess(t, build(t, c, &buildv1.CreateImageRequest{
			GitRepo: repo.URL, GitCommit: "main", ImageTag: tagFor(t, "cmd"),
			Dir: "services/greeter", Package: "./cmd/greeter",
			Ldflags: "-s -w -X main.version=v1.2.3", BuildFlags: []string{"-tags=netgo"},
		}))
		img := pushedImage(t, res.Image)
		cfg, _ := img.ConfigFile()
		if ep := cfg.Config.Entrypoint; len(ep) != 1 || filepath.Base(ep[0]) != "greeter" {
			t.Errorf("entrypoint = %v, want the greeter binary", ep)
		}
		if out := runEntrypoint(t, img, "x"); out != "hi v1.2.3 2\n" {
			t.Errorf("binary printed %q, want ldflags to have set the version", out)
		}
	})

	t.Run("more than a hundred modules", func(t *testing.T) {
		if testing.Short() {
			t.Skip("slow: compiles a large module graph")
		}
		dir := writeFiles(t, map[string]string{
			"go.mod": "module example.com/big\n\ngo 1.26\n",
			"main.go": `package main

import (
	"context"
	"fmt"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/moby/buildkit/client/llb"
	"github.com/prometheus/client_golang/prometheus"
)

func main() {
	def, err := llb.Image("docker.io/library/alpine:latest").Marshal(context.Background())
	if err != nil {
		panic(err)
	}
	ref, _ := name.ParseReference("example.com/a:b")
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: "x"})
	c.Inc()
	fmt.Println("big ok", len(def.Def) > 0, ref.Context().RepositoryStr())
}
`,
		})
		// The same versions as this project's own go.mod, so the host's
		// module cache has them.
		goIn(t, dir, "get", "github.com/moby/buildkit@"+modVersion(t, "github.com/moby/buildkit"),
			"github.com/google/go-containerregistry@"+modVersion(t, "github.com/google/go-containerregistry"),
			"github.com/prometheus/client_golang@"+modVersion(t, "github.com/prometheus/client_golang"))
		goIn(t, dir, "mod", "tidy")
		if n := len(strings.Fields(goIn(t, dir, "list", "-m", "-f", "{{.Path}}", "all"))); n <= 100 {
			t.Fatalf("fixture has only %d modules", n)
		}
		repo := newRepo(t, readDir(t, dir))
		res := requireSuccess(t, build(t, c, &buildv1.CreateImageRequest{
			GitRepo: repo.URL, GitCommit: "main", ImageTag: tagFor(t, "big"),
		}))
		if out := runEntrypoint(t, pushedImage(t, res.Image)); out != "big ok true a\n" {
			t.Errorf("binary printed %q", out)
		}
	})
}

// A go.mod whose toolchain line asks for a newer Go than the builder's: the
// download step fetches that toolchain through the module proxy into the
// module cache, and the compile step, with no network, builds with it.
func TestToolchainLine(t *testing.T) {
	const toolchain = "go1.27.4"
	c := startServer(t, nil)
	repo := newRepo(t, map[string]string{
		"go.mod":  "module example.com/tc\n\ngo 1.26\n\ntoolchain " + toolchain + "\n",
		"main.go": "package main\n\nimport (\n\t\"fmt\"\n\t\"runtime\"\n)\n\nfunc main() { fmt.Println(runtime.Version()) }\n",
	})
	res := requireSuccess(t, build(t, c, &buildv1.CreateImageRequest{GitRepo: repo.URL, GitCommit: "main", ImageTag: tagFor(t, "tc")}))
	if out := strings.TrimSpace(runEntrypoint(t, pushedImage(t, res.Image))); out != toolchain {
		t.Errorf("the binary was built with %s, want %s", out, toolchain)
	}
}

func modVersion(t testing.TB, path string) string {
	t.Helper()
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Version}}", path).Output()
	if err != nil {
		t.Fatalf("go list -m %s: %v", path, err)
	}
	return strings.TrimSpace(string(out))
}
