package server

import (
	"testing"

	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"

	buildv1 "github.com/buildsvc/buildsvc/proto/build/v1"
)

// An event of a build's log is encoded once: the second stream that sends
// it gets the same bytes; they decode to the event; other messages and
// events without a build id and seq go through the proto codec; the cache
// keeps within its bound.
func TestEventCodec(t *testing.T) {
	c := newEventCodec(1 << 10)
	ev := &buildv1.BuildEvent{BuildId: "b-1", Seq: 7, Event: &buildv1.BuildEvent_Log{Log: &buildv1.LogChunk{Data: []byte("compiling\n")}}}
	first, err := c.Marshal(ev)
	if err != nil {
		t.Fatal(err)
	}
	second, err := c.Marshal(ev)
	if err != nil {
		t.Fatal(err)
	}
	a, b := first.Materialize(), second.Materialize()
	if len(first) != 1 || len(second) != 1 || &first[0].ReadOnlyData()[0] != &second[0].ReadOnlyData()[0] {
		t.Error("the second send encoded the event again")
	}
	got := &buildv1.BuildEvent{}
	if err := c.Unmarshal(mem.BufferSlice{mem.SliceBuffer(a)}, got); err != nil || !proto.Equal(got, ev) || string(a) != string(b) {
		t.Fatalf("decoded %v (%v), want %v", got, err, ev)
	}
	// A message the cache does not name.
	for _, m := range []proto.Message{&buildv1.GetBuildRequest{BuildId: "b-1"}, &buildv1.BuildEvent{Seq: 7}} {
		out, err := c.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		back := m.ProtoReflect().New().Interface()
		if err := c.Unmarshal(out, back); err != nil || !proto.Equal(back, m) {
			t.Errorf("%T round trip: %v %v", m, back, err)
		}
	}
	if c.cache.lru.Len() != 1 {
		t.Errorf("cache holds %d events, want 1", c.cache.lru.Len())
	}
	// Bound: 1 KiB of ~100-byte events keeps about ten.
	for i := range 100 {
		e := &buildv1.BuildEvent{BuildId: "b-2", Seq: uint64(i + 1), Event: &buildv1.BuildEvent_Log{Log: &buildv1.LogChunk{Data: make([]byte, 90)}}}
		if _, err := c.Marshal(e); err != nil {
			t.Fatal(err)
		}
	}
	if c.cache.size > 1<<10 || c.cache.lru.Len() > 11 || c.cache.lru.Len() < 5 {
		t.Errorf("cache holds %d events, %d bytes; bound 1024", c.cache.lru.Len(), c.cache.size)
	}
	if _, ok := c.cache.get("b-2/100"); !ok {
		t.Error("the newest event was evicted")
	}
	if _, ok := c.cache.get("b-1/7"); ok {
		t.Error("the oldest event was kept")
	}
}
