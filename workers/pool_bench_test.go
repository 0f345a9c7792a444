package workers

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"testing"

	"github.com/buildsvc/buildsvc/buildkitd"
)

// benchRepos is how many repository URLs the benchmarks' builds come
// from, so that the keys, and the workers they rank first, vary.
const benchRepos = 1000

// benchPool is a checked pool of n fake workers, bounded as the server
// bounds it by default (max-concurrent-builds 4, no per-worker limit set).
func benchPool(b *testing.B, n int) *Pool[*fakeConn] {
	b.Helper()
	conns := map[string]*fakeConn{}
	var es []buildkitd.Endpoint
	for i := range n {
		a := fmt.Sprintf("tcp://buildkitd-%d.buildkitd.buildsvc.svc:1234", i)
		es = append(es, buildkitd.Endpoint{Address: a})
		conns[a] = &fakeConn{}
	}
	p, err := New(Config[*fakeConn]{
		Endpoints:   es,
		Dial:        func(_ context.Context, e buildkitd.Endpoint) (*fakeConn, error) { return conns[e.Address], nil },
		TotalBuilds: 4,
		Logger:      slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		b.Fatal(err)
	}
	p.Check(context.Background())
	if got := p.Healthy(); got != n {
		b.Fatalf("%d of %d fake workers healthy", got, n)
	}
	return p
}

func benchKeys() []string {
	keys := make([]string, benchRepos)
	for i := range keys {
		keys[i] = fmt.Sprintf("https://git.example.com/team-%d/service-%d.git", i%37, i)
	}
	return keys
}

// BenchmarkAcquireRelease is the pool's share of one build: Acquire for
// the build's repository, then Release. One op is one build; the ns/op of
// workers=3 less that of workers=1 is what routing over a pool adds to a
// build over a single endpoint. The parallel ones run builds from every
// GOMAXPROCS goroutine at once, contending for the pool's lock.
func BenchmarkAcquireRelease(b *testing.B) {
	keys := benchKeys()
	for _, n := range []int{1, 3} {
		b.Run(fmt.Sprintf("workers=%d", n), func(b *testing.B) {
			p := benchPool(b, n)
			ctx := context.Background()
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				l, err := p.Acquire(ctx, keys[i%len(keys)], nil, nil)
				if err != nil {
					b.Fatal(err)
				}
				l.Release(Done)
				i++
			}
		})
	}
	for _, n := range []int{1, 3} {
		b.Run(fmt.Sprintf("parallel/workers=%d", n), func(b *testing.B) {
			p := benchPool(b, n)
			ctx := context.Background()
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				i := 0
				for pb.Next() {
					l, err := p.Acquire(ctx, keys[i%len(keys)], nil, nil)
					if err != nil {
						b.Error(err)
						return
					}
					l.Release(Done)
					i++
				}
			})
		})
	}
}
