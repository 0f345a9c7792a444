package server

import (
	"google.golang.org/grpc/codes"

	buildv1 "github.com/buildsvc/buildsvc/proto/build/v1"
)

// Observer is told what happens to builds; metrics implement it. Calls come
// from the goroutines that record events and must return quickly: an
// Observer must never block.
type Observer interface {
	// Event is called with every event of every build once it is recorded,
	// in log order for each build. The event must not be modified.
	Event(e *buildv1.BuildEvent)
	// Joined is called when a request joins an identical build instead of
	// starting one.
	Joined(buildID string)
	// Refused is called when a build request is refused with code before
	// a build is queued.
	Refused(code codes.Code)
}

type noObserver struct{}

func (noObserver) Event(*buildv1.BuildEvent) {}
func (noObserver) Joined(string)             {}
func (noObserver) Refused(codes.Code)        {}
