//go:build integration

package integration

import (
	"archive/tar"
	"context"
	"debug/buildinfo"
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/buildsvc/buildsvc/egress"
	"github.com/buildsvc/buildsvc/llb"
	buildv1 "github.com/buildsvc/buildsvc/proto/build/v1"
	"github.com/buildsvc/buildsvc/server"
)

const sampleOutput = "hello from sampleapp "

var nonRepoChars = regexp.MustCompile(`[^a-z0-9]+`)

func sampleFiles(t testing.TB) map[string]string { return readDir(t, "../testdata/sampleapp") }

func tagFor(t testing.TB, suffix string) string {
	st := loadStack(t)
	repo := strings.Trim(nonRepoChars.ReplaceAllString(strings.ToLower(t.Name()), "-"), "-")
	return fmt.Sprintf("%s/it/%s:%s", st.RegistryAddr, repo, suffix)
}

// startRequest is the StartBuild request of the build req asks for.
func startRequest(req *buildv1.CreateImageRequest) *buildv1.StartBuildRequest {
	return &buildv1.StartBuildRequest{Request: req}
}

func requireSuccess(t testing.TB, o outcome) *buildv1.BuildResult {
	t.Helper()
	if o.err != nil {
		t.Fatalf("stream failed: %v\nlogs:\n%s", o.err, o.logs())
	}
	res := o.result()
	if res == nil {
		t.Fatalf("no result; error %v\nlogs:\n%s", o.buildErr(), o.logs())
	}
	return res
}

// The main job: a branch of the sample app becomes a pushed, valid,
// runnable image; a new commit on top then builds with the caches warm.
func TestBuildSampleAndWarmRebuild(t *testing.T) {
	c := startServer(t, nil)
	repo := newRepo(t, sampleFiles(t))
	mainSHA := repo.git(repo.work, "rev-parse", "HEAD")
	tag := tagFor(t, "v1")

	o := build(t, c, &buildv1.CreateImageRequest{GitRepo: repo.URL, GitCommit: "main", ImageTag: tag})
	res := requireSuccess(t, o)

	wantStates := []buildv1.BuildState{
		buildv1.BuildState_BUILD_STATE_RESOLVING, buildv1.BuildState_BUILD_STATE_QUEUED,
		buildv1.BuildState_BUILD_STATE_BUILDING, buildv1.BuildState_BUILD_STATE_PUSHING,
		buildv1.BuildState_BUILD_STATE_SUCCEEDED,
	}
	if fmt.Sprint(o.states()) != fmt.Sprint(wantStates) {
		t.Errorf("states = %v, want %v", o.states(), wantStates)
	}
	if res.Commit != mainSHA {
		t.Errorf("result commit = %s, want %s", res.Commit, mainSHA)
	}
	if got := tagDigest(t, tag); got != res.Digest {
		t.Errorf("registry has %s at %s, build reported %s", got, tag, res.Digest)
	}
	if !strings.HasSuffix(res.Image, "@"+res.Digest) {
		t.Errorf("image %q is not pinned to digest %s", res.Image, res.Digest)
	}
	img := pushedImage(t, res.Image)
	if out := runEntrypoint(t, img); !strings.HasPrefix(out, sampleOutput) {
		t.Errorf("binary printed %q, want prefix %q", out, sampleOutput)
	}
	labels := imageLabels(t, img)
	if labels[llb.LabelRevision] != mainSHA || labels[llb.LabelSource] != repo.URL {
		t.Errorf("labels = %v, want revision %s and source %s", labels, mainSHA, repo.URL)
	}
	var vertices int
	for _, e := range o.events {
		if e.GetVertex() != nil {
			vertices++
		}
	}
	if vertices == 0 {
		t.Error("no vertex progress was streamed")
	}

	// A new commit: the source changed, so go build runs again, but go.mod
	// and go.sum did not, so BuildKit reuses the download step.
	files := sampleFiles(t)
	files["main.go"] = strings.Replace(files["main.go"], "hello from sampleapp", "hello again from sampleapp", 1)
	newSHA := repo.commit("main", "second", files)
	o2 := build(t, c, &buildv1.CreateImageRequest{GitRepo: repo.URL, GitCommit: newSHA, ImageTag: tagFor(t, "v2")})
	res2 := requireSuccess(t, o2)
	if ran, cached := stepRan(o2, "go mod download"); ran || !cached {
		t.Errorf("warm rebuild with go.mod unchanged: the download step ran %v, was reused %v", ran, cached)
	}
	if ran, _ := stepRan(o2, "go build"); !ran {
		t.Error("warm rebuild of new source: go build did not run")
	}
	if strings.Contains(o2.logs(), "go: downloading") {
		t.Errorf("warm rebuild downloaded modules:\n%s", o2.logs())
	}
	if out := runEntrypoint(t, pushedImage(t, res2.Image)); !strings.HasPrefix(out, "hello again from sampleapp") {
		t.Errorf("rebuilt binary printed %q", out)
	}
}

// The pushed binary's build info says how it was built: with -trimpath, as
// the sample's main module with its one dependency, for the image's
// platform without cgo, and no path of the builder's file system (the
// source, the module cache, GOROOT) is inside it.
func TestBinaryBuildInfo(t *testing.T) {
	c := startServer(t, nil)
	repo := newRepo(t, sampleFiles(t))
	res := requireSuccess(t, build(t, c, &buildv1.CreateImageRequest{GitRepo: repo.URL, GitCommit: "main", ImageTag: tagFor(t, "x")}))
	bin := extractEntrypoint(t, pushedImage(t, res.Image))
	info, err := buildinfo.ReadFile(bin)
	if err != nil {
		t.Fatalf("read build info: %v", err)
	}
	settings := map[string]string{}
	for _, s := range info.Settings {
		settings[s.Key] = s.Value
	}
	for k, want := range map[string]string{"-trimpath": "true", "CGO_ENABLED": "0", "GOOS": "linux", "GOARCH": runtime.GOARCH} {
		if settings[k] != want {
			t.Errorf("build setting %s = %q, want %q (all: %v)", k, settings[k], want, info.Settings)
		}
	}
	// The source has no .git directory, so Go records no VCS stamp; the
	// revision is in the image's labels instead.
	if v, ok := settings["vcs.revision"]; ok {
		t.Errorf("vcs.revision = %q: the service does not set it, so where did it come from?", v)
	}
	if info.Main.Path != "example.com/sampleapp" || info.Main.Version != "(devel)" {
		t.Errorf("main module %s %s, want example.com/sampleapp (devel)", info.Main.Path, info.Main.Version)
	}
	var deps []string
	for _, d := range info.Deps {
		deps = append(deps, d.Path+"@"+d.Version)
	}
	if fmt.Sprint(deps) != "[github.com/google/uuid@v1.6.0]" {
		t.Errorf("deps = %v, want [github.com/google/uuid@v1.6.0]", deps)
	}
	if !strings.HasPrefix(info.GoVersion, "go1.") {
		t.Errorf("go version %q", info.GoVersion)
	}
	data, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{llb.SourceDir + "/main.go", llb.GoModCachePath + "/", "/usr/local/go/src/", llb.GoCachePath} {
		if strings.Contains(string(data), p) {
			t.Errorf("the binary holds the builder's path %q", p)
		}
	}
}

// A branch name resolves to the branch's SHA, and the image says so.
func TestBranchResolvesToSHA(t *testing.T) {
	c := startServer(t, nil)
	repo := newRepo(t, sampleFiles(t))
	files := sampleFiles(t)
	files["main.go"] = strings.Replace(files["main.go"], "hello from sampleapp", "hello from feature", 1)
	featureSHA := repo.commit("feature/x", "feature", files)

	res := requireSuccess(t, build(t, c, &buildv1.CreateImageRequest{
		GitRepo: repo.URL, GitCommit: "feature/x", ImageTag: tagFor(t, "feature"),
	}))
	if res.Commit != featureSHA {
		t.Errorf("built %s, want feature/x at %s", res.Commit, featureSHA)
	}
	img := pushedImage(t, res.Image)
	if got := imageLabels(t, img)[llb.LabelRevision]; got != featureSHA {
		t.Errorf("revision label = %s, want %s", got, featureSHA)
	}
	if out := runEntrypoint(t, img); !strings.HasPrefix(out, "hello from feature") {
		t.Errorf("binary printed %q", out)
	}
}

// A compile error fails the build, with the compiler's message in the logs
// and the record readable afterwards.
func TestCompileErrorFails(t *testing.T) {
	c := startServer(t, nil)
	files := sampleFiles(t)
	files["broken.go"] = "package main\n\nfunc broken() { undefinedThing() }\n"
	repo := newRepo(t, files)

	o := build(t, c, &buildv1.CreateImageRequest{GitRepo: repo.URL, GitCommit: "main", ImageTag: tagFor(t, "broken")})
	if o.err == nil {
		t.Fatal("the stream of a failed build ended OK, not with the build's status")
	}
	berr := o.buildErr()
	if berr == nil || o.result() != nil {
		t.Fatalf("want a build error, got result %v", o.result())
	}
	if got := status.Code(o.err); got != codes.Code(berr.GetCode()) {
		t.Errorf("the stream ended with code %v, the build error has %v", got, codes.Code(berr.GetCode()))
	}
	states := o.states()
	if last := states[len(states)-1]; last != buildv1.BuildState_BUILD_STATE_FAILED {
		t.Errorf("final state %v, want FAILED", last)
	}
	if !strings.Contains(o.logs(), "undefined: undefinedThing") {
		t.Errorf("compiler message not in logs:\n%s", o.logs())
	}
	info, err := c.GetBuild(t.Context(), &buildv1.GetBuildRequest{BuildId: o.events[0].BuildId})
	if err != nil {
		t.Fatal(err)
	}
	if info.State != buildv1.BuildState_BUILD_STATE_FAILED || info.Error.GetMessage() == "" {
		t.Errorf("GetBuild = %v", info)
	}
}

// countingResolver counts the refs the server resolves (its first I/O for a
// request) and resolves them as the server would.
type countingResolver struct{ calls atomic.Int64 }

func (r *countingResolver) Resolve(ctx context.Context, repo, ref string, auth egress.Auth) (string, error) {
	r.calls.Add(1)
	return server.RemoteResolver{}.Resolve(ctx, repo, ref, auth)
}

// Bad input is refused before anything is done, naming the field: a refused
// request reaches no git server (the resolver is never asked), records no
// build and solves nothing.
func TestBadInput(t *testing.T) {
	res := &countingResolver{}
	c := startServer(t, func(c *server.Config) { c.Resolver = res })
	repo := newRepo(t, sampleFiles(t))
	tag := tagFor(t, "x")
	req := func(mutate func(*buildv1.CreateImageRequest)) *buildv1.CreateImageRequest {
		r := &buildv1.CreateImageRequest{GitRepo: repo.URL, GitCommit: "main", ImageTag: tag}
		mutate(r)
		return r
	}
	// A host on loopback where nothing listens: had the server tried it,
	// the error would be Unavailable, not InvalidArgument.
	const closed = "127.0.0.1:1"
	type refusal struct {
		name  string
		req   *buildv1.CreateImageRequest
		code  codes.Code
		field string
	}
	tests := []refusal{
		{"empty repo", &buildv1.CreateImageRequest{ImageTag: tag}, codes.InvalidArgument, "git_repo"},
		{"malformed repo", req(func(r *buildv1.CreateImageRequest) { r.GitRepo = "::not a url::" }), codes.InvalidArgument, "git_repo"},
		{"relative path repo", req(func(r *buildv1.CreateImageRequest) { r.GitRepo = "some/dir" }), codes.InvalidArgument, "git_repo"},
		{"file url", req(func(r *buildv1.CreateImageRequest) { r.GitRepo = "file:///etc" }), codes.InvalidArgument, "git_repo"},
		{"plain http", req(func(r *buildv1.CreateImageRequest) { r.GitRepo = "http://" + closed + "/x.git" }), codes.InvalidArgument, "git_repo"},
		{"ftp scheme", req(func(r *buildv1.CreateImageRequest) { r.GitRepo = "ftp://" + closed + "/x.git" }), codes.InvalidArgument, "git_repo"},
		{"password in url", req(func(r *buildv1.CreateImageRequest) { r.GitRepo = "https://u:hunter2@" + closed + "/x.git" }), codes.InvalidArgument, "git_repo"},
		{"token in url", req(func(r *buildv1.CreateImageRequest) { r.GitRepo = "https://ghp_token@" + closed + "/x.git" }), codes.InvalidArgument, "git_repo"},
		{"user in git url", req(func(r *buildv1.CreateImageRequest) { r.GitRepo = strings.Replace(repo.URL, "git://", "git://u:pw@", 1) }), codes.InvalidArgument, "git_repo"},
		{"ssh url without a key", req(func(r *buildv1.CreateImageRequest) { r.GitRepo = "ssh://git@" + closed + "/x.git" }), codes.InvalidArgument, "git_credentials.ssh_private_key"},
		{"scp-like url without a key", req(func(r *buildv1.CreateImageRequest) { r.GitRepo = "git@127.0.0.1:x.git" }), codes.InvalidArgument, "git_credentials.ssh_private_key"},
		{"password in ssh url", req(func(r *buildv1.CreateImageRequest) { r.GitRepo = "ssh://git:pw@" + closed + "/x.git" }), codes.InvalidArgument, "git_repo"},
		{"bad ssh key", req(func(r *buildv1.CreateImageRequest) {
			r.GitRepo = "ssh://git@" + closed + "/x.git"
			r.GitCredentials = &buildv1.GitCredentials{SshPrivateKey: []byte("not a key")}
		}), codes.InvalidArgument, "git_credentials.ssh_private_key"},
		{"registry credentials without a password", req(func(r *buildv1.CreateImageRequest) {
			r.RegistryCredentials = []*buildv1.RegistryCredentials{{Registry: "127.0.0.1:5000", Username: "u"}}
		}), codes.InvalidArgument, "registry_credentials[0]"},
		{"secret env off the allow-list", req(func(r *buildv1.CreateImageRequest) { r.SecretEnv = map[string]string{"LD_PRELOAD": "/x.so"} }), codes.InvalidArgument, "secret_env[LD_PRELOAD]"},
		{"option injection", req(func(r *buildv1.CreateImageRequest) { r.GitRepo = "--upload-pack=touch /tmp/x" }), codes.InvalidArgument, "git_repo"},
		{"no repository path", req(func(r *buildv1.CreateImageRequest) { r.GitRepo = "https://" + closed + "/" }), codes.InvalidArgument, "git_repo"},
		{"range commit", req(func(r *buildv1.CreateImageRequest) { r.GitCommit = "main..dev" }), codes.InvalidArgument, "git_commit"},
		{"option commit", req(func(r *buildv1.CreateImageRequest) { r.GitCommit = "--all" }), codes.InvalidArgument, "git_commit"},
		{"oversized commit", req(func(r *buildv1.CreateImageRequest) { r.GitCommit = strings.Repeat("a", 256) }), codes.InvalidArgument, "git_commit"},
		{"empty tag", req(func(r *buildv1.CreateImageRequest) { r.ImageTag = "" }), codes.InvalidArgument, "image_tag"},
		{"malformed tag", req(func(r *buildv1.CreateImageRequest) { r.ImageTag = "UPPER/Case::bad" }), codes.InvalidArgument, "image_tag"},
		{"digest tag", req(func(r *buildv1.CreateImageRequest) { r.ImageTag = tag + "@sha256:" + strings.Repeat("a", 64) }), codes.InvalidArgument, "image_tag"},
		{"package escapes", req(func(r *buildv1.CreateImageRequest) { r.Package = "../x" }), codes.InvalidArgument, "package"},
		{"package pattern", req(func(r *buildv1.CreateImageRequest) { r.Package = "./..." }), codes.InvalidArgument, "package"},
		{"absolute dir", req(func(r *buildv1.CreateImageRequest) { r.Dir = "/etc" }), codes.InvalidArgument, "dir"},
		{"dir escapes", req(func(r *buildv1.CreateImageRequest) { r.Dir = "a/../../b" }), codes.InvalidArgument, "dir"},
		{"output flag", req(func(r *buildv1.CreateImageRequest) { r.BuildFlags = []string{"-o=/x"} }), codes.InvalidArgument, "build_flags[0]"},
		{"ldflags as a flag", req(func(r *buildv1.CreateImageRequest) { r.BuildFlags = []string{"-v", "--ldflags=-s"} }), codes.InvalidArgument, "build_flags[1]"},
		{"not a flag", req(func(r *buildv1.CreateImageRequest) { r.BuildFlags = []string{"netgo"} }), codes.InvalidArgument, "build_flags[0]"},
		{"ldflags newline", req(func(r *buildv1.CreateImageRequest) { r.Ldflags = "-s\n-w" }), codes.InvalidArgument, "ldflags"},
		{"reserved env", req(func(r *buildv1.CreateImageRequest) { r.Env = map[string]string{"GOOS": "windows"} }), codes.InvalidArgument, "env[GOOS]"},
		{"bad env name", req(func(r *buildv1.CreateImageRequest) { r.Env = map[string]string{"1X": "y"} }), codes.InvalidArgument, "env"},
		{"NUL in env", req(func(r *buildv1.CreateImageRequest) { r.Env = map[string]string{"X": "a\x00b"} }), codes.InvalidArgument, "env[X]"},
		{"bad base image", req(func(r *buildv1.CreateImageRequest) { r.BaseImage = "::" }), codes.InvalidArgument, "base_image"},
		{"negative timeout", req(func(r *buildv1.CreateImageRequest) { r.Timeout = durationpb.New(-time.Second) }), codes.InvalidArgument, "timeout"},
		{"reserved label", req(func(r *buildv1.CreateImageRequest) { r.Labels = map[string]string{llb.LabelRevision: "x"} }), codes.InvalidArgument, "labels[" + llb.LabelRevision + "]"},
		{"bad label key", req(func(r *buildv1.CreateImageRequest) { r.Labels = map[string]string{"-x": "y"} }), codes.InvalidArgument, "labels"},
		{"unknown commit", req(func(r *buildv1.CreateImageRequest) { r.GitCommit = "no-such-branch" }), codes.NotFound, "git_commit"},
	}
	// Every way a request could run a program of its choosing at build
	// time, or point the build at other module sources, is refused.
	for _, f := range []string{"-toolexec=/bin/sh -c id", "-overlay=/tmp/o.json", "-modfile=/tmp/go.mod", "-exec=/bin/sh",
		"-gcflags=all=-importcfg=/etc/passwd", "-race", "-compiler=gccgo"} {
		tests = append(tests, refusal{"flag " + f, req(func(r *buildv1.CreateImageRequest) { r.BuildFlags = []string{"-v", f} }),
			codes.InvalidArgument, "build_flags[1]"})
	}
	for _, l := range []string{"-extld=/bin/sh", "-s -extldflags=-Wl,-plugin=/x", "-linkmode=external"} {
		tests = append(tests, refusal{"ldflags " + l, req(func(r *buildv1.CreateImageRequest) { r.Ldflags = l }), codes.InvalidArgument, "ldflags"})
	}
	for _, kv := range [][2]string{{"GOFLAGS", "-toolexec=/bin/sh"}, {"CGO_ENABLED", "1"}, {"CC", "/bin/sh"}, {"GOPROXY", "http://127.0.0.1:1"},
		{"GOSUMDB", "off"}, {"GONOSUMDB", "*"}, {"GOINSECURE", "*"}, {"GOTOOLCHAIN", "go1.99+auto"}, {"LD_PRELOAD", "/tmp/x.so"}} {
		tests = append(tests, refusal{"env " + kv[0], req(func(r *buildv1.CreateImageRequest) { r.Env = map[string]string{kv[0]: kv[1]} }),
			codes.InvalidArgument, "env[" + kv[0] + "]"})
	}
	// Each limit plus one (server/limits.go).
	many := func(n int, prefix, value string) map[string]string {
		m := map[string]string{}
		for i := range n {
			m[fmt.Sprintf("%s%d", prefix, i)] = value
		}
		return m
	}
	tests = append(tests,
		refusal{"oversized repo", req(func(r *buildv1.CreateImageRequest) { r.GitRepo = repo.URL + strings.Repeat("a", server.MaxRepoLen) }), codes.InvalidArgument, "git_repo"},
		refusal{"oversized tag", req(func(r *buildv1.CreateImageRequest) { r.ImageTag = tag + strings.Repeat("a", server.MaxImageRefLen) }), codes.InvalidArgument, "image_tag"},
		refusal{"oversized package", req(func(r *buildv1.CreateImageRequest) { r.Package = strings.Repeat("a", server.MaxPathLen+1) }), codes.InvalidArgument, "package"},
		refusal{"oversized ldflags", req(func(r *buildv1.CreateImageRequest) {
			r.Ldflags = "-X main.v=" + strings.Repeat("a", server.MaxLDFlagsLen)
		}), codes.InvalidArgument, "ldflags"},
		refusal{"too many build flags", req(func(r *buildv1.CreateImageRequest) {
			r.BuildFlags = slices.Repeat([]string{"-v"}, server.MaxBuildFlags+1)
		}), codes.InvalidArgument, "build_flags"},
		refusal{"too many labels", req(func(r *buildv1.CreateImageRequest) { r.Labels = many(server.MaxLabels+1, "l", "v") }), codes.InvalidArgument, "labels"},
		refusal{"oversized label", req(func(r *buildv1.CreateImageRequest) {
			r.Labels = map[string]string{"big": strings.Repeat("a", server.MaxLabelValueLen+1)}
		}), codes.InvalidArgument, "labels[big]"},
		refusal{"too many env", req(func(r *buildv1.CreateImageRequest) { r.Env = many(server.MaxEnv+1, "GOAMD64_", "v1") }), codes.InvalidArgument, "env"},
		refusal{"oversized env value", req(func(r *buildv1.CreateImageRequest) {
			r.Env = map[string]string{"GOEXPERIMENT": strings.Repeat("a", server.MaxEnvValueLen+1)}
		}), codes.InvalidArgument, "env[GOEXPERIMENT]"},
		// Past the message limit gRPC itself refuses it, unread.
		refusal{"a 2 MiB request", req(func(r *buildv1.CreateImageRequest) { r.Labels = map[string]string{"big": strings.Repeat("a", 2<<20)} }), codes.ResourceExhausted, ""},
	)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := res.calls.Load()
			o := build(t, c, tt.req)
			st, _ := status.FromError(o.err)
			if st.Code() != tt.code || tt.field != "" && !strings.HasPrefix(st.Message(), tt.field+":") {
				t.Fatalf("status = %v %.300q, want %v naming %s", st.Code(), st.Message(), tt.code, tt.field)
			}
			if len(st.Message()) > 300 {
				t.Errorf("error of %d bytes: %.300q", len(st.Message()), st.Message())
			}
			if len(o.events) > 0 {
				t.Errorf("a refused request streamed events: %v", o.events)
			}
			if calls := res.calls.Load() - before; tt.code == codes.InvalidArgument && calls != 0 {
				t.Errorf("the server resolved the ref of a request it refused (%d calls)", calls)
			}
		})
	}
	list, err := c.ListBuilds(t.Context(), &buildv1.ListBuildsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if len(list.Builds) != 0 {
		t.Errorf("refused requests left %d builds: %v", len(list.Builds), list.Builds)
	}
}

// One commit gives one image: a commit dated years ago, built by two
// servers whose Go caches are apart (the second starts with empty module
// and build caches, so go build really runs again), has one digest, and
// every time the build adds to the image is the commit's: the config's
// created time, its history, and the mtime of every file of the new layer.
func TestReproducibleImage(t *testing.T) {
	const date = "2019-03-04T05:06:07Z"
	commitTime, _ := time.Parse(time.RFC3339, date)
	repo := newRepoAt(t, sampleFiles(t), date)
	if ct := repo.git(repo.work, "log", "-1", "--format=%ct"); ct != fmt.Sprint(commitTime.Unix()) {
		t.Fatalf("commit time %s, want %d", ct, commitTime.Unix())
	}
	req := func(tag string) *buildv1.CreateImageRequest {
		return &buildv1.CreateImageRequest{GitRepo: repo.URL, GitCommit: "main", ImageTag: tagFor(t, tag)}
	}
	a := requireSuccess(t, build(t, startServer(t, nil), req("a")))
	cold := startServer(t, func(c *server.Config) {
		c.CacheNamespace = fmt.Sprintf("repro-%d-%d", os.Getpid(), time.Now().UnixNano())
	})
	bo := build(t, cold, req("b"))
	b := requireSuccess(t, bo)
	downloaded, _ := stepRan(bo, "go mod download")
	compiled, _ := stepRan(bo, "go build")
	if !downloaded || !compiled {
		t.Fatalf("the second build did not download and compile on empty caches (%v, %v); logs:\n%s", downloaded, compiled, bo.logs())
	}
	if a.Digest != b.Digest {
		t.Errorf("same commit, two digests: %s and %s", a.Digest, b.Digest)
	}

	img := pushedImage(t, a.Image)
	cfg, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if !cfg.Created.Time.Equal(commitTime) {
		t.Errorf("image created %v, want the commit time %v", cfg.Created.Time, commitTime)
	}
	if h := cfg.History; len(h) == 0 || !h[len(h)-1].Created.Time.Equal(commitTime) {
		t.Errorf("the new layer's history entry is not dated at the commit: %+v", h)
	}
	// The base image's layers are carried as they are (their times are the
	// base's own); every file of the layers the build added is dated at the
	// commit.
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	baseLayers, err := pushedImage(t, loadStack(t).BaseImage).Layers()
	if err != nil {
		t.Fatal(err)
	}
	if len(layers) <= len(baseLayers) {
		t.Fatalf("the image has %d layers, its base %d: the build added none", len(layers), len(baseLayers))
	}
	for i, l := range layers {
		d, err := l.Digest()
		if err != nil {
			t.Fatal(err)
		}
		if i < len(baseLayers) {
			if bd, _ := baseLayers[i].Digest(); d != bd {
				t.Errorf("layer %d is %s, the base image's is %s", i, d, bd)
			}
			continue
		}
		files := 0
		forEachFile(t, l, func(h *tar.Header) {
			files++
			if !h.ModTime.Equal(commitTime) {
				t.Errorf("layer %d: %s has mtime %v, want the commit time %v", i, h.Name, h.ModTime, commitTime)
			}
		})
		if files == 0 {
			t.Errorf("layer %d is empty", i)
		}
	}
}

// stepRan reports whether a step whose name starts with prefix ran, and
// whether one was reused from BuildKit's cache.
func stepRan(o outcome, prefix string) (ran, cached bool) {
	for _, e := range o.events {
		if v := e.GetVertex(); strings.HasPrefix(v.GetName(), prefix) && v.GetCompleted() != nil {
			ran = ran || !v.GetCached()
			cached = cached || v.GetCached()
		}
	}
	return ran, cached
}

// forEachFile calls fn for every entry of the layer's tar.
func forEachFile(t testing.TB, l v1.Layer, fn func(*tar.Header)) {
	t.Helper()
	rc, err := l.Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return
		}
		if err != nil {
			t.Fatal(err)
		}
		fn(h)
	}
}
