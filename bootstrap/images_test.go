package bootstrap

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/moby/buildkit/client/llb"
	"github.com/moby/buildkit/solver/pb"
	digest "github.com/opencontainers/go-digest"
	ocispecs "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/buildsvc/buildsvc/buildcache"
	"github.com/buildsvc/buildsvc/buildcache/cacheprog"
	svcllb "github.com/buildsvc/buildsvc/llb"
)

var testEpoch = time.Date(2026, 8, 28, 16, 20, 6, 0, time.UTC)

func testSpec() Spec {
	return Spec{
		GoRoot:     "/opt/go",
		Busybox:    "/usr/bin/busybox",
		CACerts:    "/etc/ssl/certs/bundle.pem",
		GoVersion:  "go1.26.8",
		Epoch:      testEpoch,
		Platform:   ocispecs.Platform{OS: "linux", Architecture: "amd64"},
		BuilderRef: "127.0.0.1:5000/buildsvc/builder:go1.26",
		BaseRef:    "127.0.0.1:5000/buildsvc/base:1",
	}
}

// graph is a marshalled definition read back: its ops in order, and the
// custom names of its vertices.
type graph struct {
	ops   []*pb.Op
	names []string
}

func marshalGraph(t *testing.T, st llb.State) graph {
	t.Helper()
	def, err := marshal(context.Background(), st, testSpec(), "test")
	if err != nil {
		t.Fatal(err)
	}
	var g graph
	for _, dt := range def.Def {
		var op pb.Op
		if err := op.Unmarshal(dt); err != nil {
			t.Fatal(err)
		}
		g.ops = append(g.ops, &op)
	}
	for _, m := range def.Metadata {
		if n := m.Description["llb.customname"]; n != "" {
			g.names = append(g.names, n)
		}
	}
	slices.Sort(g.names)
	return g
}

func (g graph) sources() map[string]*pb.SourceOp {
	m := map[string]*pb.SourceOp{}
	for _, op := range g.ops {
		if s := op.GetSource(); s != nil {
			m[s.Identifier] = s
		}
	}
	return m
}

func (g graph) execs() []*pb.ExecOp {
	var out []*pb.ExecOp
	for _, op := range g.ops {
		if e := op.GetExec(); e != nil {
			out = append(out, e)
		}
	}
	return out
}

func (g graph) fileActions() []*pb.FileAction {
	var out []*pb.FileAction
	for _, op := range g.ops {
		if f := op.GetFile(); f != nil {
			out = append(out, f.Actions...)
		}
	}
	return out
}

func (g graph) mkfile(t *testing.T, path string) *pb.FileActionMkFile {
	t.Helper()
	for _, a := range g.fileActions() {
		if m := a.GetMkfile(); m != nil && m.Path == path {
			return m
		}
	}
	t.Fatalf("no mkfile %s", path)
	return nil
}

func (g graph) copyTo(t *testing.T, dest string) *pb.FileActionCopy {
	t.Helper()
	for _, a := range g.fileActions() {
		if c := a.GetCopy(); c != nil && c.Dest == dest {
			return c
		}
	}
	t.Fatalf("no copy to %s", dest)
	return nil
}

func (g graph) mkdir(t *testing.T, path string) *pb.FileActionMkDir {
	t.Helper()
	for _, a := range g.fileActions() {
		if m := a.GetMkdir(); m != nil && m.Path == path {
			return m
		}
	}
	t.Fatalf("no mkdir %s", path)
	return nil
}

func TestBuilderStateIsDeterministic(t *testing.T) {
	ctx := context.Background()
	first, err := marshal(ctx, BuilderState(testSpec()), testSpec(), "test")
	if err != nil {
		t.Fatal(err)
	}
	for range 5 {
		def, err := marshal(ctx, BuilderState(testSpec()), testSpec(), "test")
		if err != nil {
			t.Fatal(err)
		}
		if !slices.EqualFunc(first.Def, def.Def, bytes.Equal) {
			t.Fatal("builder LLB differs between two marshals of the same spec")
		}
	}
}

func TestBuilderStateSources(t *testing.T) {
	g := marshalGraph(t, BuilderState(testSpec()))
	src := g.sources()

	goroot := src["local://"+LocalGoRoot]
	if goroot == nil {
		t.Fatalf("no Go root local source in %v", keys(src))
	}
	var excludes []string
	if err := json.Unmarshal([]byte(goroot.Attrs[pb.AttrExcludePatterns]), &excludes); err != nil {
		t.Fatalf("exclude patterns %q: %v", goroot.Attrs[pb.AttrExcludePatterns], err)
	}
	if !slices.Equal(excludes, []string{"api", "doc", "test"}) {
		t.Errorf("Go root excludes = %v", excludes)
	}
	for _, keep := range []string{"src", "pkg", "bin", "lib"} {
		if slices.Contains(excludes, keep) {
			t.Errorf("Go root excludes %s, which go build needs", keep)
		}
	}

	for name, file := range map[string]string{LocalBusybox: "busybox", LocalCACerts: "bundle.pem"} {
		s := src["local://"+name]
		if s == nil {
			t.Fatalf("no local source %s in %v", name, keys(src))
		}
		if got, want := s.Attrs[pb.AttrIncludePatterns], `["`+file+`"]`; got != want {
			t.Errorf("%s include patterns = %s, want %s", name, got, want)
		}
	}
	if len(src) != 3 {
		t.Errorf("sources = %v, want only the three local contexts", keys(src))
	}
	if !slices.Contains(g.names, "[builder] load Go root /opt/go") {
		t.Errorf("vertex names %q miss the Go root", g.names)
	}
}

func TestBuilderStateInstallsBusybox(t *testing.T) {
	g := marshalGraph(t, BuilderState(testSpec()))
	var busybox []*pb.ExecOp
	for _, e := range g.execs() {
		if e.Meta.Args[0] == "/bin/busybox" {
			busybox = append(busybox, e)
		}
	}
	// The other execs build the GOCACHEPROG helper and its seed.
	if len(busybox) != 1 || len(g.execs()) != 3 {
		t.Fatalf("%d busybox exec ops of %d, want 1 of 3", len(busybox), len(g.execs()))
	}
	e := busybox[0]
	if want := []string{"/bin/busybox", "--install", "-s", "/bin"}; !slices.Equal(e.Meta.Args, want) {
		t.Errorf("exec args = %q, want exec form %q", e.Meta.Args, want)
	}
	if e.Network != pb.NetMode_NONE {
		t.Errorf("exec network = %v, want none", e.Network)
	}

	links := g.copyTo(t, "/bin")
	if links.Src != "/bin" || !links.DirCopyContents || !slices.Equal(links.ExcludePatterns, []string{"busybox"}) {
		t.Errorf("applet links copy = %+v", links)
	}

	c := g.copyTo(t, "/bin/busybox")
	if c.Src != "/busybox" || c.Mode != 0o755 || !c.CreateDestPath {
		t.Errorf("busybox copy = %s mode %o", c.Src, c.Mode)
	}
}

func TestBuilderStateFiles(t *testing.T) {
	g := marshalGraph(t, BuilderState(testSpec()))

	goroot := g.copyTo(t, "/usr/local/go")
	if goroot.Src != "/" || !goroot.DirCopyContents || !goroot.CreateDestPath || goroot.Mode != -1 {
		t.Errorf("Go root copy = %+v", goroot)
	}
	if c := g.copyTo(t, "/etc/ssl/certs/ca-certificates.crt"); c.Src != "/bundle.pem" {
		t.Errorf("CA certificates copied from %s", c.Src)
	}
	if c := g.copyTo(t, "/tmp"); c.Mode != 0o1777 {
		t.Errorf("/tmp mode = %o, want 1777", c.Mode)
	}
	if m := g.mkdir(t, "/root"); m.Mode != 0o700 {
		t.Errorf("/root mode = %o", m.Mode)
	}
	g.mkdir(t, "/go")

	passwd := string(g.mkfile(t, "/etc/passwd").Data)
	for _, u := range []string{"root:x:0:0:", "nobody:x:65534:65534:"} {
		if !strings.Contains(passwd, "\n"+u) && !strings.HasPrefix(passwd, u) {
			t.Errorf("/etc/passwd has no %s: %q", u, passwd)
		}
	}
	group := string(g.mkfile(t, "/etc/group").Data)
	if !strings.HasPrefix(group, "root:x:0:") || !strings.Contains(group, "\nnobody:x:65534:") {
		t.Errorf("/etc/group = %q", group)
	}

	checkTimestamps(t, g)
	checkOwners(t, g)
}

// The first layer is staged, then copied whole with the epoch as every
// file's time, so that the directories the actions add to carry it too.
func TestStagedLayers(t *testing.T) {
	for name, st := range map[string]llb.State{"builder": BuilderState(testSpec()), "base": BaseState(testSpec())} {
		g := marshalGraph(t, st)
		c := g.copyTo(t, "/")
		if c.Src != "/" || !c.DirCopyContents || c.Owner != nil || c.Mode != -1 {
			t.Errorf("%s: layer copy = %+v", name, c)
		}
		if !slices.ContainsFunc(g.names, func(n string) bool { return strings.HasSuffix(n, ": stage") }) {
			t.Errorf("%s: no staging step in %q", name, g.names)
		}
	}
}

func TestNoCache(t *testing.T) {
	s := testSpec()
	for _, noCache := range []bool{false, true} {
		s.NoCache = noCache
		def, err := marshal(context.Background(), BuilderState(s), s, "test")
		if err != nil {
			t.Fatal(err)
		}
		terminal := digest.FromBytes(def.Def[len(def.Def)-1])
		for dgst, md := range def.Metadata {
			if dgst != terminal && md.IgnoreCache != noCache {
				t.Errorf("NoCache %v: op %s ignore cache = %v", noCache, dgst, md.IgnoreCache)
			}
		}
	}
}

func TestBaseState(t *testing.T) {
	g := marshalGraph(t, BaseState(testSpec()))
	if n := len(g.execs()); n != 0 {
		t.Errorf("base image runs %d execs; it has no shell", n)
	}
	src := g.sources()
	if len(src) != 1 || src["local://"+LocalCACerts] == nil {
		t.Errorf("base sources = %v, want only the CA certificates", keys(src))
	}
	passwd := string(g.mkfile(t, "/etc/passwd").Data)
	if !strings.Contains(passwd, "nonroot:x:65532:65532:") || !strings.HasPrefix(passwd, "root:x:0:0:") {
		t.Errorf("/etc/passwd = %q", passwd)
	}
	if group := string(g.mkfile(t, "/etc/group").Data); !strings.Contains(group, "nonroot:x:65532:") {
		t.Errorf("/etc/group = %q", group)
	}
	if c := g.copyTo(t, "/tmp"); c.Mode != 0o1777 {
		t.Errorf("/tmp mode = %o, want 1777", c.Mode)
	}
	g.copyTo(t, "/etc/ssl/certs/ca-certificates.crt")
	home := g.mkdir(t, "/home/nonroot")
	if uid := home.Owner.GetUser().GetByID(); uid != NonrootUID {
		t.Errorf("/home/nonroot owner = %d", uid)
	}
	checkTimestamps(t, g)
}

// checkTimestamps makes sure no file action leaves a time to the clock.
func checkTimestamps(t *testing.T, g graph) {
	t.Helper()
	want := testEpoch.UnixNano()
	for _, a := range g.fileActions() {
		var ts int64
		var what string
		switch {
		case a.GetMkdir() != nil:
			ts, what = a.GetMkdir().Timestamp, a.GetMkdir().Path
		case a.GetMkfile() != nil:
			ts, what = a.GetMkfile().Timestamp, a.GetMkfile().Path
		case a.GetCopy() != nil:
			ts, what = a.GetCopy().Timestamp, a.GetCopy().Dest
		default:
			t.Errorf("unexpected file action %v", a)
			continue
		}
		if ts != want {
			t.Errorf("%s timestamp = %d, want the epoch %d", what, ts, want)
		}
	}
}

// checkOwners makes sure every copy of the host's files, and of the
// container's, is owned by root, whoever owns the host's files.
func checkOwners(t *testing.T, g graph) {
	t.Helper()
	for _, a := range g.fileActions() {
		c := a.GetCopy()
		if c == nil || c.Dest == "/" { // a staged layer keeps its owners
			continue
		}
		if c.Owner == nil || c.Owner.GetUser().GetByID() != 0 || c.Owner.GetGroup().GetByID() != 0 ||
			c.Owner.GetUser().GetByName() != nil || c.Owner.GetGroup().GetByName() != nil {
			t.Errorf("copy to %s owner = %v, want 0:0", c.Dest, c.Owner)
		}
	}
}

func TestBuilderConfig(t *testing.T) {
	cfg := roundTrip(t, BuilderConfig(testSpec()))
	want := []string{
		"PATH=/usr/local/go/bin:/go/bin:/usr/local/bin:/usr/bin:/bin",
		"GOROOT=/usr/local/go",
		"GOPATH=/go",
		"GOTOOLCHAIN=local",
		"HOME=/root",
		"GOCACHE=/root/.cache/go-build",
		"GOMODCACHE=/go/pkg/mod",
		"CGO_ENABLED=0",
	}
	if !slices.Equal(cfg.Config.Env, want) {
		t.Errorf("env = %q\nwant %q", cfg.Config.Env, want)
	}
	if cfg.Config.WorkingDir != "/go" || !slices.Equal(cfg.Config.Cmd, []string{"/bin/sh"}) {
		t.Errorf("workdir %q cmd %q", cfg.Config.WorkingDir, cfg.Config.Cmd)
	}
	if cfg.OS != "linux" || cfg.Architecture != "amd64" {
		t.Errorf("platform %s/%s", cfg.OS, cfg.Architecture)
	}
	if cfg.Created == nil || !cfg.Created.Equal(testEpoch) {
		t.Errorf("created = %v, want %v", cfg.Created, testEpoch)
	}
	for k, v := range map[string]string{LabelGoVersion: "go1.26.8", LabelTitle: "buildsvc builder"} {
		if cfg.Config.Labels[k] != v {
			t.Errorf("label %s = %q, want %q", k, cfg.Config.Labels[k], v)
		}
	}
	if !strings.Contains(cfg.Config.Labels[LabelDescription], "go1.26.8") {
		t.Errorf("description %q", cfg.Config.Labels[LabelDescription])
	}
}

func TestBaseConfig(t *testing.T) {
	cfg := roundTrip(t, BaseConfig(testSpec()))
	if cfg.Config.User != "65532:65532" || cfg.Config.WorkingDir != "/" {
		t.Errorf("user %q workdir %q", cfg.Config.User, cfg.Config.WorkingDir)
	}
	want := []string{"PATH=/usr/local/bin:/usr/bin:/bin", "SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt"}
	if !slices.Equal(cfg.Config.Env, want) {
		t.Errorf("env = %q", cfg.Config.Env)
	}
	if len(cfg.Config.Entrypoint) != 0 || len(cfg.Config.Cmd) != 0 {
		t.Errorf("base image has a command: %q %q", cfg.Config.Entrypoint, cfg.Config.Cmd)
	}
	if cfg.Config.Labels[LabelTitle] == "" || cfg.Config.Labels[LabelDescription] == "" {
		t.Errorf("labels = %v", cfg.Config.Labels)
	}
}

func TestExportAttrs(t *testing.T) {
	a := exportAttrs(testSpec(), "r.example/x:1")
	want := map[string]string{
		"name":              "r.example/x:1",
		"push":              "true",
		"oci-mediatypes":    "true",
		"compression":       "gzip",
		"source-date-epoch": "1787934006",
	}
	for k, v := range want {
		if a[k] != v {
			t.Errorf("%s = %q, want %q", k, a[k], v)
		}
	}
	if len(a) != len(want) {
		t.Errorf("attrs = %v", a)
	}
}

func TestPin(t *testing.T) {
	const dgst = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	for ref, want := range map[string]string{
		"127.0.0.1:15000/bootstrap-test/builder:go1.26": "127.0.0.1:15000/bootstrap-test/builder@" + dgst,
		"127.0.0.1:15000/base":                          "127.0.0.1:15000/base@" + dgst,
	} {
		got, err := pin(ref, dgst)
		if err != nil || got != want {
			t.Errorf("pin(%s) = %q, %v; want %q", ref, got, err, want)
		}
	}
	if _, err := pin("127.0.0.1:15000/base", "sha256:short"); err == nil {
		t.Error("pin accepted a malformed digest")
	}
}

func roundTrip(t *testing.T, img ocispecs.Image) ocispecs.Image {
	t.Helper()
	dt, err := json.Marshal(img)
	if err != nil {
		t.Fatal(err)
	}
	var out ocispecs.Image
	if err := json.Unmarshal(dt, &out); err != nil {
		t.Fatal(err)
	}
	return out
}

func keys[V any](m map[string]V) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// The package's LLB never reads the host: it only names local contexts.
func TestBuilderStateReadsNoHostFiles(t *testing.T) {
	s := testSpec()
	s.GoRoot = "/does/not/exist"
	s.Busybox = "/does/not/exist/busybox"
	if _, err := os.Stat(s.GoRoot); err == nil {
		t.Skip("path exists")
	}
	if _, err := marshal(context.Background(), BuilderState(s), s, "test"); err != nil {
		t.Fatal(err)
	}
}

func testGitSpec() Spec {
	s := testSpec()
	s.Git = &GitFiles{
		Files: []HostFile{
			{Path: "/lib", Kind: KindSymlink, Target: "usr/lib"},
			{Path: "/usr", Kind: KindDir, Mode: 0o755},
			{Path: "/usr/bin", Kind: KindDir, Mode: 0o755},
			{Path: "/usr/bin/git", Kind: KindFile, Mode: 0o755, Source: "/usr/bin/git", Size: 3713416},
		},
		Libraries: []string{"/lib/x86_64-linux-gnu/libc.so.6", "/lib64/ld-linux-x86-64.so.2"},
	}
	return s
}

// With git, the builder has a fourth layer on top of the Go root: the
// staged git tree copied onto /, owned by root, at the epoch.
func TestBuilderStateGit(t *testing.T) {
	s := testGitSpec()
	def, err := marshal(context.Background(), BuilderState(s), s, "test")
	if err != nil {
		t.Fatal(err)
	}
	ops := map[digest.Digest]*pb.Op{}
	var gitSource digest.Digest
	for _, dt := range def.Def {
		var op pb.Op
		if err := op.Unmarshal(dt); err != nil {
			t.Fatal(err)
		}
		d := digest.FromBytes(dt)
		ops[d] = &op
		if src := op.GetSource(); src != nil && src.Identifier == "local://"+LocalGit {
			gitSource = d
			if len(src.Attrs[pb.AttrIncludePatterns]) > 0 || len(src.Attrs[pb.AttrExcludePatterns]) > 0 {
				t.Errorf("git local source filters: %v", src.Attrs)
			}
		}
	}
	if gitSource == "" {
		t.Fatal("no git local source")
	}
	// The terminal op's input is the helper's layer, on top of git's.
	terminal := ops[digest.FromBytes(def.Def[len(def.Def)-1])]
	helper := ops[digest.Digest(terminal.Inputs[0].Digest)]
	if hc := helper.GetFile().GetActions()[0].GetCopy(); hc == nil || hc.Dest != "/" {
		t.Fatalf("top layer = %v, want the helper's tree copy", helper)
	}
	topDigest := digest.Digest(helper.Inputs[helper.GetFile().Actions[0].Input].Digest)
	top := ops[topDigest]
	if top.GetFile() == nil || len(top.GetFile().Actions) != 1 {
		t.Fatalf("top op = %v, want one file action", top)
	}
	c := top.GetFile().Actions[0].GetCopy()
	if c == nil || c.Src != "/" || c.Dest != "/" || !c.DirCopyContents || c.Mode != -1 || c.Timestamp != testEpoch.UnixNano() {
		t.Fatalf("git copy = %+v", c)
	}
	if c.Owner.GetUser().GetByID() != 0 || c.Owner.GetGroup().GetByID() != 0 || c.Owner.GetUser().GetByName() != nil {
		t.Errorf("git copy owner = %v, want 0:0", c.Owner)
	}
	if src := top.Inputs[top.GetFile().Actions[0].SecondaryInput]; digest.Digest(src.Digest) != gitSource {
		t.Errorf("git copy reads %s, not the git local source", src.Digest)
	}
	below := ops[digest.Digest(top.Inputs[top.GetFile().Actions[0].Input].Digest)]
	if bc := below.GetFile().GetActions()[0].GetCopy(); bc == nil || bc.Dest != GoRootPath {
		t.Errorf("the git layer is not on top of the Go root: %v", below)
	}
	name := def.Metadata[topDigest].Description["llb.customname"]
	for _, w := range []string{"[builder] add git", GitPath, GitExecDir + "/{git,git-remote-http,git-remote-https}", GitTemplatesDir, "2 shared libraries"} {
		if !strings.Contains(name, w) {
			t.Errorf("git layer name %q lacks %q", name, w)
		}
	}

	g := marshalGraph(t, BuilderState(s))
	checkTimestamps(t, g)
	if len(g.sources()) != 4 {
		t.Errorf("sources = %v, want the three local contexts and git's", keys(g.sources()))
	}

	first, err := marshal(context.Background(), BuilderState(s), s, "test")
	if err != nil {
		t.Fatal(err)
	}
	if !slices.EqualFunc(first.Def, def.Def, bytes.Equal) {
		t.Error("builder LLB with git differs between two marshals of the same spec")
	}
}

func TestBuilderConfigGit(t *testing.T) {
	with := roundTrip(t, BuilderConfig(testGitSpec())).Config.Labels
	if with[LabelGit] != GitPath || !strings.Contains(with[LabelDescription], "git") {
		t.Errorf("labels with git = %v", with)
	}
	without := roundTrip(t, BuilderConfig(testSpec())).Config.Labels
	if _, ok := without[LabelGit]; ok || strings.Contains(without[LabelDescription], "git") {
		t.Errorf("labels without git = %v", without)
	}
}

// The builder has the GOCACHEPROG helper, built by its own toolchain, on
// its platform, with no network, from the source this program carries,
// and copied onto the image as root's at the epoch.
func TestBuilderStateGoCacheProg(t *testing.T) {
	for _, tc := range []struct {
		name      string
		spec      Spec
		wantGOARM string
	}{
		{"amd64", testSpec(), ""},
		{"git", testGitSpec(), ""},
		{"armv7", func() Spec {
			s := testSpec()
			s.Platform = ocispecs.Platform{OS: "linux", Architecture: "arm", Variant: "v7"}
			return s
		}(), "7"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := tc.spec
			def, err := marshal(context.Background(), BuilderState(s), s, "test")
			if err != nil {
				t.Fatal(err)
			}
			ops := map[digest.Digest]*pb.Op{}
			for _, dt := range def.Def {
				var op pb.Op
				if err := op.Unmarshal(dt); err != nil {
					t.Fatal(err)
				}
				ops[digest.FromBytes(dt)] = &op
			}
			input := func(op *pb.Op, i int64) *pb.Op { return ops[digest.Digest(op.Inputs[i].Digest)] }

			// Top layer: the staged helper tree copied onto /.
			terminal := ops[digest.FromBytes(def.Def[len(def.Def)-1])]
			top := input(terminal, 0)
			layer := top.GetFile().GetActions()[0].GetCopy()
			if layer == nil || layer.Src != "/" || layer.Dest != "/" || !layer.DirCopyContents || layer.Timestamp != testEpoch.UnixNano() ||
				layer.Owner.GetUser().GetByID() != 0 || layer.Owner.GetGroup().GetByID() != 0 {
				t.Fatalf("helper layer = %v", top)
			}
			staged := input(top, top.GetFile().Actions[0].SecondaryInput)
			c := staged.GetFile().GetActions()[0].GetCopy()
			if c == nil || c.Src != "/buildsvc-gocacheprog" || c.Dest != "/usr/local/bin/buildsvc-gocacheprog" || c.Mode != 0o755 ||
				!c.CreateDestPath || c.Timestamp != testEpoch.UnixNano() || c.Owner.GetUser().GetByID() != 0 {
				t.Fatalf("helper staging copy = %v", c)
			}

			// The step that builds it.
			buildOp := input(staged, staged.GetFile().Actions[0].SecondaryInput)
			e := buildOp.GetExec()
			if e == nil {
				t.Fatalf("the helper comes from %v, not an exec", buildOp)
			}
			wantArgs := []string{"/usr/local/go/bin/go", "build", "-trimpath", "-buildvcs=false", "-ldflags=-s -w", "-o", "/out/buildsvc-gocacheprog", "./cmd/buildsvc-gocacheprog"}
			if !slices.Equal(e.Meta.Args, wantArgs) || e.Meta.Cwd != "/src" || e.Network != pb.NetMode_NONE {
				t.Errorf("helper build: args %q in %s, network %v", e.Meta.Args, e.Meta.Cwd, e.Network)
			}
			checkExecEnv(t, "helper build", e, map[string]string{"GOPROXY": "off", "GOTOOLCHAIN": "local", "CGO_ENABLED": "0", "GOFLAGS": "-mod=mod",
				"GOOS": s.Platform.OS, "GOARCH": s.Platform.Architecture, "GOROOT": GoRootPath, "GOARM": tc.wantGOARM})
			var root, src *pb.Op
			for _, m := range e.Mounts {
				switch m.Dest {
				case "/":
					root = input(buildOp, m.Input)
				case "/src":
					src = input(buildOp, m.Input)
					if !m.Readonly {
						t.Error("helper source mounted read-write")
					}
				}
			}
			// It runs in the image with the toolchain but before git, so
			// a new git does not rebuild it.
			if rc := root.GetFile().GetActions()[0].GetCopy(); rc == nil || rc.Dest != GoRootPath {
				t.Errorf("the helper is not built on the Go root layer: %v", root)
			}

			// Its source is buildcache.HelperSource, every file.
			files, err := buildcache.HelperSource()
			if err != nil {
				t.Fatal(err)
			}
			got := map[string][]byte{}
			for _, a := range src.GetFile().GetActions() {
				if mf := a.GetMkfile(); mf != nil {
					got[strings.TrimPrefix(mf.Path, "/")] = mf.Data
					if mf.Timestamp != testEpoch.UnixNano() {
						t.Errorf("%s timestamp %d", mf.Path, mf.Timestamp)
					}
				}
			}
			if len(got) != len(files) || len(files) < 5 {
				t.Errorf("helper source has %d files, want %d", len(got), len(files))
			}
			for p, dt := range files {
				if !bytes.Equal(got[p], dt) {
					t.Errorf("helper source %s differs", p)
				}
			}

			// The seed: the standard library compiled through the helper
			// just built, offline, as the compile step compiles it, every
			// entry stamped with the epoch; staged without the helper's
			// scratch space.
			actions := staged.GetFile().GetActions()
			if len(actions) != 2 {
				t.Fatalf("staging = %v, want the helper's copy and the seed's", staged)
			}
			sc := actions[1].GetCopy()
			if sc == nil || sc.Src != "/" || sc.Dest != svcllb.GoCacheSeedPath || !sc.DirCopyContents || !sc.CreateDestPath ||
				sc.Timestamp != testEpoch.UnixNano() || sc.Owner.GetUser().GetByID() != 0 ||
				!slices.Equal(sc.ExcludePatterns, []string{cacheprog.LocalSubdir + "/tmp"}) {
				t.Fatalf("seed staging copy = %v", sc)
			}
			seedOp := input(staged, actions[1].SecondaryInput)
			se := seedOp.GetExec()
			if se == nil {
				t.Fatalf("the seed comes from %v, not an exec", seedOp)
			}
			if want := []string{"/usr/local/go/bin/go", "build", "-trimpath", "std"}; !slices.Equal(se.Meta.Args, want) || se.Network != pb.NetMode_NONE {
				t.Errorf("seed build: args %q, network %v; want %q, none", se.Meta.Args, se.Network, want)
			}
			checkExecEnv(t, "seed build", se, map[string]string{"GOCACHEPROG": "/helper/buildsvc-gocacheprog", cacheprog.DirEnv: "/seed",
				cacheprog.SourceDateEpochEnv: strconv.FormatInt(testEpoch.Unix(), 10), "GOFLAGS": "", "CGO_ENABLED": "0",
				"GOPROXY": "off", "GOOS": s.Platform.OS, "GOARCH": s.Platform.Architecture, "GOARM": tc.wantGOARM, "GOROOT": GoRootPath})
			var helperMount, seedRoot *pb.Mount
			for _, m := range se.Mounts {
				switch m.Dest {
				case "/helper":
					helperMount = m
				case "/":
					seedRoot = m
				}
			}
			if helperMount == nil || !helperMount.Readonly || input(seedOp, helperMount.Input) != buildOp {
				t.Errorf("seed build mounts the helper %v, want the helper build's output read-only", helperMount)
			}
			if seedRoot == nil || input(seedOp, seedRoot.Input) != root {
				t.Errorf("the seed is not built on the Go root layer the helper is built on")
			}
			checkTimestamps(t, marshalGraph(t, BuilderState(s)))
		})
	}
}

// checkExecEnv checks the variables of want in e's environment; an
// empty value must be empty or unset.
func checkExecEnv(t *testing.T, what string, e *pb.ExecOp, want map[string]string) {
	t.Helper()
	env := map[string]string{}
	for _, kv := range e.Meta.Env {
		k, v, _ := strings.Cut(kv, "=")
		env[k] = v
	}
	for k, v := range want {
		if env[k] != v {
			t.Errorf("%s env %s = %q, want %q", what, k, env[k], v)
		}
	}
}

func TestBuilderConfigGoCacheProg(t *testing.T) {
	labels := roundTrip(t, BuilderConfig(testSpec())).Config.Labels
	if labels[svcllb.LabelGoCacheProg] != svcllb.GoCacheProgPath || labels[svcllb.LabelGoCacheSeed] != svcllb.GoCacheSeedPath {
		t.Errorf("builder labels = %v, want %s=%s and %s=%s", labels, svcllb.LabelGoCacheProg, svcllb.GoCacheProgPath,
			svcllb.LabelGoCacheSeed, svcllb.GoCacheSeedPath)
	}
	cfg, err := json.Marshal(BuilderConfig(testSpec()))
	if err != nil {
		t.Fatal(err)
	}
	if !svcllb.BuilderHasGoCacheProg(cfg) {
		t.Error("llb.BuilderHasGoCacheProg does not see the helper in the builder's config")
	}
}
