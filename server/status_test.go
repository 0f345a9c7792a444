package server

import (
	"context"
	"testing"
	"time"

	buildv1 "github.com/buildsvc/buildsvc/proto/build/v1"
)

// GetStatus reports the builds running and waiting and the pool's
// workers.
func TestGetStatus(t *testing.T) {
	fk := newFakeBuildKit()
	fk.hold = true
	pool, _ := poolOf(t, fk, newFakeBuildKit())
	e := newLifecycleServer(t, newFakeBuildKit(), func(c *Config) {
		c.BuildKitClient = nil
		c.Builders = WorkerPool(pool)
		c.MaxConcurrent = 1
	})
	got, err := e.s.GetStatus(context.Background(), &buildv1.GetStatusRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if got.GetQueued() != 0 || got.GetRunning() != 0 || got.GetMaxConcurrent() != 1 || len(got.GetWorkers()) != 2 {
		t.Fatalf("idle: %v", got)
	}
	for _, w := range got.GetWorkers() {
		if !w.GetHealthy() || w.GetCheckedTime() == nil || w.GetError() != "" {
			t.Errorf("worker %v", w)
		}
	}
	// Two builds: one runs (held), one waits.
	e.start(t, imageRequest("v1"))
	e.start(t, imageRequest("v2"))
	t.Cleanup(fk.stop)
	deadline := time.Now().Add(5 * time.Second)
	for {
		got, err = e.s.GetStatus(context.Background(), &buildv1.GetStatusRequest{})
		if err != nil {
			t.Fatal(err)
		}
		busy := int32(0)
		for _, w := range got.GetWorkers() {
			busy += w.GetRunning()
		}
		if got.GetRunning() == 1 && got.GetQueued() == 1 && busy == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("with a build running and one queued: %v", got)
		}
		time.Sleep(time.Millisecond)
	}
}
