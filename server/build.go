package server

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/docker/cli/cli/config/configfile"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/buildsvc/buildsvc/credentials"
	"github.com/buildsvc/buildsvc/egress"
	"github.com/buildsvc/buildsvc/history"
	buildv1 "github.com/buildsvc/buildsvc/proto/build/v1"
)

// build is one build's record and event log. Its state only moves forward
// and every change is also an event in its log.
type build struct {
	id     string
	tenant string // who owns it: only its tenant's callers and admins see it
	// registry is the docker config whose credentials the build pulls and
	// pushes with (its tenant's).
	registry *configfile.ConfigFile
	// creds are the build's credentials (the request's and the server's),
	// in memory for its life only.
	creds *credentials.Build
	// allow widens the host policy of connections made for the build
	// (the server's allowance and its tenant's).
	allow egress.Allowance
	req   *request
	// verify, when set, makes the build a verification's rebuild: from
	// nothing, exported to a file, not pushed (see VerifyBuild).
	verify *rebuild
	key    string // dedup key: identical requests share it
	// requestKey is the request_id that started it (RequestID empty if
	// none), and fingerprint that request's requestFingerprint.
	requestKey  history.RequestKey
	fingerprint string
	timeout     time.Duration // for the run, once out of the queue
	log         *eventLog
	// stop is closed when the build is asked to stop; stopCause says why
	// (errCancelled or errShutdown).
	stop     chan struct{}
	stopOnce sync.Once

	mu        sync.Mutex
	stopCause error
	state     buildv1.BuildState
	commit    string
	queuePos  int32
	joined    int32
	created   time.Time
	started   time.Time
	builder   string // the buildkitd it runs on, once it has one
	finished  time.Time
	result    *buildv1.BuildResult
	err       *buildv1.BuildError
}

// newBuildID returns a fresh id that sorts by creation time.
func newBuildID(now time.Time) string {
	var b [5]byte
	_, _ = rand.Read(b[:])
	return now.UTC().Format("20060102-150405.000000") + "-" + hex.EncodeToString(b[:])
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

// requestStop asks the build to stop; only the first cause counts.
func (b *build) requestStop(cause error) {
	b.stopOnce.Do(func() {
		b.mu.Lock()
		b.stopCause = cause
		b.mu.Unlock()
		close(b.stop)
	})
}

// context returns a context for running the build, cancelled with the stop
// cause when the build is asked to stop. Call the CancelFunc when done.
func (b *build) context() (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancelCause(context.Background())
	go func() {
		select {
		case <-b.stop:
			b.mu.Lock()
			cause := b.stopCause
			b.mu.Unlock()
			cancel(cause)
		case <-ctx.Done():
		}
	}()
	return ctx, func() { cancel(nil) }
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
	if state != buildv1.BuildState_BUILD_STATE_QUEUED {
		b.queuePos = 0
	}
	ev := &buildv1.StateChange{State: state, Message: msg, Commit: b.commit, QueuePosition: b.queuePos}
	b.mu.Unlock()
	b.log.append(&buildv1.BuildEvent{Event: &buildv1.BuildEvent_State{State: ev}})
}

// setQueuePosition records a queued build's new place in the queue: up as
// builds ahead leave, or down when a tenant served less recently queues
// one (see fairQueue).
func (b *build) setQueuePosition(pos int) {
	b.mu.Lock()
	if b.state != buildv1.BuildState_BUILD_STATE_QUEUED || int32(pos) == b.queuePos {
		b.mu.Unlock()
		return
	}
	msg := fmt.Sprintf("moved up the queue (position %d)", pos)
	if int32(pos) > b.queuePos {
		msg = fmt.Sprintf("moved down the queue (position %d): another tenant's build goes first", pos)
	}
	b.queuePos = int32(pos)
	b.mu.Unlock()
	b.setState(buildv1.BuildState_BUILD_STATE_QUEUED, msg)
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
// error as the last event. Only the first end counts.
func (b *build) fail(state buildv1.BuildState, berr *buildv1.BuildError) {
	b.mu.Lock()
	if ended(b.state) {
		b.mu.Unlock()
		return
	}
	b.mu.Unlock()
	// The record keeps the error too, so it is masked before either sees it
	// (the step and its output come from the log, masked already; masked
	// again here, they stay so whatever made them).
	b.log.red.event(&buildv1.BuildEvent{Event: &buildv1.BuildEvent_Error{Error: berr}})
	berr.Step = b.log.red.string(berr.GetStep())
	for i, line := range berr.GetLogTail() {
		berr.LogTail[i] = b.log.red.string(line)
	}
	b.setState(state, berr.GetMessage())
	b.mu.Lock()
	b.err = berr
	b.finished = time.Now()
	b.mu.Unlock()
	b.log.append(&buildv1.BuildEvent{Event: &buildv1.BuildEvent_Error{Error: berr}})
	b.log.close()
}

// recordKey is what of a build's record changes as it runs, but for its
// LastSeq: the record is stored again only when it changed.
type recordKey struct {
	state             buildv1.BuildState
	commit, builder   string
	queuePos, joined  int32
	dropped           int64
	started, finished time.Time
}

func (b *build) recordKey() recordKey {
	_, dropped := b.log.stats()
	b.mu.Lock()
	defer b.mu.Unlock()
	return recordKey{state: b.state, commit: b.commit, builder: b.builder, queuePos: b.queuePos, joined: b.joined,
		dropped: dropped, started: b.started, finished: b.finished}
}

// info returns the build's record.
func (b *build) info() *buildv1.BuildInfo {
	lastSeq, dropped := b.log.stats()
	b.mu.Lock()
	defer b.mu.Unlock()
	return &buildv1.BuildInfo{
		BuildId:          b.id,
		Tenant:           b.tenant,
		Request:          b.req.proto(),
		State:            b.state,
		Commit:           b.commit,
		CreateTime:       timestamp(b.created),
		StartTime:        timestamp(b.started),
		EndTime:          timestamp(b.finished),
		Result:           b.result,
		Error:            b.err,
		QueuePosition:    b.queuePos,
		LastSeq:          lastSeq,
		Joined:           b.joined,
		LogBytesDropped:  dropped,
		CredentialsGiven: credentials.Given(b.creds),
		Name:             resourceName(b.id),
		Labels:           b.req.BuildLabels,
		Builder:          b.builder,
	}
}

func timestamp(t time.Time) *timestamppb.Timestamp {
	if t.IsZero() {
		return nil
	}
	return timestamppb.New(t)
}

// resourceName is the API's name of build id: builds/{id}.
func resourceName(id string) string { return "builds/" + id }

// buildIDOf is the build id a request names, by its id or by its resource
// name.
func buildIDOf(s string) string { return strings.TrimPrefix(s, "builds/") }
