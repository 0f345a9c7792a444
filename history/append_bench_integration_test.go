//go:build integration

package history_test

import (
	"bytes"
	"context"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/buildsvc/buildsvc/history"
	buildv1 "github.com/buildsvc/buildsvc/proto/build/v1"
)

// BenchmarkAppendEvents appends 100,000 events of one build, in batches of
// 50 events of about 200 bytes (a step's output as the server stores it),
// to the bbolt store and to the PostgreSQL one (DATABASE_URL, a fresh
// schema), the two interleaved batch by batch (each going first every other
// batch) so that the noise of a shared machine falls on both. It reports
// each store's events per second and their ratio; scripts/bench.sh runs it
// once (-benchtime 1x).
func BenchmarkAppendEvents(b *testing.B) {
	const events, batch = 100_000, 50
	ctx := context.Background()
	for range b.N {
		bolt, err := history.Open(filepath.Join(b.TempDir(), "history.db"))
		if err != nil {
			b.Fatal(err)
		}
		pg := openPostgres(b)
		stores := []struct {
			name  string
			s     history.Store
			spent time.Duration
		}{{name: "bbolt", s: bolt}, {name: "postgres", s: pg}}
		const id = "20260102-150405.000000-0a1b2c3d4e"
		rec := &buildv1.BuildInfo{BuildId: id, State: buildv1.BuildState_BUILD_STATE_BUILDING,
			Request: &buildv1.CreateImageRequest{GitRepo: "https://git.example/team/app.git"}}
		for _, st := range stores {
			if err := st.s.PutBuild(ctx, rec); err != nil {
				b.Fatal(err)
			}
		}
		size := 0
		for i := range events / batch {
			evs := benchEvents(id, uint64(i*batch+1), batch)
			if i == 0 {
				for _, e := range evs {
					size += proto.Size(e)
				}
			}
			for k := range stores {
				st := &stores[(i+k)%len(stores)]
				t0 := time.Now()
				if err := st.s.AppendEvents(ctx, id, evs); err != nil {
					b.Fatalf("%s: %v", st.name, err)
				}
				st.spent += time.Since(t0)
			}
		}
		rates := map[string]float64{}
		for _, st := range stores {
			if got, err := st.s.GetBuild(ctx, id); err != nil || got.GetLastSeq() != events {
				b.Fatalf("%s: GetBuild = LastSeq %d, %v; want %d", st.name, got.GetLastSeq(), err, events)
			}
			rates[st.name] = events / st.spent.Seconds()
			b.ReportMetric(rates[st.name], st.name+"-events/s")
		}
		bolt.Close()
		ratio := rates["postgres"] / rates["bbolt"]
		b.ReportMetric(ratio, "postgres/bbolt")
		b.Logf("%d events of %d bytes on average in batches of %d: bbolt %.0f events/s (%s), postgres %.0f events/s (%s), postgres/bbolt %.2f",
			events, size/batch, batch, rates["bbolt"], stores[0].spent.Round(time.Millisecond),
			rates["postgres"], stores[1].spent.Round(time.Millisecond), ratio)
	}
}

// benchEvents are n events of build id from seq from: log chunks of 70
// bytes of a step's output with its digest, stream and times, about 200
// bytes each encoded.
func benchEvents(id string, from uint64, n int) []*buildv1.BuildEvent {
	ts := timestamppb.New(time.Date(2026, 1, 2, 15, 4, 5, 0, time.UTC))
	out := make([]*buildv1.BuildEvent, n)
	for i := range out {
		out[i] = &buildv1.BuildEvent{BuildId: id, Seq: from + uint64(i), Time: ts,
			Event: &buildv1.BuildEvent_Log{Log: &buildv1.LogChunk{
				Vertex: "sha256:4f53cda18c2baa0c0354bb5f9a3ecbe5ed12ab4d8e11ba873c2f11161202b945",
				Stream: 1, Timestamp: ts,
				Data: bytes.Repeat([]byte{'a' + byte(i%26)}, 70),
			}}}
	}
	return out
}
