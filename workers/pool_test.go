package workers

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/moby/buildkit/client"

	"github.com/buildsvc/buildsvc/buildkitd"
)

// fakeConn is a worker that answers, or not, as its test says.
type fakeConn struct {
	mu    sync.Mutex
	down  bool
	disk  int64
	calls int
}

func (f *fakeConn) ListWorkers(context.Context, ...client.ListWorkersOption) ([]*client.WorkerInfo, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	if f.down {
		return nil, errors.New("connection refused")
	}
	return []*client.WorkerInfo{{ID: "w"}}, nil
}

func (f *fakeConn) DiskUsage(context.Context, ...client.DiskUsageOption) ([]*client.UsageInfo, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return []*client.UsageInfo{{Size: f.disk}, {Size: 1}}, nil
}

func (f *fakeConn) Close() error { return nil }

func (f *fakeConn) setDown(down bool) {
	f.mu.Lock()
	f.down = down
	f.mu.Unlock()
}

// newPool is a checked pool of n fake workers named tcp://w<i>:1234.
func newPool(t *testing.T, n int, mutate func(*Config[*fakeConn])) (*Pool[*fakeConn], map[string]*fakeConn) {
	t.Helper()
	conns := map[string]*fakeConn{}
	var es []buildkitd.Endpoint
	for i := range n {
		a := fmt.Sprintf("tcp://w%d:1234", i)
		es = append(es, buildkitd.Endpoint{Address: a})
		conns[a] = &fakeConn{disk: int64(100 * (i + 1))}
	}
	cfg := Config[*fakeConn]{
		Endpoints: es,
		Dial: func(_ context.Context, e buildkitd.Endpoint) (*fakeConn, error) {
			return conns[e.Address], nil
		},
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
	if mutate != nil {
		mutate(&cfg)
	}
	p, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	p.Check(context.Background())
	return p, conns
}

func acquire(t *testing.T, p *Pool[*fakeConn], key string, avoid ...string) *Lease[*fakeConn] {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	l, err := p.Acquire(ctx, key, avoid, nil)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func TestAffinityAndSpread(t *testing.T) {
	p, _ := newPool(t, 3, nil)
	counts := map[string]int{}
	for i := range 300 {
		key := fmt.Sprintf("https://git.example/team/repo%d.git", i)
		first := acquire(t, p, key)
		first.Release(Done)
		for range 3 {
			again := acquire(t, p, key)
			if again.Name != first.Name {
				t.Fatalf("%s went to %s, then %s", key, first.Name, again.Name)
			}
			again.Release(Done)
		}
		counts[first.Name]++
	}
	if len(counts) != 3 {
		t.Fatalf("300 repositories used %d of 3 workers: %v", len(counts), counts)
	}
	for name, n := range counts {
		// An even spread is 100 each; rendezvous hashing keeps it near.
		if n < 60 || n > 140 {
			t.Errorf("worker %s got %d of 300 repositories: %v", name, n, counts)
		}
	}
}

func TestLosingAWorkerMovesOnlyItsKeys(t *testing.T) {
	p, conns := newPool(t, 3, nil)
	before := map[string]string{}
	for i := range 100 {
		key := fmt.Sprint("repo", i)
		before[key] = p.Order(key)[0]
	}
	conns["tcp://w1:1234"].setDown(true)
	p.Check(context.Background())
	if got := p.Healthy(); got != 2 {
		t.Fatalf("healthy = %d, want 2", got)
	}
	for key, was := range before {
		l := acquire(t, p, key)
		l.Release(Done)
		switch {
		case l.Name == "tcp://w1:1234":
			t.Fatalf("%s went to the worker that is down", key)
		case was != "tcp://w1:1234" && l.Name != was:
			t.Errorf("%s moved from %s to %s though its worker is up", key, was, l.Name)
		}
	}
}

func TestSpillAtTheLimit(t *testing.T) {
	p, _ := newPool(t, 3, func(c *Config[*fakeConn]) { c.MaxBuilds = 1 })
	order := p.Order("repo")
	a := acquire(t, p, "repo")
	b := acquire(t, p, "repo")
	c := acquire(t, p, "repo")
	if a.Name != order[0] || b.Name != order[1] || c.Name != order[2] {
		t.Fatalf("leases %s %s %s, want the key's order %v", a.Name, b.Name, c.Name, order)
	}
	// All full: the next waits until one is released.
	got := make(chan string, 1)
	go func() {
		l, err := p.Acquire(context.Background(), "repo", nil, nil)
		if err != nil {
			got <- err.Error()
			return
		}
		got <- l.Name
	}()
	select {
	case name := <-got:
		t.Fatalf("a fourth build got %s while all three workers were full", name)
	case <-time.After(50 * time.Millisecond):
	}
	b.Release(Done)
	select {
	case name := <-got:
		if name != order[1] {
			t.Fatalf("the waiting build got %s, want the freed %s", name, order[1])
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the waiting build did not get the freed worker")
	}
	a.Release(Done)
	c.Release(Done)
}

func TestDefaultLimit(t *testing.T) {
	tests := []struct{ max, total, healthy, want int }{
		{max: 3, total: 100, healthy: 3, want: 3},
		{total: 4, healthy: 3, want: 2},  // 1.25 * 4/3 = 1.67
		{total: 12, healthy: 3, want: 5}, // 1.25 * 4
		{total: 4, healthy: 1, want: 5},
		{total: 1, healthy: 3, want: 1},
		{total: 0, healthy: 3, want: 0},
		{total: 4, healthy: 0, want: 0},
	}
	for _, tt := range tests {
		p := &Pool[*fakeConn]{cfg: Config[*fakeConn]{MaxBuilds: tt.max, TotalBuilds: tt.total}}
		if got := p.limit(tt.healthy); got != tt.want {
			t.Errorf("limit(max %d, total %d, healthy %d) = %d, want %d", tt.max, tt.total, tt.healthy, got, tt.want)
		}
	}
}

func TestWaitWhileNoneIsHealthy(t *testing.T) {
	p, conns := newPool(t, 2, nil)
	for _, c := range conns {
		c.setDown(true)
	}
	p.Check(context.Background())
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Millisecond)
	defer cancel()
	var why string
	_, err := p.Acquire(ctx, "repo", nil, func(w string) { why = w })
	if !errors.Is(err, ErrNoWorker) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want ErrNoWorker and the deadline", err)
	}
	if why != "no buildkitd worker is healthy" {
		t.Fatalf("waiting said %q", why)
	}

	got := make(chan error, 1)
	go func() {
		l, err := p.Acquire(context.Background(), "repo", nil, nil)
		if err == nil {
			l.Release(Done)
		}
		got <- err
	}()
	time.Sleep(20 * time.Millisecond)
	conns["tcp://w0:1234"].setDown(false)
	p.Check(context.Background())
	select {
	case err := <-got:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a worker came back but the waiting build did not get it")
	}
}

func TestAvoid(t *testing.T) {
	p, _ := newPool(t, 3, nil)
	first := p.Order("repo")[0]
	l := acquire(t, p, "repo", first)
	if l.Name == first || l.Name != p.Order("repo")[1] {
		t.Fatalf("a retry avoiding %s got %s, want the next in order %s", first, l.Name, p.Order("repo")[1])
	}
	l.Release(Done)

	// Only the avoided worker is healthy: it is used rather than waiting.
	one, _ := newPool(t, 1, nil)
	l = acquire(t, one, "repo", "tcp://w0:1234")
	if l.Name != "tcp://w0:1234" {
		t.Fatalf("got %s", l.Name)
	}
	l.Release(Done)
}

func TestLossesQuarantine(t *testing.T) {
	p, _ := newPool(t, 2, func(c *Config[*fakeConn]) { c.LossLimit, c.Quarantine = 2, time.Hour })
	first := p.Order("repo")[0]
	acquire(t, p, "repo").Release(Lost)
	p.Check(context.Background())
	if l := acquire(t, p, "repo"); l.Name != first {
		t.Fatalf("one lost build took the worker out: got %s", l.Name)
	} else {
		l.Release(Lost)
	}
	p.Check(context.Background()) // it answers, but is quarantined
	l := acquire(t, p, "repo")
	defer l.Release(Done)
	if l.Name == first {
		t.Fatalf("a worker that lost 2 builds in a row still gets builds")
	}
	for _, s := range p.Status() {
		if s.Name == first && (s.Healthy || s.Error == "") {
			t.Fatalf("status of the quarantined worker: %+v", s)
		}
	}

	// A success in between resets the count.
	q, _ := newPool(t, 2, func(c *Config[*fakeConn]) { c.LossLimit, c.Quarantine = 2, time.Hour })
	acquire(t, q, "repo").Release(Lost)
	acquire(t, q, "repo").Release(Done)
	acquire(t, q, "repo").Release(Lost)
	q.Check(context.Background())
	if got := q.Healthy(); got != 2 {
		t.Fatalf("healthy = %d after lost, done, lost; want 2", got)
	}
}

func TestStatusAndDisk(t *testing.T) {
	p, conns := newPool(t, 2, nil)
	l := acquire(t, p, "repo")
	conns["tcp://w1:1234"].setDown(true)
	p.Check(context.Background())
	st := p.Status()
	if len(st) != 2 || st[0].Name != "tcp://w0:1234" || st[1].Name != "tcp://w1:1234" {
		t.Fatalf("status = %+v", st)
	}
	if !st[0].Healthy || st[0].DiskBytes != 101 || st[0].Error != "" {
		t.Errorf("w0 = %+v, want healthy with 101 bytes", st[0])
	}
	if st[1].Healthy || st[1].Error == "" {
		t.Errorf("w1 = %+v, want unhealthy with an error", st[1])
	}
	running := 0
	for _, s := range st {
		running += s.Running
	}
	if running != 1 {
		t.Errorf("running = %d, want 1", running)
	}
	l.Release(Done)
	l.Release(Done) // a second release does not count
	for _, s := range p.Status() {
		if s.Running != 0 {
			t.Fatalf("after release: %+v", s)
		}
	}
}

func TestResolvedPool(t *testing.T) {
	ips := []string{"10.0.0.2", "10.0.0.1"}
	var mu sync.Mutex
	lookup := func(context.Context, string) ([]string, error) {
		mu.Lock()
		defer mu.Unlock()
		return append([]string(nil), ips...), nil
	}
	es, resolve, err := Parse("dns://buildkitd.buildsvc.svc:1234", buildkitd.Endpoint{CACert: "ca.pem"}, lookup)
	if err != nil || es != nil || resolve == nil {
		t.Fatalf("Parse: %v %v", es, err)
	}
	dialed := map[string]buildkitd.Endpoint{}
	p, err := New(Config[*fakeConn]{
		Resolve: resolve,
		Dial: func(_ context.Context, e buildkitd.Endpoint) (*fakeConn, error) {
			mu.Lock()
			dialed[e.Address] = e
			mu.Unlock()
			return &fakeConn{}, nil
		},
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	p.Check(context.Background())
	if got := p.Healthy(); got != 2 {
		t.Fatalf("healthy = %d, want 2", got)
	}
	e := dialed["tcp://10.0.0.1:1234"]
	if e.ServerName != "buildkitd.buildsvc.svc" || e.CACert != "ca.pem" {
		t.Fatalf("dialled %+v, want the Service's name checked and the CA", e)
	}
	// A pod goes away while it runs a build: it leaves once released.
	l := acquire(t, p, "repo")
	mu.Lock()
	ips = []string{"10.0.0.3", "10.0.0.1", "10.0.0.2"}
	ips = slicesWithout(ips, l.Name[len("tcp://"):len(l.Name)-len(":1234")])
	mu.Unlock()
	p.Check(context.Background())
	for _, s := range p.Status() {
		if s.Name == l.Name {
			t.Fatalf("a worker no longer resolved is still listed: %+v", s)
		}
	}
	if got := len(p.Status()); got != 2 {
		t.Fatalf("pool of %d, want 2", got)
	}
	l.Release(Done)
	if p.Order("repo")[0] == l.Name {
		t.Fatalf("a gone worker is still ranked")
	}
}

func slicesWithout(s []string, drop string) []string {
	var out []string
	for _, v := range s {
		if v != drop {
			out = append(out, v)
		}
	}
	return out
}

func TestParse(t *testing.T) {
	tls := buildkitd.Endpoint{CACert: "ca", Cert: "c", Key: "k", ServerName: "buildkitd"}
	tests := []struct {
		in      string
		want    []string
		wantErr string
	}{
		{in: "unix:///run/buildkit/a.sock", want: []string{"unix:///run/buildkit/a.sock"}},
		{in: "tcp://a:1234, tcp://b:1234,unix:///x.sock", want: []string{"tcp://a:1234", "tcp://b:1234", "unix:///x.sock"}},
		{in: "tcp://a:1234,tcp://a:1234", wantErr: "listed twice"},
		{in: "http://a", wantErr: "want unix:// or tcp://"},
		{in: " , ", wantErr: "no buildkitd address"},
		{in: "dns://name", wantErr: "want dns://NAME:PORT"},
		{in: "dns://name:1234,tcp://a:1", wantErr: "names the whole pool"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			es, _, err := Parse(tt.in, tls, nil)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, e := range es {
				got = append(got, e.Address)
				if e.Address[:4] == "unix" && e.CACert != "" {
					t.Errorf("%s kept TLS settings", e.Address)
				}
				if e.Address[:3] == "tcp" && e.CACert != "ca" {
					t.Errorf("%s lost TLS settings", e.Address)
				}
			}
			if fmt.Sprint(got) != fmt.Sprint(tt.want) {
				t.Fatalf("got %v, want %v", got, tt.want)
			}
		})
	}
}

func TestNewRefusesBadConfig(t *testing.T) {
	dial := func(context.Context, buildkitd.Endpoint) (*fakeConn, error) { return &fakeConn{}, nil }
	for _, cfg := range []Config[*fakeConn]{
		{Endpoints: []buildkitd.Endpoint{{Address: "tcp://a:1"}}},
		{Dial: dial},
		{Dial: dial, Endpoints: []buildkitd.Endpoint{{Address: "tcp://a:1"}}, MaxBuilds: -1},
		{Dial: dial, Endpoints: []buildkitd.Endpoint{{Address: "ftp://a"}}},
	} {
		if _, err := New(cfg); err == nil {
			t.Errorf("New(%+v) accepted it", cfg)
		}
	}
}
