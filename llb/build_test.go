package llb

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	bkllb "github.com/moby/buildkit/client/llb"
	"github.com/moby/buildkit/solver/pb"
	digest "github.com/opencontainers/go-digest"
	ocispecs "github.com/opencontainers/image-spec/specs-go/v1"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata/")

const (
	sha1Commit   = "0123456789abcdef0123456789abcdef01234567"
	sha256Commit = "89abcdef0123456789abcdef0123456789abcdef0123456789abcdef01234567"
)

var (
	amd64 = ocispecs.Platform{OS: "linux", Architecture: "amd64"}
	arm64 = ocispecs.Platform{OS: "linux", Architecture: "arm64"}
	armv7 = ocispecs.Platform{OS: "linux", Architecture: "arm", Variant: "v7"}
)

const builderConfig = `{
  "architecture": "amd64", "os": "linux",
  "config": {
    "Env": ["PATH=/usr/local/go/bin:/go/bin:/bin", "GOROOT=/usr/local/go", "GOPATH=/go", "GOTOOLCHAIN=local"],
    "WorkingDir": "/go"
  },
  "rootfs": {"type": "layers", "diff_ids": ["sha256:1111111111111111111111111111111111111111111111111111111111111111"]}
}`

// builderConfigCacheProg is builderConfig with the GOCACHEPROG helper's
// label, as bootstrap's builder has it.
var builderConfigCacheProg = strings.Replace(builderConfig, `"WorkingDir": "/go"`,
	`"WorkingDir": "/go", "Labels": {"dev.buildsvc.gocacheprog": "/usr/local/bin/buildsvc-gocacheprog"}`, 1)

// builderConfigSeed is a builder with the helper and its seed, as
// `buildsvc bootstrap` makes it.
var builderConfigSeed = strings.Replace(builderConfig, `"WorkingDir": "/go"`,
	`"WorkingDir": "/go", "Labels": {"dev.buildsvc.gocacheprog": "/usr/local/bin/buildsvc-gocacheprog", "dev.buildsvc.gocache-seed": "/usr/local/share/buildsvc/gocache-std"}`, 1)

const baseConfig = `{
  "architecture": "amd64", "os": "linux",
  "created": "2024-01-02T03:04:05Z",
  "config": {
    "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt"],
    "User": "65532:65532",
    "Cmd": ["/bin/sh"],
    "Labels": {"maintainer": "base <b@example.com>", "org.opencontainers.image.source": "https://base.example/base"},
    "Healthcheck": {"Test": ["NONE"]}
  },
  "rootfs": {"type": "layers", "diff_ids": ["sha256:2222222222222222222222222222222222222222222222222222222222222222"]},
  "history": [{"created": "2024-01-02T03:04:05Z", "created_by": "COPY certs /etc/ssl/certs"}]
}`

// specs are the golden cases, by golden file name.
func specs() map[string]Spec {
	return map[string]Spec{
		"root": {
			Repo:          "https://github.com/example/hello.git",
			Commit:        sha1Commit,
			Dir:           ".",
			Package:       ".",
			Binary:        "hello",
			BuildPlatform: amd64,
			Platform:      amd64,
			Builder:       Image{Ref: "registry.example/builder/go:1.26", Config: []byte(builderConfig)},
			Base:          Image{Ref: "registry.example/base/static:latest", Config: []byte(baseConfig)},
		},
		"subdir": {
			Repo:              "https://git.example/team/mono.git",
			Commit:            sha256Commit,
			Dir:               "services/api",
			Package:           "./cmd/app",
			Binary:            "app",
			BuildFlags:        []string{"-tags", "netgo,osusergo", "-v"},
			LDFlags:           "-s -w -X main.version=1.2.3",
			Env:               map[string]string{"ZZ_LAST": "z", "CGO_ENABLED": "1", "AA_FIRST": "a"},
			GoProxy:           "https://proxy.example,direct",
			GoFlags:           "-mod=vendor",
			BuildPlatform:     amd64,
			Platform:          amd64,
			Builder:           Image{Ref: "golang:alpine", Config: []byte(builderConfig)},
			Base:              Image{Ref: "gcr.io/distroless/static@sha256:3333333333333333333333333333333333333333333333333333333333333333", Config: []byte(baseConfig)},
			Labels:            map[string]string{"team": "api", LabelSource: "overridden by the service"},
			ModCacheID:        "team-a-gomodcache",
			BuildCacheID:      "team-a-gocache",
			Ulimits:           []Ulimit{{Name: "nofile", Soft: 1024, Hard: 4096}},
			CgroupParent:      "buildsvc.slice",
			BuildUser:         "65534:65534",
			ModulesGeneration: 2,
			SourceDateEpoch: func() *time.Time {
				t := time.Unix(1700000000, 0).UTC()
				return &t
			}(),
		},
		"arm64": {
			Repo:          "https://github.com/example/hello.git",
			Commit:        sha1Commit,
			Dir:           ".",
			Package:       "./cmd/hello",
			Binary:        "hello",
			BuildPlatform: amd64,
			Platform:      arm64,
			Builder:       Image{Ref: "registry.example/builder/go:1.26", Config: []byte(builderConfig)},
			Base:          Image{Ref: "registry.example/base/static:latest", Config: []byte(strings.Replace(baseConfig, `"amd64"`, `"arm64"`, 1))},
		},
		"private-ssh": {
			Repo:          "ssh://git@git.internal.example:2222/team/private.git",
			Commit:        sha1Commit,
			Dir:           ".",
			Package:       ".",
			Binary:        "private",
			BuildPlatform: amd64,
			Platform:      amd64,
			Builder:       Image{Ref: "registry.example/builder/go:1.26", Config: []byte(builderConfig)},
			Base:          Image{Ref: "registry.example/base/static:latest", Config: []byte(baseConfig)},
			KnownHosts:    "[git.internal.example]:2222 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGdvbGRlbiBob3N0IGtleSBmb3IgdGVzdHM=\n",
			Netrc:         true,
			CABundle:      []byte("-----BEGIN CERTIFICATE-----\nZ29sZGVu\n-----END CERTIFICATE-----\n"),
			GoPrivate:     "git.internal.example",
			GoNoProxy:     "git.internal.example/vendored",
			GoNoSumDB:     "*.corp.example",
			SecretEnv:     []string{"API_TOKEN", "GOFLAGS"},
		},
		"remote-cache": {
			Repo:             "https://github.com/example/hello.git",
			Commit:           sha1Commit,
			Dir:              ".",
			Package:          "./cmd/hello",
			Binary:           "hello",
			BuildPlatform:    amd64,
			Platform:         arm64,
			Builder:          Image{Ref: "registry.example/buildsvc/builder:go1.26", Config: []byte(builderConfigCacheProg)},
			Base:             Image{Ref: "registry.example/base/static:latest", Config: []byte(baseConfig)},
			RemoteBuildCache: true,
		},
		"remote-cache-user": {
			Repo:             "https://github.com/example/hello.git",
			Commit:           sha1Commit,
			Dir:              ".",
			Package:          ".",
			Binary:           "hello",
			BuildPlatform:    amd64,
			Platform:         amd64,
			Builder:          Image{Ref: "registry.example/buildsvc/builder:go1.26", Config: []byte(builderConfigSeed)},
			Base:             Image{Ref: "registry.example/base/static:latest", Config: []byte(baseConfig)},
			BuildUser:        "1000:1001",
			BuildCacheID:     "tenant-a-gocache",
			RemoteBuildCache: true,
		},
		"noconfig-armv7": {
			Repo:          "git://127.0.0.1:9418/hello.git",
			Commit:        sha1Commit,
			Dir:           ".",
			Package:       ".",
			Binary:        "hello",
			BuildPlatform: amd64,
			Platform:      armv7,
			Builder:       Image{Ref: "127.0.0.1:5000/builder:latest"},
			Base:          Image{Ref: "127.0.0.1:5000/base:latest"},
		},
	}
}

func mustBuild(t *testing.T, s Spec) *Result {
	t.Helper()
	res, err := Build(context.Background(), s)
	if err != nil {
		t.Fatalf("Build: %v", err)
	}
	return res
}

func TestGolden(t *testing.T) {
	for name, s := range specs() {
		t.Run(name, func(t *testing.T) {
			got := dump(t, mustBuild(t, s))
			file := filepath.Join("testdata", name+".golden")
			if *update {
				if err := os.WriteFile(file, got, 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(file)
			if err != nil {
				t.Fatalf("%v (run go test ./llb/ -update to create it)", err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("%s differs from the build's output; if the change is intended, run go test ./llb/ -update and review the diff.\ngot:\n%s", file, got)
			}
		})
	}
}

// dump is a readable, complete rendering of a Result: every op in
// definition order with its digest, metadata and protobuf as JSON, then the
// image config.
func dump(t *testing.T, res *Result) []byte {
	t.Helper()
	var b bytes.Buffer
	for i, dt := range res.Definition.Def {
		dgst := digest.FromBytes(dt)
		var op pb.Op
		if err := proto.Unmarshal(dt, &op); err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&b, "# op %d %s\n", i, dgst)
		if md, ok := res.Definition.Metadata[dgst]; ok {
			fmt.Fprintf(&b, "## metadata\n%s\n", indentJSON(t, mustMarshal(t, md)))
		}
		opJSON, err := protojson.Marshal(&op)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&b, "## op\n%s\n\n", indentJSON(t, opJSON))
	}
	fmt.Fprintf(&b, "# image config\n%s\n", indentJSON(t, res.ImageConfig))
	return b.Bytes()
}

// indentJSON re-indents JSON; compacting first drops the whitespace
// protojson varies on purpose, so the golden files do not depend on it.
func indentJSON(t *testing.T, in []byte) []byte {
	t.Helper()
	var compact, out bytes.Buffer
	if err := json.Compact(&compact, in); err != nil {
		t.Fatalf("compact %s: %v", in, err)
	}
	if err := json.Indent(&out, compact.Bytes(), "", "  "); err != nil {
		t.Fatal(err)
	}
	return out.Bytes()
}

func mustMarshal(t *testing.T, v any) []byte {
	t.Helper()
	dt, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return dt
}

// graph is a definition read back into protobuf ops.
type graph struct {
	ops  map[string]*pb.Op // by digest
	head *pb.Op            // the op the definition's output points at
}

func readBack(t *testing.T, res *Result) graph {
	t.Helper()
	g := graph{ops: map[string]*pb.Op{}}
	def := res.Definition.Def
	for _, dt := range def {
		var op pb.Op
		if err := proto.Unmarshal(dt, &op); err != nil {
			t.Fatal(err)
		}
		g.ops[digest.FromBytes(dt).String()] = &op
	}
	var last pb.Op
	if err := proto.Unmarshal(def[len(def)-1], &last); err != nil {
		t.Fatal(err)
	}
	if last.Op != nil || len(last.Inputs) != 1 {
		t.Fatalf("last op is not the output marker: %v", &last)
	}
	g.head = g.input(t, last.Inputs[0])
	return g
}

func (g graph) input(t *testing.T, in *pb.Input) *pb.Op {
	t.Helper()
	op, ok := g.ops[in.Digest]
	if !ok {
		t.Fatalf("input %s is not in the definition", in.Digest)
	}
	return op
}

func envMap(env []string) map[string]string {
	m := map[string]string{}
	for _, kv := range env {
		k, v, _ := strings.Cut(kv, "=")
		m[k] = v
	}
	return m
}

// checkGoRoot checks the compile step's mount m of the Go root: with a
// builder config (whose GOROOT is /usr/local/go), a read-only mount of a
// copy of the builder image's /usr/local/go onto scratch; none without.
func checkGoRoot(t *testing.T, g graph, s Spec, compile *pb.Op, m *pb.Mount) {
	t.Helper()
	if s.Builder.Config == nil {
		if m != nil {
			t.Errorf("Go root mounted with no builder config: %v", m)
		}
		return
	}
	if m == nil || !m.Readonly || m.Input == int64(pb.Empty) || m.MountType != pb.MountType_BIND {
		t.Fatalf("Go root mount %v, want a read-only bind of a copy", m)
	}
	file := g.input(t, compile.Inputs[m.Input]).GetFile()
	if file == nil || len(file.Actions) != 1 || file.Actions[0].GetCopy() == nil {
		t.Fatalf("Go root mount's input is not one copy: %v", file)
	}
	a := file.Actions[0]
	cp := a.GetCopy()
	if cp.Src != "/usr/local/go" || cp.Dest != "/" || !cp.DirCopyContents || a.Input != int64(pb.Empty) {
		t.Errorf("Go root copy %v (onto input %d), want /usr/local/go's contents onto scratch", cp, a.Input)
	}
	src := g.input(t, g.input(t, compile.Inputs[m.Input]).Inputs[a.SecondaryInput]).GetSource()
	if src.GetIdentifier() != "docker-image://"+normalizedRef(s.Builder.Ref) {
		t.Errorf("Go root copied from %q, want the builder image", src.GetIdentifier())
	}
}

// checkDownload checks the download step the compile step's mount m comes
// from: `go mod download` with the network, the module files of the
// repository only, the module cache writable, no build cache.
func checkDownload(t *testing.T, g graph, s Spec, compile *pb.Op, m *pb.Mount, compileEnv map[string]string) {
	t.Helper()
	if m == nil || !m.Readonly || m.Input < 0 {
		t.Fatalf("the compile step does not mount the download step's output read-only: %v", m)
	}
	op := g.input(t, compile.Inputs[m.Input])
	exec := op.GetExec()
	if exec == nil || !slices.Equal(exec.Meta.Args, []string{"go", "mod", "download"}) {
		t.Fatalf("the compile step's dependency is not go mod download: %v", op)
	}
	if want := filepath.Join(ModulesDir, s.Dir); exec.Meta.Cwd != want {
		t.Errorf("download cwd = %q, want %q", exec.Meta.Cwd, want)
	}
	if exec.Network == pb.NetMode_NONE {
		t.Error("the download step has no network")
	}
	if !slices.Equal(exec.Meta.ValidExitCodes, []int32{0, 1}) {
		t.Errorf("download valid exit codes %v, want [0 1] (a failure is the compile step's to report)", exec.Meta.ValidExitCodes)
	}
	env := envMap(exec.Meta.Env)
	want := map[string]string{"GOFLAGS": "-mod=mod", "GOTOOLCHAIN": "auto", "GOMODCACHE": "/go/pkg/mod"}
	if s.GoProxy != "" {
		want["GOPROXY"] = s.GoProxy
	}
	if s.ModulesGeneration != 0 {
		want[ModulesGenerationEnv] = fmt.Sprint(s.ModulesGeneration)
	} else if _, ok := env[ModulesGenerationEnv]; ok {
		t.Errorf("%s set for generation 0", ModulesGenerationEnv)
	}
	if len(exec.Meta.Ulimit) != len(s.Ulimits) || exec.Meta.CgroupParent != s.CgroupParent {
		t.Errorf("download ulimits %v, cgroup parent %q; want %v, %q", exec.Meta.Ulimit, exec.Meta.CgroupParent, s.Ulimits, s.CgroupParent)
	}
	for k, v := range want {
		if env[k] != v {
			t.Errorf("download env %s = %q, want %q", k, env[k], v)
		}
	}
	for k, v := range compileEnv {
		// Each step's own; as another user, go build has its own HOME and
		// GOCACHE too, and the remote build cache is go build's alone.
		remote := k == "GOCACHEPROG" || k == "BUILDSVC_GOCACHE_DIR" || k == "BUILDSVC_GOCACHE_SOCKET" || k == "BUILDSVC_GOCACHE_SEED" || k == "SSH_AUTH_SOCK"
		// The target platform is the compile step's alone: the download
		// step is one for every platform of a commit.
		target := k == "GOOS" || k == "GOARCH" || k == "GOARM"
		own := k == "GOPROXY" || k == "GOFLAGS" || s.BuildUser != "" && (k == "HOME" || k == "GOCACHE") || s.RemoteBuildCache && remote || target
		if remote && env[k] != "" {
			t.Errorf("download env %s = %q: the remote build cache is the compile step's", k, env[k])
		}
		if target && env[k] != "" {
			t.Errorf("download env %s = %q: the target platform is the compile step's", k, env[k])
		}
		if !own && env[k] != v {
			t.Errorf("download env %s = %q, the compile step has %q", k, env[k], v)
		}
	}
	var modCache, modules *pb.Mount
	for _, m := range exec.Mounts {
		switch m.Dest {
		case "/go/pkg/mod":
			modCache = m
		case ModulesDir:
			modules = m
		case "/root/.cache/go-build", SourceDir:
			t.Errorf("the download step mounts %s", m.Dest)
		}
	}
	if modCache == nil || modCache.Readonly || modCache.CacheOpt.GetID() != cmp.Or(s.ModCacheID, "buildsvc-gomodcache") {
		t.Errorf("download module cache mount %v, want the module cache, writable", modCache)
	}
	if modules == nil || modules.Input < 0 {
		t.Fatalf("no module files at %s: %v", ModulesDir, exec.Mounts)
	}
	files := g.input(t, op.Inputs[modules.Input]).GetFile()
	if files == nil || len(files.Actions) != 1 || files.Actions[0].GetCopy() == nil {
		t.Fatalf("the module files are not one copy: %v", files)
	}
	cp := files.Actions[0].GetCopy()
	if !slices.Equal(cp.IncludePatterns, []string{"**/go.mod", "**/go.sum", "**/go.work", "**/go.work.sum"}) || cp.Src != "/" {
		t.Errorf("module files copy %v, want every go.mod, go.sum, go.work and go.work.sum", cp)
	}
}

// goCache is where the compile step of s has its build cache.
func goCache(s Spec) string {
	if s.BuildUser != "" {
		return "/var/cache/buildsvc/go-build"
	}
	return "/root/.cache/go-build"
}

func TestReadBack(t *testing.T) {
	for name, s := range specs() {
		t.Run(name, func(t *testing.T) {
			res := mustBuild(t, s)
			g := readBack(t, res)

			// The head is the copy onto the base image.
			file := g.head.GetFile()
			if file == nil || len(file.Actions) != 1 || file.Actions[0].GetCopy() == nil {
				t.Fatalf("head op is not a single copy: %v", g.head)
			}
			cp := file.Actions[0].GetCopy()
			if want := "/usr/local/bin/" + s.Binary; cp.Dest != want {
				t.Errorf("copy dest = %q, want %q", cp.Dest, want)
			}
			wantSrc := "/" + s.Binary
			if s.BuildUser != "" {
				wantSrc = "/out/" + s.Binary // the output directory made for the user
				if cp.Owner.GetUser().GetByID() != 0 || cp.Owner.GetGroup().GetByID() != 0 || cp.Owner == nil {
					t.Errorf("the binary is not copied as root's: %v", cp.Owner)
				}
			}
			if cp.Src != wantSrc {
				t.Errorf("copy src = %q, want %q", cp.Src, wantSrc)
			}
			if cp.Mode != 0o755 || !cp.CreateDestPath {
				t.Errorf("copy mode %o, create dest path %v; want 755, true", cp.Mode, cp.CreateDestPath)
			}
			if len(g.head.Inputs) != 2 {
				t.Fatalf("copy has %d inputs, want 2 (base, build output)", len(g.head.Inputs))
			}
			baseOp := g.input(t, g.head.Inputs[file.Actions[0].Input])
			outOp := g.input(t, g.head.Inputs[file.Actions[0].SecondaryInput])

			// The base image, on the target platform.
			src := baseOp.GetSource()
			if src == nil || !strings.HasPrefix(src.Identifier, "docker-image://") {
				t.Fatalf("copy base is not an image source: %v", baseOp)
			}
			if wantRef := normalizedRef(s.Base.Ref); src.Identifier != "docker-image://"+wantRef {
				t.Errorf("base identifier %q, want docker-image://%s", src.Identifier, wantRef)
			}
			assertPlatform(t, "base", baseOp.Platform, s.Platform)

			// The build output: the /out mount of the go build exec.
			exec := outOp.GetExec()
			if exec == nil {
				t.Fatalf("copy source is not an exec: %v", outOp)
			}
			assertPlatform(t, "exec", outOp.Platform, s.BuildPlatform)
			var outMount *pb.Mount
			for _, m := range exec.Mounts {
				if m.Dest == OutputDir {
					outMount = m
				}
			}
			if outMount == nil || outMount.Output < 0 || (s.BuildUser == "") != (outMount.Input == int64(pb.Empty)) {
				t.Fatalf("no output mount at %s (from scratch as root, from a directory made for the user otherwise): %v", OutputDir, exec.Mounts)
			}
			if s.BuildUser != "" && (outMount.Selector != "/out" || exec.Meta.User != s.BuildUser) {
				t.Errorf("as user %s: output mount selector %q, step user %q", s.BuildUser, outMount.Selector, exec.Meta.User)
			}
			if s.BuildUser == "" && exec.Meta.User != "" {
				t.Errorf("the step runs as %q, want the builder's user", exec.Meta.User)
			}
			outIndex := g.head.Inputs[file.Actions[0].SecondaryInput].Index
			if outIndex != outMount.Output {
				t.Errorf("copy reads exec output %d, the /out mount is output %d", outIndex, outMount.Output)
			}

			wantArgs := []string{"go", "build", "-trimpath", "-o", "/out/" + s.Binary}
			wantArgs = append(wantArgs, s.BuildFlags...)
			if s.LDFlags != "" {
				wantArgs = append(wantArgs, "-ldflags", s.LDFlags)
			}
			wantArgs = append(wantArgs, s.Package)
			if !slices.Equal(exec.Meta.Args, wantArgs) {
				t.Errorf("args = %q, want %q", exec.Meta.Args, wantArgs)
			}
			if want := filepath.Join("/src", s.Dir); exec.Meta.Cwd != want {
				t.Errorf("cwd = %q, want %q", exec.Meta.Cwd, want)
			}

			env := envMap(exec.Meta.Env)
			if len(env) != len(exec.Meta.Env) {
				t.Errorf("env has duplicate keys: %q", exec.Meta.Env)
			}
			wantEnv := map[string]string{
				"CGO_ENABLED": "0",
				"GOOS":        s.Platform.OS,
				"GOARCH":      s.Platform.Architecture,
				"HOME":        cmp.Or(map[bool]string{true: "/tmp"}[s.BuildUser != ""], "/root"),
				"GOCACHE":     goCache(s),
				"GOMODCACHE":  "/go/pkg/mod",
				"GOTOOLCHAIN": "auto",
				// The compile step has no network.
				"GOPROXY": "off",
			}
			if s.Platform.Architecture == "arm" {
				wantEnv["GOARM"] = strings.TrimPrefix(s.Platform.Variant, "v")
			}
			if s.ModCacheID != "" || s.BuildCacheID != "" {
				wantEnv[CacheScopeEnv] = cmp.Or(s.ModCacheID, "buildsvc-gomodcache") + "," + cmp.Or(s.BuildCacheID, "buildsvc-gocache")
			} else if _, ok := env[CacheScopeEnv]; ok {
				t.Errorf("%s set with the default cache ids", CacheScopeEnv)
			}
			if s.GoFlags != "" {
				wantEnv["GOFLAGS"] = s.GoFlags
			}
			remoteEnv := map[string]string{
				"GOCACHEPROG":             "/usr/local/bin/buildsvc-gocacheprog",
				"BUILDSVC_GOCACHE_DIR":    goCache(s),
				"BUILDSVC_GOCACHE_SOCKET": "/run/buildsvc/gocache.sock",
				// BuildKit's own, for the ssh mount.
				"SSH_AUTH_SOCK": "/run/buildsvc/gocache.sock",
			}
			for k, v := range remoteEnv {
				if !s.RemoteBuildCache {
					if got, ok := env[k]; ok {
						t.Errorf("env %s = %q without the remote build cache", k, got)
					}
					continue
				}
				wantEnv[k] = v
			}
			// The seed, only from a builder that says it has one.
			seeded := strings.Contains(string(s.Builder.Config), LabelGoCacheSeed)
			if s.RemoteBuildCache && seeded {
				wantEnv["BUILDSVC_GOCACHE_SEED"] = "/usr/local/share/buildsvc/gocache-std"
			} else if got, ok := env["BUILDSVC_GOCACHE_SEED"]; ok {
				t.Errorf("env BUILDSVC_GOCACHE_SEED = %q, want none (remote cache %v, seeded builder %v)", got, s.RemoteBuildCache, seeded)
			}
			for k, v := range s.Env {
				wantEnv[k] = v
			}
			for k, v := range wantEnv {
				if got, ok := env[k]; !ok || got != v {
					t.Errorf("env %s = %q (set %v), want %q", k, got, ok, v)
				}
			}
			if _, ok := env["GOARM"]; ok && s.Platform.Architecture != "arm" {
				t.Errorf("GOARM set for %s", s.Platform.Architecture)
			}
			if s.Builder.Config != nil {
				// The builder's ENV is carried.
				if env["GOROOT"] != "/usr/local/go" || env["PATH"] != "/usr/local/go/bin:/go/bin:/bin" {
					t.Errorf("builder image env not carried: %q", exec.Meta.Env)
				}
			} else if !strings.Contains(env["PATH"], "/usr/local/go/bin") {
				t.Errorf("no builder config and PATH %q has no Go toolchain", env["PATH"])
			}

			// Mounts: root = builder image, /src = git read-only, caches.
			mounts := map[string]*pb.Mount{}
			for _, m := range exec.Mounts {
				mounts[m.Dest] = m
			}
			// With a builder config that names GOROOT, the Go root is a
			// seventh mount (see checkGoRoot).
			wantMounts := 6
			if s.Builder.Config != nil {
				wantMounts++
			}
			if s.RemoteBuildCache {
				wantMounts++ // the store's socket
			}
			checkSocket(t, s, mounts["/run/buildsvc/gocache.sock"])
			if len(mounts) != wantMounts {
				t.Errorf("want %d mounts (/, /src, /out, 2 caches, the download step's, the Go root with a builder config), got %v", wantMounts, exec.Mounts)
			}
			checkGoRoot(t, g, s, outOp, mounts["/usr/local/go"])
			// No network; the module cache read-only, the build cache not.
			if exec.Network != pb.NetMode_NONE {
				t.Errorf("go build has network %v, want none", exec.Network)
			}
			if len(exec.Meta.Ulimit) != len(s.Ulimits) || exec.Meta.CgroupParent != s.CgroupParent {
				t.Errorf("go build ulimits %v, cgroup parent %q; want %v, %q", exec.Meta.Ulimit, exec.Meta.CgroupParent, s.Ulimits, s.CgroupParent)
			}
			for i, u := range s.Ulimits {
				if got := exec.Meta.Ulimit[i]; got.Name != u.Name || got.Soft != u.Soft || got.Hard != u.Hard {
					t.Errorf("ulimit %d = %v, want %v", i, got, u)
				}
			}
			for dest, c := range map[string]struct {
				id       string
				readonly bool
			}{
				"/go/pkg/mod": {cmp.Or(s.ModCacheID, "buildsvc-gomodcache"), true},
				goCache(s):    {cmp.Or(s.BuildCacheID, "buildsvc-gocache"), false},
			} {
				m := mounts[dest]
				if m == nil {
					t.Errorf("no cache mount at %s", dest)
					continue
				}
				// As another user the build cache starts from a directory
				// made for that user.
				fromScratch := s.BuildUser == "" || c.readonly
				if m.MountType != pb.MountType_CACHE || m.CacheOpt.GetID() != c.id || m.Readonly != c.readonly ||
					m.CacheOpt.GetSharing() != pb.CacheSharingOpt_SHARED || (m.Input == int64(pb.Empty)) != fromScratch {
					t.Errorf("cache mount at %s = %v, want CACHE id %s SHARED, from scratch %v, read-only %v", dest, m, c.id, fromScratch, c.readonly)
				}
			}
			checkDownload(t, g, s, outOp, mounts["/tmp/buildsvc-downloaded"], env)

			root := mounts["/"]
			if root == nil {
				t.Fatal("no root mount")
			}
			builderOp := g.input(t, outOp.Inputs[root.Input])
			if id := builderOp.GetSource().GetIdentifier(); id != "docker-image://"+normalizedRef(s.Builder.Ref) {
				t.Errorf("builder identifier %q, want docker-image://%s", id, normalizedRef(s.Builder.Ref))
			}
			assertPlatform(t, "builder", builderOp.Platform, s.BuildPlatform)

			srcMount := mounts["/src"]
			if srcMount == nil || !srcMount.Readonly {
				t.Fatalf("source mount %v, want read-only at /src", srcMount)
			}
			gitOp := g.input(t, outOp.Inputs[srcMount.Input])
			gitSrc := gitOp.GetSource()
			if gitSrc == nil || !strings.HasPrefix(gitSrc.Identifier, "git://") ||
				!strings.HasSuffix(gitSrc.Identifier, "#"+s.Commit) {
				t.Errorf("git identifier %q does not pin %s", gitSrc.GetIdentifier(), s.Commit)
			}
			if gitSrc.Attrs[pb.AttrKeepGitDir] != "" {
				t.Errorf("git source keeps .git: %v", gitSrc.Attrs)
			}
			if gitSrc.Attrs[pb.AttrFullRemoteURL] != s.Repo {
				t.Errorf("git full URL %q, want %q", gitSrc.Attrs[pb.AttrFullRemoteURL], s.Repo)
			}

			// Custom names.
			names := map[string]bool{}
			for _, md := range res.Definition.Metadata {
				if n := md.Description["llb.customname"]; n != "" {
					names[n] = true
				}
			}
			for _, n := range []string{
				"git " + s.Repo + "@" + s.Commit[:12],
				"go build " + s.Package,
				"copy " + s.Binary,
			} {
				if !names[n] {
					t.Errorf("no vertex named %q in %v", n, names)
				}
			}

			checkImageConfig(t, s, res.ImageConfig)
		})
	}
}

// checkSocket checks the compile step's mount of the build cache store's
// socket: there with the remote build cache only, optional, owned by the
// step's user.
func checkSocket(t *testing.T, s Spec, m *pb.Mount) {
	t.Helper()
	if !s.RemoteBuildCache {
		if m != nil {
			t.Errorf("socket mount without the remote build cache: %v", m)
		}
		return
	}
	if m == nil {
		t.Fatal("no socket mount at /run/buildsvc/gocache.sock")
	}
	uid, gid, _ := ParseUser(s.BuildUser)
	o := m.SSHOpt
	if m.MountType != pb.MountType_SSH || o == nil || o.ID != "buildsvc.gocache" || !o.Optional ||
		o.Uid != uint32(uid) || o.Gid != uint32(gid) || o.Mode != 0o600 || m.Input != int64(pb.Empty) {
		t.Errorf("socket mount = %v, want optional ssh id buildsvc.gocache owned by %d:%d mode 600", m, uid, gid)
	}
}

func normalizedRef(ref string) string {
	switch ref {
	case "golang:alpine":
		return "docker.io/library/golang:alpine"
	}
	return ref
}

func assertPlatform(t *testing.T, what string, got *pb.Platform, want ocispecs.Platform) {
	t.Helper()
	if got == nil || got.OS != want.OS || got.Architecture != want.Architecture || got.Variant != want.Variant {
		t.Errorf("%s platform = %v, want %s/%s/%s", what, got, want.OS, want.Architecture, want.Variant)
	}
}

func checkImageConfig(t *testing.T, s Spec, dt []byte) {
	t.Helper()
	var img ocispecs.Image
	if err := json.Unmarshal(dt, &img); err != nil {
		t.Fatalf("image config: %v", err)
	}
	if img.OS != s.Platform.OS || img.Architecture != s.Platform.Architecture || img.Variant != s.Platform.Variant {
		t.Errorf("image platform %s/%s/%s, want %v", img.OS, img.Architecture, img.Variant, s.Platform)
	}
	if img.Created != nil {
		t.Errorf("image config has created %v; the exporter sets it", img.Created)
	}
	if want := []string{"/usr/local/bin/" + s.Binary}; !slices.Equal(img.Config.Entrypoint, want) {
		t.Errorf("entrypoint %q, want %q", img.Config.Entrypoint, want)
	}
	if img.Config.Cmd != nil {
		t.Errorf("cmd %q, want none", img.Config.Cmd)
	}
	if img.Config.Labels[LabelSource] != sourceURL(s.Repo) || img.Config.Labels[LabelRevision] != s.Commit {
		t.Errorf("labels %v lack source %s / revision %s", img.Config.Labels, sourceURL(s.Repo), s.Commit)
	}
	if strings.Contains(img.Config.Labels[LabelSource], "@") {
		t.Errorf("source label %q has user info", img.Config.Labels[LabelSource])
	}
	for k, v := range s.Labels {
		if k == LabelSource || k == LabelRevision {
			continue
		}
		if img.Config.Labels[k] != v {
			t.Errorf("label %s = %q, want %q", k, img.Config.Labels[k], v)
		}
	}

	if s.Base.Config == nil {
		if img.Config.WorkingDir != "/" || !slices.Equal(img.Config.Env, []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}) {
			t.Errorf("minimal config: workdir %q env %q", img.Config.WorkingDir, img.Config.Env)
		}
		if img.RootFS.Type != "layers" || len(img.RootFS.DiffIDs) != 0 || len(img.History) != 0 {
			t.Errorf("minimal config rootfs %v history %v", img.RootFS, img.History)
		}
		return
	}
	var base ocispecs.Image
	if err := json.Unmarshal(s.Base.Config, &base); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(img.Config.Env, base.Config.Env) || img.Config.User != base.Config.User {
		t.Errorf("env %q user %q, want the base's %q %q", img.Config.Env, img.Config.User, base.Config.Env, base.Config.User)
	}
	if img.Config.WorkingDir != "/" {
		t.Errorf("workdir %q, want /", img.Config.WorkingDir)
	}
	if img.Config.Labels["maintainer"] != base.Config.Labels["maintainer"] {
		t.Errorf("base label lost: %v", img.Config.Labels)
	}
	if !slices.Equal(img.RootFS.DiffIDs, base.RootFS.DiffIDs) || len(img.History) != len(base.History) {
		t.Errorf("rootfs/history changed: %v %v", img.RootFS, img.History)
	}
	// Fields this package does not model pass through.
	var raw struct {
		Config map[string]json.RawMessage `json:"config"`
	}
	if err := json.Unmarshal(dt, &raw); err != nil {
		t.Fatal(err)
	}
	if string(raw.Config["Healthcheck"]) != `{"Test":["NONE"]}` {
		t.Errorf("Healthcheck not kept: %s", raw.Config["Healthcheck"])
	}
}

func TestDeterministic(t *testing.T) {
	for name, s := range specs() {
		t.Run(name, func(t *testing.T) {
			first := serialize(t, mustBuild(t, s))
			for range 10 {
				if got := serialize(t, mustBuild(t, s)); !bytes.Equal(got, first) {
					t.Fatal("two builds of the same spec differ")
				}
			}
		})
	}
}

// serialize is every byte of a Result: the definition as a deterministic
// protobuf (ops, metadata, source map) and the image config.
func serialize(t *testing.T, res *Result) []byte {
	t.Helper()
	def, err := proto.MarshalOptions{Deterministic: true}.Marshal(res.Definition.ToPB())
	if err != nil {
		t.Fatal(err)
	}
	return append(append(def, 0), res.ImageConfig...)
}

func TestInvalidSpec(t *testing.T) {
	good := specs()["root"]
	for _, tc := range []struct {
		name   string
		change func(*Spec)
	}{
		{"empty repo", func(s *Spec) { s.Repo = "" }},
		{"ssh repo", func(s *Spec) { s.Repo = "git@github.com:example/hello.git" }},
		{"ssh url repo", func(s *Spec) { s.Repo = "ssh://git@github.com/example/hello.git" }},
		{"credentials in repo", func(s *Spec) { s.Repo = "https://user:token@github.com/example/hello.git" }},
		{"fragment in repo", func(s *Spec) { s.Repo = "https://github.com/example/hello.git#main" }},
		{"unsupported scheme", func(s *Spec) { s.Repo = "ftp://example.com/hello.git" }},
		{"branch commit", func(s *Spec) { s.Commit = "main" }},
		{"short commit", func(s *Spec) { s.Commit = sha1Commit[:12] }},
		{"uppercase commit", func(s *Spec) { s.Commit = strings.ToUpper(sha1Commit) }},
		{"41 char commit", func(s *Spec) { s.Commit = sha1Commit + "0" }},
		{"empty binary", func(s *Spec) { s.Binary = "" }},
		{"binary path", func(s *Spec) { s.Binary = "bin/hello" }},
		{"dot binary", func(s *Spec) { s.Binary = ".." }},
		{"empty package", func(s *Spec) { s.Package = "" }},
		{"empty dir", func(s *Spec) { s.Dir = "" }},
		{"absolute dir", func(s *Spec) { s.Dir = "/etc" }},
		{"escaping dir", func(s *Spec) { s.Dir = "a/../../etc" }},
		{"empty builder", func(s *Spec) { s.Builder.Ref = "" }},
		{"empty base", func(s *Spec) { s.Base.Ref = "" }},
		{"no platform", func(s *Spec) { s.Platform = ocispecs.Platform{} }},
		{"no build platform", func(s *Spec) { s.BuildPlatform = ocispecs.Platform{OS: "linux"} }},
		{"bad builder config", func(s *Spec) { s.Builder.Config = []byte("{") }},
		{"null base config", func(s *Spec) { s.Base.Config = []byte("null") }},
		{"bad base labels", func(s *Spec) { s.Base.Config = []byte(`{"config":{"Labels":["x"]}}`) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := good
			tc.change(&s)
			res, err := Build(context.Background(), s)
			if err == nil {
				t.Fatalf("Build succeeded: %v", res)
			}
			if !errors.Is(err, ErrInvalidSpec) {
				t.Errorf("error %q does not wrap ErrInvalidSpec", err)
			}
		})
	}
}

// TestBadImageRef checks that a reference BuildKit cannot parse fails the
// build instead of making a graph.
func TestBadImageRef(t *testing.T) {
	s := specs()["root"]
	s.Base.Ref = "Not A Reference"
	if _, err := Build(context.Background(), s); err == nil {
		t.Fatal("Build with an invalid base reference succeeded")
	}
}

// TestDoesNotMutateSpec checks that Build leaves the caller's config bytes
// and maps alone.
func TestDoesNotMutateSpec(t *testing.T) {
	s := specs()["subdir"]
	cfg := slices.Clone(s.Base.Config)
	env := fmt.Sprint(s.Env)
	labels := fmt.Sprint(s.Labels)
	mustBuild(t, s)
	if !bytes.Equal(cfg, s.Base.Config) || env != fmt.Sprint(s.Env) || labels != fmt.Sprint(s.Labels) {
		t.Error("Build changed its Spec")
	}
}

func TestSourceDefinitionMatchesTheGraph(t *testing.T) {
	for name, s := range specs() {
		t.Run(name, func(t *testing.T) {
			def, err := SourceDefinition(context.Background(), s)
			if err != nil {
				t.Fatal(err)
			}
			var src *pb.SourceOp
			for _, dt := range def.Def {
				var op pb.Op
				if err := op.UnmarshalVT(dt); err != nil {
					t.Fatal(err)
				}
				if op.GetSource() != nil {
					src = op.GetSource()
				}
			}
			if src == nil || !strings.HasPrefix(src.GetIdentifier(), "git://") || !strings.Contains(src.GetIdentifier(), s.Commit) {
				t.Fatalf("source %v does not pin %s", src, s.Commit)
			}
			if src.Attrs[pb.AttrGitMTime] != "commit" {
				t.Errorf("source %v does not set the commit's mtime", src.Attrs)
			}
			// The same op, byte for byte: solving it first fetches what
			// the build uses.
			graph := map[string]bool{}
			for _, dt := range mustBuild(t, s).Definition.Def {
				graph[string(dt)] = true
			}
			if !graph[string(def.Def[0])] {
				t.Error("the build's graph has no op equal to the source definition's")
			}
		})
	}
}

// TestPrivateSources checks where the graph of a private build refers to
// the session's secrets and agent: the netrc and the internal CA in the
// download step only, the secret environment in both steps, the ssh agent
// and known hosts on the git source, and no secret anywhere else.
func TestPrivateSources(t *testing.T) {
	s := specs()["private-ssh"]
	res := mustBuild(t, s)
	var gitSrc *pb.SourceOp
	execs := map[string]*pb.ExecOp{}
	for _, dt := range res.Definition.Def {
		var op pb.Op
		if err := op.UnmarshalVT(dt); err != nil {
			t.Fatal(err)
		}
		if src := op.GetSource(); src != nil && strings.HasPrefix(src.Identifier, "git://") {
			gitSrc = src
		}
		if e := op.GetExec(); e != nil {
			execs[e.Meta.Args[1]] = e // "mod" or "build"
		}
	}
	if gitSrc == nil || gitSrc.Attrs[pb.AttrKnownSSHHosts] != s.KnownHosts || gitSrc.Attrs[pb.AttrMountSSHSock] != GitSSHID {
		t.Fatalf("git source %v: want known hosts and ssh agent %s", gitSrc, GitSSHID)
	}
	secrets := func(e *pb.ExecOp) (files []string, env []string) {
		for _, m := range e.Mounts {
			if m.MountType == pb.MountType_SECRET {
				files = append(files, m.Dest+"="+m.SecretOpt.ID)
			}
		}
		for _, se := range e.Secretenv {
			env = append(env, se.Name+"="+se.ID)
		}
		return files, env
	}
	wantEnv := []string{"API_TOKEN=" + SecretEnvIDPrefix + "API_TOKEN", "GOFLAGS=" + SecretEnvIDPrefix + "GOFLAGS"}
	for step, want := range map[string][]string{"mod": {NetrcPath + "=" + NetrcSecretID}, "build": nil} {
		e := execs[step]
		if e == nil {
			t.Fatalf("no go %s step", step)
		}
		files, env := secrets(e)
		if !slices.Equal(files, want) || !slices.Equal(env, wantEnv) {
			t.Errorf("go %s: secret files %v, env %v; want %v, %v", step, files, env, want, wantEnv)
		}
		hasCA := slices.ContainsFunc(e.Mounts, func(m *pb.Mount) bool { return m.Dest == CADir && m.Readonly })
		if hasCA != (step == "mod") {
			t.Errorf("go %s: CA mount %v", step, hasCA)
		}
	}
}

func TestGoRootMount(t *testing.T) {
	builder := bkllb.Image("registry.example/builder/go:1.26")
	mounts := []string{SourceDir, GoModCachePath, GoCachePath, downloadedDir, OutputDir}
	for _, tc := range []struct {
		name string
		env  []string // the builder config's Env; nil for no config
		want string   // the mount's path; empty for none
	}{
		{"no config", nil, ""},
		{"no GOROOT", []string{"PATH=/usr/local/go/bin"}, ""},
		{"GOROOT", []string{"GOROOT=/usr/local/go"}, "/usr/local/go"},
		{"elsewhere", []string{"GOROOT=/opt/go"}, "/opt/go"},
		{"relative", []string{"GOROOT=go"}, ""},
		{"not clean", []string{"GOROOT=/usr/local/go/"}, ""},
		{"root", []string{"GOROOT=/"}, ""},
		{"empty", []string{"GOROOT="}, ""},
		{"holds the module cache", []string{"GOROOT=/go"}, ""},
		{"inside the source", []string{"GOROOT=/src/go"}, ""},
		{"prefix of a mount's name only", []string{"GOROOT=/sr"}, "/sr"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var cfg *parsedConfig
			if tc.env != nil {
				cfg = &parsedConfig{env: tc.env}
			}
			opts := goRootMount(builder, cfg, mounts)
			st := bkllb.Scratch().Run(append([]bkllb.RunOption{bkllb.Args([]string{"true"})}, opts...)...).Root()
			def, err := st.Marshal(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			var got string
			for _, dt := range def.Def {
				var op pb.Op
				if err := proto.Unmarshal(dt, &op); err != nil {
					t.Fatal(err)
				}
				for _, m := range op.GetExec().GetMounts() {
					if m.Dest != "/" {
						if got != "" || !m.Readonly {
							t.Errorf("mounts %v, want at most one, read-only", op.GetExec().Mounts)
						}
						got = m.Dest
					}
				}
			}
			if got != tc.want {
				t.Errorf("Go root mounted at %q, want %q", got, tc.want)
			}
		})
	}
}

func TestBuilderHasGoCacheProg(t *testing.T) {
	for _, tc := range []struct {
		name   string
		config string
		want   bool
	}{
		{"bootstrap builder", builderConfigCacheProg, true},
		{"no labels", builderConfig, false},
		{"other path", strings.Replace(builderConfigCacheProg, "/usr/local/bin/buildsvc-gocacheprog", "/bin/true", 1), false},
		{"no config", "", false},
		{"bad config", "{", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := BuilderHasGoCacheProg([]byte(tc.config)); got != tc.want {
				t.Errorf("BuilderHasGoCacheProg = %v, want %v", got, tc.want)
			}
		})
	}
}

// The remote build cache changes the compile step only, and only with a
// builder that has the helper: with any other, the graph is the one
// without it.
func TestRemoteBuildCacheNeedsTheHelper(t *testing.T) {
	for name, builder := range map[string][]byte{"no label": []byte(builderConfig), "no config": nil} {
		t.Run(name, func(t *testing.T) {
			s := specs()["root"]
			s.Builder.Config = builder
			without := serialize(t, mustBuild(t, s))
			s.RemoteBuildCache = true
			if with := serialize(t, mustBuild(t, s)); !bytes.Equal(with, without) {
				t.Error("the remote build cache changed the graph of a builder without the helper")
			}
		})
	}
}

func TestRemoteBuildCacheChangesOnlyTheCompileStep(t *testing.T) {
	s := specs()["root"]
	s.Builder.Config = []byte(builderConfigCacheProg)
	s.RemoteBuildCache = true
	with := readBack(t, mustBuild(t, s))
	s.RemoteBuildCache = false
	without := readBack(t, mustBuild(t, s))
	var changed []string
	for d, op := range with.ops {
		if _, ok := without.ops[d]; !ok {
			changed = append(changed, opKind(op))
		}
	}
	slices.Sort(changed)
	// The compile step and what reads its output: the copy onto the base
	// image and the definition's terminal op.
	if !slices.Equal(changed, []string{"exec", "file", "other"}) {
		t.Errorf("ops changed by the remote build cache: %v, want the compile step and the copy", changed)
	}
}

func opKind(op *pb.Op) string {
	switch {
	case op.GetExec() != nil:
		if slices.Contains(op.GetExec().Meta.Args, "download") {
			return "download"
		}
		return "exec"
	case op.GetFile() != nil:
		return "file"
	case op.GetSource() != nil:
		return "source"
	}
	return "other"
}
