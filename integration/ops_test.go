//go:build integration

package integration

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/moby/buildkit/client"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/buildsvc/buildsvc/buildkitd"
	"github.com/buildsvc/buildsvc/metrics"
	buildv1 "github.com/buildsvc/buildsvc/proto/build/v1"
	"github.com/buildsvc/buildsvc/server"
)

// scrapeURL reads a /metrics page with the Prometheus text parser.
func scrapeURL(t testing.TB, url string) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s", url, resp.Status)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("parse %s: %v", url, err)
	}
	return mfs
}

// sample is the value of a counter or gauge, or the count of a histogram,
// summed over the series whose labels include every pair in labels.
func sample(mfs map[string]*dto.MetricFamily, name string, labels ...string) float64 {
	var sum float64
	mf := mfs[name]
	if mf == nil {
		return 0
	}
	for _, m := range mf.GetMetric() {
		if !hasLabels(m, labels) {
			continue
		}
		switch {
		case m.Counter != nil:
			sum += m.GetCounter().GetValue()
		case m.Gauge != nil:
			sum += m.GetGauge().GetValue()
		case m.Histogram != nil:
			sum += float64(m.GetHistogram().GetSampleCount())
		}
	}
	return sum
}

func hasLabels(m *dto.Metric, kv []string) bool {
	for i := 0; i+1 < len(kv); i += 2 {
		found := false
		for _, l := range m.GetLabel() {
			if l.GetName() == kv[i] && l.GetValue() == kv[i+1] {
				found = true
			}
		}
		if !found {
			return false
		}
	}
	return true
}

// A successful build and a failed one move the build metrics by exactly
// what they did, read back from /metrics with the Prometheus text parser.
func TestMetricsCountBuilds(t *testing.T) {
	st := loadStack(t)
	bk, err := buildkitd.Dial(context.Background(), buildkitd.Endpoint{Address: st.BuildKitAddr})
	if err != nil {
		t.Fatal(err)
	}
	defer bk.Close()
	reg := metrics.NewRegistry()
	m, err := metrics.New(reg, metrics.WithDiskUsage(func(ctx context.Context) ([]*client.UsageInfo, error) {
		return bk.DiskUsage(ctx)
	}))
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(metrics.Handler(reg))
	defer hs.Close()
	c := startServer(t, func(cfg *server.Config) { cfg.Observer = m })

	before := scrapeURL(t, hs.URL+"/metrics")

	ok := newRepo(t, sampleFiles(t))
	requireSuccess(t, build(t, c, &buildv1.CreateImageRequest{GitRepo: ok.URL, GitCommit: "main", ImageTag: tagFor(t, "ok")}))
	files := sampleFiles(t)
	files["broken.go"] = "package main\n\nfunc broken() { undefinedThing() }\n"
	bad := newRepo(t, files)
	if o := build(t, c, &buildv1.CreateImageRequest{GitRepo: bad.URL, GitCommit: "main", ImageTag: tagFor(t, "bad")}); o.buildErr() == nil {
		t.Fatalf("the broken build did not fail: %v", o.err)
	}

	// The stream ends with the final event; the observer has it by then,
	// but allow a moment.
	var after map[string]*dto.MetricFamily
	for deadline := time.Now().Add(5 * time.Second); ; {
		after = scrapeURL(t, hs.URL+"/metrics")
		if sample(after, "buildsvc_builds_total")-sample(before, "buildsvc_builds_total") >= 2 || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	delta := func(name string, labels ...string) float64 {
		return sample(after, name, labels...) - sample(before, name, labels...)
	}
	exact := []struct {
		name   string
		labels []string
		want   float64
	}{
		{"buildsvc_builds_total", []string{"state", "succeeded"}, 1},
		{"buildsvc_builds_total", []string{"state", "failed"}, 1},
		{"buildsvc_builds_total", []string{"state", "cancelled"}, 0},
		{"buildsvc_build_duration_seconds", nil, 2},
		{"buildsvc_build_duration_seconds", []string{"state", "succeeded"}, 1},
		{"buildsvc_build_duration_seconds", []string{"state", "failed"}, 1},
		// Both builds went RESOLVING, QUEUED, BUILDING; only the good one
		// went on to PUSHING. A phase is observed when a build leaves it.
		{"buildsvc_build_phase_duration_seconds", []string{"phase", "resolving"}, 2},
		{"buildsvc_build_phase_duration_seconds", []string{"phase", "queued"}, 2},
		{"buildsvc_build_phase_duration_seconds", []string{"phase", "building"}, 2},
		{"buildsvc_build_phase_duration_seconds", []string{"phase", "pushing"}, 1},
		{"buildsvc_builds_in_flight", nil, 0},
		{"buildsvc_queue_depth", nil, 0},
	}
	for _, e := range exact {
		if got := delta(e.name, e.labels...); got != e.want {
			t.Errorf("%s%v moved by %v, want %v", e.name, e.labels, got, e.want)
		}
	}
	if got := delta("buildsvc_vertices_total"); got <= 0 {
		t.Errorf("buildsvc_vertices_total moved by %v, want > 0", got)
	}
	t.Logf("vertices: %v cached, %v not", delta("buildsvc_vertices_total", "cached", "true"), delta("buildsvc_vertices_total", "cached", "false"))
	if got := sample(after, "buildsvc_buildkitd_up"); got != 1 {
		t.Errorf("buildsvc_buildkitd_up = %v, want 1", got)
	}
	if got := sample(after, "buildsvc_buildkitd_disk_usage_bytes"); got <= 0 {
		t.Errorf("buildsvc_buildkitd_disk_usage_bytes sums to %v, want > 0", got)
	}
	if after["go_goroutines"] == nil || after["process_cpu_seconds_total"] == nil {
		t.Error("the Go and process collectors are missing")
	}
}

// The stack's server (scripts/up.sh) serves /metrics at METRICS_ADDR and
// reports SERVING on the gRPC health service, with reflection on.
func TestStackServerMetricsAndHealth(t *testing.T) {
	addr := os.Getenv("METRICS_ADDR")
	srvAddr := os.Getenv("BUILD_SERVER_ADDR")
	if addr == "" || srvAddr == "" {
		t.Fatal("METRICS_ADDR or BUILD_SERVER_ADDR is not set: run the integration tests with `make test`, which starts the stack and sources .stack/env")
	}
	mfs := scrapeURL(t, "http://"+addr+"/metrics")
	for _, name := range []string{"buildsvc_builds_total", "buildsvc_build_duration_seconds", "buildsvc_cleanup_runs_total", "go_goroutines"} {
		if mfs[name] == nil {
			t.Errorf("%s is missing", name)
		}
	}
	if got := sample(mfs, "buildsvc_buildkitd_up"); got != 1 {
		t.Errorf("buildsvc_buildkitd_up = %v, want 1", got)
	}
	// Health answers over TLS without a token.
	conn := loadStackSecurity(t).dial(t, "", false)
	for _, svc := range []string{"", "build.v1.Build", "build.v1.AdminService"} {
		resp, err := healthpb.NewHealthClient(conn).Check(t.Context(), &healthpb.HealthCheckRequest{Service: svc})
		if err != nil || resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
			t.Errorf("health of %q: %v, %v", svc, resp.GetStatus(), err)
		}
	}
	// The gRPC call metrics saw those calls, and list the build service's
	// methods before they are called.
	checks, builds := 0.0, false
	for _, m := range scrapeURL(t, "http://"+addr+"/metrics")["grpc_server_handled_total"].GetMetric() {
		l := map[string]string{}
		for _, p := range m.GetLabel() {
			l[p.GetName()] = p.GetValue()
		}
		if l["grpc_service"] == "grpc.health.v1.Health" && l["grpc_method"] == "Check" && l["grpc_code"] == "OK" {
			checks = m.GetCounter().GetValue()
		}
		builds = builds || (l["grpc_service"] == "build.v1.Build" && l["grpc_method"] == "CreateImage")
	}
	if checks < 3 || !builds {
		t.Errorf("grpc_server_handled_total: %v health checks OK (want >= 3), CreateImage listed: %v", checks, builds)
	}
}

// serverProcess is buildsvc-server run as a process by a test.
type serverProcess struct {
	cmd  *exec.Cmd
	done chan struct{} // closed when it has exited; err is then set
	err  error

	mu    sync.Mutex
	lines []string // its log, one JSON object a line
}

// logged returns the first log record with message msg, waiting up to
// within for it.
func (p *serverProcess) logged(t testing.TB, msg string, within time.Duration) map[string]any {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		p.mu.Lock()
		for _, l := range p.lines {
			var rec map[string]any
			if json.Unmarshal([]byte(l), &rec) == nil && rec["msg"] == msg {
				p.mu.Unlock()
				return rec
			}
		}
		p.mu.Unlock()
		select {
		case <-p.done:
			t.Fatalf("the server exited (%v) before logging %q", p.err, msg)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("the server did not log %q within %v", msg, within)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (p *serverProcess) count(msg string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for _, l := range p.lines {
		var rec map[string]any
		if json.Unmarshal([]byte(l), &rec) == nil && rec["msg"] == msg {
			n++
		}
	}
	return n
}

// startServerProcess builds cmd/server and runs it with args and a JSON
// log; its log is printed if the test fails.
func startServerProcess(t *testing.T, args ...string) *serverProcess {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "buildsvc-server")
	if out, err := exec.Command("go", "build", "-o", bin, "../cmd/server").CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/server: %v\n%s", err, out)
	}
	cmd := exec.Command(bin, append([]string{"--log-format", "json"}, args...)...)
	// An empty working directory: what the server needs is in its binary
	// and its arguments (absolute paths), never in files beside it.
	cmd.Dir = t.TempDir()
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "BUILDSVC_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &serverProcess{cmd: cmd, done: make(chan struct{})}
	scanned := make(chan struct{})
	go func() {
		defer close(scanned)
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			p.mu.Lock()
			p.lines = append(p.lines, sc.Text())
			p.mu.Unlock()
		}
	}()
	go func() {
		<-scanned
		p.err = cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			_ = cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-p.done:
			case <-time.After(60 * time.Second):
				_ = cmd.Process.Kill()
				<-p.done
			}
		}
		if t.Failed() {
			p.mu.Lock()
			t.Logf("server log:\n%s", strings.Join(p.lines, "\n"))
			p.mu.Unlock()
		}
	})
	return p
}

// childConfig writes a buildkitd.toml for a second buildkitd: the stack's
// (OCI worker, the loopback registry over plain HTTP) with its own root,
// socket and OTEL socket under dir.
func childConfig(t *testing.T, dir string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(stackDir(t), "buildkitd.toml"))
	if err != nil {
		t.Fatal(err)
	}
	conf := string(b)
	for _, r := range []struct{ re, repl string }{
		{`(?m)^root = .*$`, fmt.Sprintf("root = %q", filepath.Join(dir, "root"))},
		{`(?m)^(\s*)address = \[.*$`, fmt.Sprintf("${1}address = [ %q ]", "unix://"+filepath.Join(dir, "bk.sock"))},
		{`(?m)^(\s*)socketPath = .*$`, fmt.Sprintf("${1}socketPath = %q", filepath.Join(dir, "otel.sock"))},
	} {
		re := regexp.MustCompile(r.re)
		if !re.MatchString(conf) {
			t.Fatalf("the stack's buildkitd.toml has no line matching %s", r.re)
		}
		conf = re.ReplaceAllString(conf, r.repl)
	}
	p := filepath.Join(dir, "buildkitd.toml")
	if err := os.WriteFile(p, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func stackDir(t testing.TB) string {
	t.Helper()
	d := os.Getenv("STACK_DIR")
	if d == "" {
		t.Fatal("STACK_DIR is not set: run the integration tests with `make test`, which starts the stack and sources .stack/env")
	}
	return d
}

// tempDirForDaemon is a temporary directory for a buildkitd, removed after
// the test once nothing is mounted under it (a daemon that was killed can
// leave mounts behind).
func tempDirForDaemon(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "buildsvc-ops-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if b, err := os.ReadFile("/proc/self/mounts"); err == nil {
			var mounts []string
			for _, l := range strings.Split(string(b), "\n") {
				if f := strings.Fields(l); len(f) > 1 && strings.HasPrefix(f[1], dir+"/") {
					mounts = append(mounts, f[1])
				}
			}
			for i := len(mounts) - 1; i >= 0; i-- {
				t.Logf("unmounting leftover %s", mounts[i])
				_ = syscall.Unmount(mounts[i], syscall.MNT_DETACH)
			}
		}
		if err := os.RemoveAll(dir); err != nil {
			t.Logf("could not remove %s: %v", dir, err)
		}
	})
	return dir
}

func readPid(t testing.TB, path string) int {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatalf("pid file %s: %v", path, err)
	}
	return pid
}

func alive(pid int) bool { return syscall.Kill(pid, 0) == nil }

// waitHealth polls the health service until every service reports want.
func waitHealth(t testing.TB, hc healthpb.HealthClient, want healthpb.HealthCheckResponse_ServingStatus, within time.Duration) time.Duration {
	t.Helper()
	began := time.Now()
	var last string
	for {
		ok := true
		for _, svc := range []string{"", "build.v1.Build"} {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			resp, err := hc.Check(ctx, &healthpb.HealthCheckRequest{Service: svc})
			cancel()
			if err != nil || resp.GetStatus() != want {
				ok = false
				last = fmt.Sprintf("%q: %v %v", svc, resp.GetStatus(), err)
				break
			}
		}
		if ok {
			return time.Since(began)
		}
		if time.Since(began) > within {
			t.Fatalf("health did not report %v within %v; last %s", want, within, last)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// With no --buildkit-addr the server runs its own buildkitd: it builds with
// it, reports NOT_SERVING when the daemon is killed and SERVING once the
// server has restarted it, builds again, and on SIGTERM stops the daemon
// and exits 0.
func TestManagedBuildkitdRestartAndHealth(t *testing.T) {
	st := loadStack(t)
	dir := tempDirForDaemon(t)
	dataDir := filepath.Join(dir, "data")
	goproxy, _ := exec.Command("go", "env", "GOPROXY").Output()
	p := startServerProcess(t,
		"--listen", "127.0.0.1:0",
		"--metrics-listen", "",
		"--data-dir", dataDir,
		"--buildkitd-binary", filepath.Join(stackDir(t), "bin", "buildkitd"),
		"--buildkitd-config", childConfig(t, dir),
		"--docker-config", st.DockerConfig,
		"--builder-image", st.BuilderImage,
		"--base-image", st.BaseImage,
		"--allow-loopback-hosts", "--allowed-ports", st.gitPort(t),
		"--goproxy", strings.TrimSpace(string(goproxy)),
	)
	rec := p.logged(t, "serving", 2*time.Minute)
	addr, _ := rec["addr"].(string)
	if managed, _ := rec["managed_buildkitd"].(bool); !managed {
		t.Errorf("serving log says managed_buildkitd=%v", rec["managed_buildkitd"])
	}
	if want := "unix://" + filepath.Join(dir, "bk.sock"); rec["buildkit"] != want {
		t.Errorf("serving with buildkit %v, want the child config's %s", rec["buildkit"], want)
	}
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	hc := healthpb.NewHealthClient(conn)
	waitHealth(t, hc, healthpb.HealthCheckResponse_SERVING, 30*time.Second)

	bc := buildv1.NewBuildClient(conn)
	sampleBuildSucceeds(t, bc)

	pidFile := filepath.Join(dataDir, buildkitd.PidFileName)
	pid := readPid(t, pidFile)
	exe, _ := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
	if exe != filepath.Join(stackDir(t), "bin", "buildkitd") {
		t.Fatalf("pid file names %d, which runs %q, not the stack's buildkitd", pid, exe)
	}
	killed := time.Now()
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	down := waitHealth(t, hc, healthpb.HealthCheckResponse_NOT_SERVING, 5*time.Second)
	up := waitHealth(t, hc, healthpb.HealthCheckResponse_SERVING, 60*time.Second)
	t.Logf("after SIGKILL: NOT_SERVING after %v, SERVING again %v later (%v in all)", down, up, time.Since(killed))
	newPid := readPid(t, pidFile)
	if newPid == pid || !alive(newPid) {
		t.Fatalf("after the kill the pid file names %d (before %d), alive=%v", newPid, pid, alive(newPid))
	}
	if n := p.count("buildkitd started"); n != 2 {
		t.Errorf("%d buildkitd starts logged, want 2", n)
	}
	sampleBuildSucceeds(t, bc)

	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-p.done:
	case <-time.After(90 * time.Second):
		t.Fatal("the server did not exit within 90s of SIGTERM")
	}
	var ee *exec.ExitError
	if p.err != nil {
		if errors.As(p.err, &ee) {
			t.Errorf("the server exited with %v, want 0", ee.ProcessState)
		} else {
			t.Error(p.err)
		}
	}
	if alive(newPid) {
		t.Errorf("the managed buildkitd (pid %d) outlived the server", newPid)
	}
	if _, err := os.Stat(pidFile); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the pid file is still there: %v", err)
	}
	if p.count("buildkitd stopped")+p.count("buildkitd killed") != 1 {
		t.Error("the server did not log stopping buildkitd")
	}
}
