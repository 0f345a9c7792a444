package server

// fairQueue holds the builds waiting for a slot, fair across tenants: the
// next build is the oldest one of the tenant served least recently (a
// tenant that has not been served yet comes first), so one tenant that
// fills the queue delays another's build by at most one build per tenant
// ahead of it, never by its whole backlog. Within a tenant, builds go first
// in, first out. It is not safe for concurrent use (the server holds s.mu).
type fairQueue struct {
	byTenant map[string][]*build
	// served is when each tenant last had a build leave the queue, as a
	// count of builds that left it; 0 means never.
	served map[string]uint64
	clock  uint64
	n      int
}

func newFairQueue() *fairQueue {
	return &fairQueue{byTenant: map[string][]*build{}, served: map[string]uint64{}}
}

// len is the number of queued builds.
func (q *fairQueue) len() int { return q.n }

// tenantLen is the number of queued builds of tenant.
func (q *fairQueue) tenantLen(tenant string) int { return len(q.byTenant[tenant]) }

// push queues b at the end of its tenant's builds.
func (q *fairQueue) push(b *build) {
	q.byTenant[b.tenant] = append(q.byTenant[b.tenant], b)
	q.n++
}

// next returns the tenant whose build goes next among those for which may
// says yes, and false if there is none.
func (q *fairQueue) next(served map[string]uint64, queued map[string][]*build, may func(tenant string) bool) (string, bool) {
	best, found := "", false
	for t, bs := range queued {
		if len(bs) == 0 || (may != nil && !may(t)) {
			continue
		}
		if !found || served[t] < served[best] ||
			served[t] == served[best] && bs[0].created.Before(queued[best][0].created) ||
			served[t] == served[best] && bs[0].created.Equal(queued[best][0].created) && t < best {
			best, found = t, true
		}
	}
	return best, found
}

// pop takes the next build out of the queue; may, if not nil, says whether
// a tenant may start one now (its own limit on running builds). It returns
// nil if no build may start.
func (q *fairQueue) pop(may func(tenant string) bool) *build {
	t, ok := q.next(q.served, q.byTenant, may)
	if !ok {
		return nil
	}
	b := q.byTenant[t][0]
	q.byTenant[t] = q.byTenant[t][1:]
	if len(q.byTenant[t]) == 0 {
		delete(q.byTenant, t)
	}
	q.n--
	q.clock++
	q.served[t] = q.clock
	return b
}

// remove takes b out of the queue and reports whether it was queued.
func (q *fairQueue) remove(b *build) bool {
	bs := q.byTenant[b.tenant]
	for i, x := range bs {
		if x == b {
			q.byTenant[b.tenant] = append(bs[:i:i], bs[i+1:]...)
			if len(q.byTenant[b.tenant]) == 0 {
				delete(q.byTenant, b.tenant)
			}
			q.n--
			return true
		}
	}
	return false
}

// drain empties the queue and returns what was in it, in the order it
// would have left.
func (q *fairQueue) drain() []*build {
	out := q.order()
	q.byTenant, q.n = map[string][]*build{}, 0
	return out
}

// order returns the queued builds in the order they will leave the queue
// if every tenant may start builds (what queue positions report).
func (q *fairQueue) order() []*build {
	served := make(map[string]uint64, len(q.served))
	for t, c := range q.served {
		served[t] = c
	}
	queued := make(map[string][]*build, len(q.byTenant))
	for t, bs := range q.byTenant {
		queued[t] = bs
	}
	clock := q.clock
	out := make([]*build, 0, q.n)
	for len(out) < q.n {
		t, _ := q.next(served, queued, nil)
		out = append(out, queued[t][0])
		queued[t] = queued[t][1:]
		clock++
		served[t] = clock
	}
	return out
}
