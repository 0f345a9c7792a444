package metrics_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"runtime"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/moby/buildkit/client"
	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/buildsvc/buildsvc/metrics"
	buildv1 "github.com/buildsvc/buildsvc/proto/build/v1"
	"github.com/buildsvc/buildsvc/server"
)

var _ server.Observer = (*metrics.Metrics)(nil)

// scrape serves reg through Handler and parses the page with the Prometheus
// text parser, as a Prometheus server would read it.
func scrape(t *testing.T, h http.Handler) map[string]*dto.MetricFamily {
	t.Helper()
	srv := httptest.NewServer(h)
	defer srv.Close()
	resp, err := http.Get(srv.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics: %s", resp.Status)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return mfs
}

func TestExposition(t *testing.T) {
	reg := metrics.NewRegistry()
	du := func(context.Context) ([]*client.UsageInfo, error) {
		return []*client.UsageInfo{{Size: 4096, RecordType: client.UsageRecordTypeCacheMount}}, nil
	}
	m, err := metrics.New(reg, metrics.WithDiskUsage(du), metrics.WithBuildInfo("v1.2.3", "0123abc", "go1.26.8", "v0.34.2"))
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	for i, ev := range []struct {
		sec   int
		state buildv1.BuildState
	}{
		{0, buildv1.BuildState_BUILD_STATE_QUEUED},
		{2, buildv1.BuildState_BUILD_STATE_BUILDING},
		{30, buildv1.BuildState_BUILD_STATE_PUSHING},
		{33, buildv1.BuildState_BUILD_STATE_SUCCEEDED},
	} {
		m.Event(&buildv1.BuildEvent{
			BuildId: "b1", Seq: uint64(i + 1), Time: timestamppb.New(t0.Add(time.Duration(ev.sec) * time.Second)),
			Event: &buildv1.BuildEvent_State{State: &buildv1.StateChange{State: ev.state}},
		})
	}
	for i, e := range []*buildv1.BuildEvent{
		// Seen only as it ends: no phase, no duration.
		{Event: &buildv1.BuildEvent_State{State: &buildv1.StateChange{State: buildv1.BuildState_BUILD_STATE_FAILED}}},
		{Event: &buildv1.BuildEvent_Error{Error: &buildv1.BuildError{Code: int32(codes.Unknown), Reason: "COMPILE_ERROR"}}},
	} {
		e.BuildId, e.Seq, e.Time = "b2", uint64(i+1), timestamppb.New(t0.Add(time.Duration(i)*time.Second))
		m.Event(e)
	}
	m.Joined("b1")
	m.Refused(codes.NotFound)
	m.Refused(codes.NotFound)
	m.Refused(codes.InvalidArgument)

	mfs := scrape(t, metrics.Handler(reg))

	wantTypes := map[string]dto.MetricType{
		"buildsvc_builds_total":                 dto.MetricType_COUNTER,
		"buildsvc_build_duration_seconds":       dto.MetricType_HISTOGRAM,
		"buildsvc_build_phase_duration_seconds": dto.MetricType_HISTOGRAM,
		"buildsvc_builds_in_flight":             dto.MetricType_GAUGE,
		"buildsvc_queue_depth":                  dto.MetricType_GAUGE,
		"buildsvc_vertices_total":               dto.MetricType_COUNTER,
		"buildsvc_pushed_bytes_total":           dto.MetricType_COUNTER,
		"buildsvc_dedup_joins_total":            dto.MetricType_COUNTER,
		"buildsvc_requests_refused_total":       dto.MetricType_COUNTER,
		"buildsvc_build_info":                   dto.MetricType_GAUGE,
		"buildsvc_cleanup_runs_total":           dto.MetricType_COUNTER,
		"buildsvc_cleanup_freed_bytes_total":    dto.MetricType_COUNTER,
		"buildsvc_cleanup_builds_deleted_total": dto.MetricType_COUNTER,
		"buildsvc_buildkitd_up":                 dto.MetricType_GAUGE,
		"buildsvc_buildkitd_disk_usage_bytes":   dto.MetricType_GAUGE,
		"buildsvc_build_cache_requests_total":   dto.MetricType_COUNTER,
		"buildsvc_build_cache_bytes_total":      dto.MetricType_COUNTER,
		"buildsvc_build_cache_puts_total":       dto.MetricType_COUNTER,
		"buildsvc_build_cache_store_bytes":      dto.MetricType_GAUGE,
	}
	var got, want []string
	for name, mf := range mfs {
		if strings.HasPrefix(name, "buildsvc_") {
			got = append(got, name)
			if mf.GetType() != wantTypes[name] {
				t.Errorf("%s has type %v, want %v", name, mf.GetType(), wantTypes[name])
			}
		}
	}
	for name := range wantTypes {
		want = append(want, name)
	}
	sort.Strings(got)
	sort.Strings(want)
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("metric families:\n%v\nwant\n%v", got, want)
	}
	for _, std := range []string{"go_goroutines", "process_start_time_seconds"} {
		if _, ok := mfs[std]; !ok && (std == "go_goroutines" || runtime.GOOS == "linux") {
			t.Errorf("%s missing: NewRegistry should hold the Go and process collectors", std)
		}
	}

	phase := func(name string) *dto.Histogram {
		for _, mt := range mfs["buildsvc_build_phase_duration_seconds"].GetMetric() {
			for _, l := range mt.GetLabel() {
				if l.GetName() == "phase" && l.GetValue() == name {
					return mt.GetHistogram()
				}
			}
		}
		t.Fatalf("no phase %q", name)
		return nil
	}
	for name, sum := range map[string]float64{"queued": 2, "building": 28, "pushing": 3} {
		if h := phase(name); h.GetSampleCount() != 1 || h.GetSampleSum() != sum {
			t.Errorf("phase %s: count %d sum %v, want 1, %v", name, h.GetSampleCount(), h.GetSampleSum(), sum)
		}
	}
	// The 3s push falls in the le=5 bucket and not in le=2.
	for _, b := range phase("pushing").GetBucket() {
		wantN := uint64(0)
		if b.GetUpperBound() >= 5 {
			wantN = 1
		}
		if b.GetCumulativeCount() != wantN {
			t.Errorf("pushing bucket le=%v: %d, want %d", b.GetUpperBound(), b.GetCumulativeCount(), wantN)
		}
	}
	// The builds counter by state and reason, empty for a success.
	ended := map[string]float64{}
	for _, mt := range mfs["buildsvc_builds_total"].GetMetric() {
		labels := map[string]string{}
		for _, l := range mt.GetLabel() {
			labels[l.GetName()] = l.GetValue()
		}
		if v := mt.GetCounter().GetValue(); v != 0 {
			ended[labels["state"]+"/"+labels["reason"]] = v
		}
	}
	if len(ended) != 2 || ended["succeeded/"] != 1 || ended["failed/COMPILE_ERROR"] != 1 {
		t.Errorf("builds_total by state/reason: %v, want succeeded/ and failed/COMPILE_ERROR once each", ended)
	}
	if v := mfs["buildsvc_dedup_joins_total"].GetMetric()[0].GetCounter().GetValue(); v != 1 {
		t.Errorf("dedup joins %v, want 1", v)
	}
	bi := mfs["buildsvc_build_info"].GetMetric()[0]
	labels := map[string]string{}
	for _, l := range bi.GetLabel() {
		labels[l.GetName()] = l.GetValue()
	}
	if bi.GetGauge().GetValue() != 1 || labels["version"] != "v1.2.3" || labels["revision"] != "0123abc" || labels["goversion"] != "go1.26.8" || labels["buildkit"] != "v0.34.2" {
		t.Errorf("build_info %v = %v", labels, bi.GetGauge().GetValue())
	}
	refused := map[string]float64{}
	for _, mt := range mfs["buildsvc_requests_refused_total"].GetMetric() {
		refused[mt.GetLabel()[0].GetValue()] = mt.GetCounter().GetValue()
	}
	if refused["NotFound"] != 2 || refused["InvalidArgument"] != 1 || len(refused) != 2 {
		t.Errorf("refused requests by code: %v", refused)
	}
	if v := mfs["buildsvc_buildkitd_up"].GetMetric()[0].GetGauge().GetValue(); v != 1 {
		t.Errorf("buildkitd up %v, want 1", v)
	}

	// The names follow Prometheus's conventions, as promlint checks them.
	var ours []*dto.MetricFamily
	for name, mf := range mfs {
		if strings.HasPrefix(name, "buildsvc_") {
			ours = append(ours, mf)
		}
	}
	problems, err := promlint.NewWithMetricFamilies(ours).Lint()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("promlint: %s: %s", p.Metric, p.Text)
	}
}
