package server

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

func queuedBuild(tenant string, i int) *build {
	return &build{id: fmt.Sprintf("%s%d", tenant, i), tenant: tenant, created: fixedTime.Add(time.Duration(i) * time.Second)}
}

func ids(bs []*build) string {
	var out []string
	for _, b := range bs {
		out = append(out, b.id)
	}
	return strings.Join(out, " ")
}

func TestFairQueue(t *testing.T) {
	q := newFairQueue()
	// a's first build leaves at once (a slot was free); then a queues
	// nine more and b one: b's goes next, not after a's nine.
	q.push(queuedBuild("a", 1))
	if b := q.pop(nil); b.id != "a1" {
		t.Fatalf("first = %s", b.id)
	}
	for i := 2; i <= 10; i++ {
		q.push(queuedBuild("a", i))
	}
	q.push(queuedBuild("b", 11))
	if got := ids(q.order()); got != "b11 a2 a3 a4 a5 a6 a7 a8 a9 a10" {
		t.Errorf("order = %s", got)
	}
	if b := q.pop(nil); b.id != "b11" {
		t.Errorf("next = %s, want b's", b.id)
	}
	// Round robin while both have builds; a tenant at its limit is passed
	// over without losing its turn.
	q.push(queuedBuild("b", 12))
	q.push(queuedBuild("b", 13))
	if got := ids(q.order()); got != "a2 b12 a3 b13 a4 a5 a6 a7 a8 a9 a10" {
		t.Errorf("order = %s", got)
	}
	notA := func(t string) bool { return t != "a" }
	if b := q.pop(notA); b.id != "b12" {
		t.Errorf("with a at its limit: next = %s, want b12", b.id)
	}
	if b := q.pop(nil); b.id != "a2" {
		t.Errorf("next = %s, want a2 (a was passed over, so it is served least recently)", b.id)
	}
	if q.pop(func(string) bool { return false }) != nil {
		t.Error("pop returned a build no tenant may start")
	}
	// Removing, lengths, draining.
	if q.remove(&build{}) || q.remove(&build{tenant: "a"}) {
		t.Error("removed a build that is not queued")
	}
	a5 := q.byTenant["a"][2]
	if !q.remove(a5) || q.tenantLen("a") != 7 || q.len() != 8 {
		t.Errorf("after removing a5: a has %d, %d in all", q.tenantLen("a"), q.len())
	}
	if got := ids(q.drain()); got != "b13 a3 a4 a6 a7 a8 a9 a10" {
		t.Errorf("drain = %s", got)
	}
	if q.len() != 0 || q.pop(nil) != nil {
		t.Error("the queue is not empty after drain")
	}
}
