package server

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"sync"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	buildv1 "github.com/buildsvc/buildsvc/proto/build/v1"
)

// build is one build's record and event log. Its state only moves forward
// and every change is also an event in its log.
type build struct {
	id     string
	req    *request
	log    *eventLog
	cancel context.CancelFunc

	mu       sync.Mutex
	state    buildv1.BuildState
	commit   string
	created  time.Time
	started  time.Time
	finished time.Time
	result   *buildv1.BuildResult
	err      *buildv1.BuildError
}

// newBuildID returns a fresh id that sorts by creation time.
func newBuildID(now time.Time) string {
	var b [5]byte
	_, _ = rand.Read(b[:])
	return now.UTC().Format("20060102-150405") + "-" + hex.EncodeToString(b[:])
}

func newBuild(req *request, redact func(*buildv1.BuildEvent), now time.Time) *build {
	id := newBuildID(now)
	return &build{id: id, req: req, log: newEventLog(id, redact), created: now}
}

// ended reports whether state is final.
func ended(state buildv1.BuildState) bool {
	switch state {
	case buildv1.BuildState_BUILD_STATE_SUCCEEDED, buildv1.BuildState_BUILD_STATE_FAILED,
		buildv1.BuildState_BUILD_STATE_CANCELLED, buildv1.BuildState_BUILD_STATE_INTERRUPTED:
		return true
	}
	return false
}

// setState moves the build to state and records the change. It is a no-op
// once the build has ended.
func (b *build) setState(state buildv1.BuildState, msg string) {
	b.mu.Lock()
	if ended(b.state) {
		b.mu.Unlock()
		return
	}
	b.state = state
	if state == buildv1.BuildState_BUILD_STATE_BUILDING && b.started.IsZero() {
		b.started = time.Now()
	}
	commit := b.commit
	b.mu.Unlock()
	b.log.append(&buildv1.BuildEvent{Event: &buildv1.BuildEvent_State{State: &buildv1.StateChange{
		State: state, Message: msg, Commit: commit,
	}}})
}

func (b *build) setCommit(sha string) {
	b.mu.Lock()
	b.commit = sha
	b.mu.Unlock()
}

// succeed ends the build with its result: the final state, then the result
// as the last event.
func (b *build) succeed(res *buildv1.BuildResult) {
	b.setState(buildv1.BuildState_BUILD_STATE_SUCCEEDED, "pushed "+res.GetImage())
	b.mu.Lock()
	b.result = res
	b.finished = time.Now()
	b.mu.Unlock()
	b.log.append(&buildv1.BuildEvent{Event: &buildv1.BuildEvent_Result{Result: res}})
	b.log.close()
}

// fail ends the build in state (FAILED, CANCELLED or INTERRUPTED) with the
// error as the last event.
func (b *build) fail(state buildv1.BuildState, berr *buildv1.BuildError) {
	b.log.redact(&buildv1.BuildEvent{Event: &buildv1.BuildEvent_Error{Error: berr}})
	b.setState(state, berr.GetMessage())
	b.mu.Lock()
	b.err = berr
	b.finished = time.Now()
	b.mu.Unlock()
	b.log.append(&buildv1.BuildEvent{Event: &buildv1.BuildEvent_Error{Error: berr}})
	b.log.close()
}

// info returns the build's record.
func (b *build) info() *buildv1.BuildInfo {
	b.mu.Lock()
	defer b.mu.Unlock()
	return &buildv1.BuildInfo{
		BuildId:  b.id,
		Request:  b.req.proto(),
		State:    b.state,
		Commit:   b.commit,
		Created:  timestamp(b.created),
		Started:  timestamp(b.started),
		Finished: timestamp(b.finished),
		Result:   b.result,
		Error:    b.err,
	}
}

func timestamp(t time.Time) *timestamppb.Timestamp {
	if t.IsZero() {
		return nil
	}
	return timestamppb.New(t)
}
