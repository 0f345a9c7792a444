//go:build integration

package integration

import (
	"fmt"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	buildv1 "github.com/buildsvc/buildsvc/proto/build/v1"
	"github.com/buildsvc/buildsvc/server"
)

// A request_id makes StartBuild and CreateImage idempotent: a retry while
// the build runs and a retry after it ended return the same build (no new
// resolve, no new solve), CreateImage replays the ended build's log, and
// the same request_id on a different request is ALREADY_EXISTS before
// anything is asked of git. One build pushes every tag of image_tags, and
// its record keeps its build_labels.
func TestRequestIDTagsAndLabels(t *testing.T) {
	res := &countingResolver{}
	c := startServer(t, func(c *server.Config) { c.Resolver = res })
	files := sampleFiles(t)
	files["main.go"] += fmt.Sprintf("\nvar _ = %q\n", t.Name()+time.Now().String())
	repo := newRepo(t, files)
	id := fmt.Sprintf("it-%d", time.Now().UnixNano())
	tags := []string{tagFor(t, "v1"), tagFor(t, "latest"), tagFor(t, "stable")}
	req := &buildv1.CreateImageRequest{GitRepo: repo.URL, GitCommit: "main", ImageTag: tags[0], ImageTags: tags[1:],
		RequestId: id, BuildLabels: map[string]string{"team": "payments", "pipeline": "42"}}

	first, err := c.StartBuild(t.Context(), startRequest(req))
	if err != nil {
		t.Fatal(err)
	}
	if first.GetName() != "builds/"+first.GetBuildId() || first.GetExisting() {
		t.Errorf("first start = %v", first)
	}
	running, err := c.StartBuild(t.Context(), startRequest(req))
	if err != nil {
		t.Fatal(err)
	}
	if running.GetBuildId() != first.GetBuildId() || !running.GetExisting() {
		t.Fatalf("retry while running = %v, want build %s existing", running, first.GetBuildId())
	}
	evs := watchAll(t, c, first.GetBuildId(), 0)
	if lastState(evs) != buildv1.BuildState_BUILD_STATE_SUCCEEDED {
		t.Fatalf("build ended %v: %v", lastState(evs), evs[len(evs)-1])
	}
	result := evs[len(evs)-1].GetResult()
	if len(result.GetTags()) != 3 || result.GetTag() != tags[0] {
		t.Errorf("result tags = %q (tag %q), want %q", result.GetTags(), result.GetTag(), tags)
	}
	for _, tag := range tags {
		if got := tagDigest(t, tag); got != result.GetDigest() {
			t.Errorf("%s points at %s, the build pushed %s", tag, got, result.GetDigest())
		}
	}

	// After the end, from the store's claim: same build, nothing resolved.
	resolves := res.calls.Load()
	again, err := c.StartBuild(t.Context(), startRequest(req))
	if err != nil {
		t.Fatal(err)
	}
	if again.GetBuildId() != first.GetBuildId() || !again.GetExisting() {
		t.Fatalf("retry after the end = %v, want build %s existing", again, first.GetBuildId())
	}
	replay := build(t, c, req)
	if replay.err != nil || len(replay.events) != len(evs) || replay.events[0].GetBuildId() != first.GetBuildId() {
		t.Fatalf("CreateImage retry: %d events of build %s (%v), want the %d of %s",
			len(replay.events), replay.events[0].GetBuildId(), replay.err, len(evs), first.GetBuildId())
	}
	if n := res.calls.Load(); n != resolves {
		t.Errorf("the retries resolved the ref again (%d resolves, want %d)", n, resolves)
	}

	// The same key on another request.
	other := &buildv1.CreateImageRequest{GitRepo: repo.URL, GitCommit: "main", ImageTag: tagFor(t, "other"), RequestId: id}
	_, err = c.StartBuild(t.Context(), startRequest(other))
	if status.Code(err) != codes.AlreadyExists {
		t.Fatalf("same request_id, other request: %v, want AlreadyExists", err)
	}
	if n := res.calls.Load(); n != resolves {
		t.Errorf("the refused request was resolved")
	}

	info, err := c.GetBuild(t.Context(), &buildv1.GetBuildRequest{BuildId: "builds/" + first.GetBuildId()})
	if err != nil {
		t.Fatal(err)
	}
	if info.GetLabels()["team"] != "payments" || info.GetLabels()["pipeline"] != "42" || info.GetName() != "builds/"+first.GetBuildId() {
		t.Errorf("record labels %v, name %q", info.GetLabels(), info.GetName())
	}
	if info.GetRequest().GetRequestId() != id || len(info.GetRequest().GetImageTags()) != 3 {
		t.Errorf("record request = %v", info.GetRequest())
	}
	if info.GetCreateTime() == nil || info.GetStartTime() == nil || info.GetEndTime() == nil {
		t.Errorf("record times: create %v start %v end %v", info.GetCreateTime(), info.GetStartTime(), info.GetEndTime())
	}
}
