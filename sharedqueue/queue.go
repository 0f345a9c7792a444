// Package sharedqueue is the build queue that several server replicas share
// through one PostgreSQL database: a build accepted by any replica is
// queued in the database and claimed by exactly one, and the queue's limit,
// the deduplication of identical requests and the limits on running
// builds (the service's and each tenant's) hold across all of them.
//
// Every change is a transaction that first takes one advisory lock (the
// queue's), so that admission and claims see and change the queue one at a
// time: the queue is small (the builds waiting and running), its
// transactions are short, and the limits are exact. Claimed rows carry a
// lease that their replica renews; the rows of a replica whose leases
// expired (it died) are handed back by Expired for the caller to end. A
// replica learns of changes by LISTEN/NOTIFY (channels queueChannel,
// cancelChannel, and the history's EventsChannel), with polling as the
// fallback.
package sharedqueue

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/buildsvc/buildsvc/history"
	"github.com/buildsvc/buildsvc/pgschema"
)

//go:embed migrations/*.sql
var migrations embed.FS

const (
	migrationsTable = "queue_schema_migrations"
	// lockKey is the advisory lock of every queue transaction ("bsvq").
	lockKey = 0x62737671
	// The notification channels: the queue changed (a build to claim, a
	// slot freed), a build is to be cancelled (payload: its id), and a
	// build's log grew (payload: its id; sent by the history's store).
	queueChannel  = "buildsvc_queue"
	cancelChannel = "buildsvc_cancel"
)

// eventsChannel is the channel the history's PostgreSQL store notifies
// with a build's id when it appends to its log.
const eventsChannel = history.EventsChannel

// Errors of Enqueue.
var (
	// ErrQueueFull: the queue holds its limit of waiting builds while
	// every slot runs one.
	ErrQueueFull = errors.New("the build queue is full")
	// ErrTenantQueued: the tenant has its limit of builds waiting.
	ErrTenantQueued = errors.New("the tenant's limit of queued builds is reached")
)

// Options configure a Queue.
type Options struct {
	// Replica names this server among the replicas; unique per process.
	Replica string
	// Lease is how long a replica's claim holds without renewal (Renew
	// every Lease/3). Default 15 s.
	Lease time.Duration
	// Logger gets the listener's troubles. Default slog.Default().
	Logger *slog.Logger
}

// Queue is one replica's handle on the shared queue.
type Queue struct {
	pool    *pgxpool.Pool
	replica string
	lease   time.Duration
	log     *slog.Logger

	wake chan struct{} // a queue notification came

	mu       sync.Mutex
	cancels  chan string
	watchers map[string][]chan struct{} // build id -> woken on its events
	stop     context.CancelFunc
	done     chan struct{}
}

// Open connects to the database of dsn, migrates the queue's tables, and
// registers the replica. Run listens for notifications; Close ends both.
func Open(ctx context.Context, dsn string, o Options) (*Queue, error) {
	if o.Replica == "" {
		return nil, errors.New("sharedqueue: the replica needs a name")
	}
	if o.Lease == 0 {
		o.Lease = 15 * time.Second
	}
	if o.Lease < time.Second {
		return nil, fmt.Errorf("sharedqueue: lease %v is shorter than a second", o.Lease)
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	pool, err := pgxpool.New(ctx, dsn)
	if err != nil {
		return nil, fmt.Errorf("sharedqueue: %w", err)
	}
	if err := pool.Ping(ctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("sharedqueue: %w", err)
	}
	if err := pgschema.Migrate(ctx, pool, migrations, "migrations", migrationsTable); err != nil {
		pool.Close()
		return nil, fmt.Errorf("sharedqueue: migrate the schema: %w", err)
	}
	q := &Queue{pool: pool, replica: o.Replica, lease: o.Lease, log: o.Logger,
		wake: make(chan struct{}, 1), cancels: make(chan string, 64), watchers: map[string][]chan struct{}{}}
	if err := q.renewReplica(ctx); err != nil {
		pool.Close()
		return nil, err
	}
	lctx, stop := context.WithCancel(context.WithoutCancel(ctx))
	q.stop, q.done = stop, make(chan struct{})
	go q.listen(lctx)
	return q, nil
}

// Replica is this replica's name.
func (q *Queue) Replica() string { return q.replica }

// Lease is how long a claim holds without renewal.
func (q *Queue) Lease() time.Duration { return q.lease }

// Close stops listening, removes the replica from the live ones (the
// others then hand its leftovers back at once) and disconnects.
func (q *Queue) Close(ctx context.Context) error {
	q.stop()
	<-q.done
	_, err := q.pool.Exec(ctx, `DELETE FROM queue_replicas WHERE name = $1`, q.replica)
	q.pool.Close()
	return err
}

// tx runs fn in a transaction holding the queue's lock.
func (q *Queue) tx(ctx context.Context, fn func(pgx.Tx) error) error {
	return pgx.BeginFunc(ctx, q.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, lockKey); err != nil {
			return err
		}
		return fn(tx)
	})
}

// Entry is a build to queue.
type Entry struct {
	BuildID, Tenant string
	// DedupKey is the same for identical requests, which share a build.
	DedupKey string
	// Owned: only this replica may run it (it holds the request's own
	// credentials).
	Owned bool
}

// AdmitLimits bound the queue at admission.
type AdmitLimits struct {
	// QueueSize builds may wait while MaxConcurrent run.
	QueueSize, MaxConcurrent int
	// TenantMaxQueued builds of the entry's tenant may wait; 0 is no
	// limit.
	TenantMaxQueued int
}

// Enqueue queues e, not yet claimable (see Ready), unless a build with its
// dedup key is queued or running: then it returns that build's id and
// queues nothing. A full queue is ErrQueueFull, a tenant at its limit
// ErrTenantQueued.
func (q *Queue) Enqueue(ctx context.Context, e Entry, lim AdmitLimits) (joined string, err error) {
	err = q.tx(ctx, func(tx pgx.Tx) error {
		err := tx.QueryRow(ctx, `SELECT build_id FROM build_queue WHERE dedup_key = $1`, e.DedupKey).Scan(&joined)
		switch {
		case err == nil:
			return nil
		case !errors.Is(err, pgx.ErrNoRows):
			return err
		}
		var queued, running, tenantQueued int
		if err := tx.QueryRow(ctx, `SELECT
				count(*) FILTER (WHERE state = 'queued'),
				count(*) FILTER (WHERE state = 'running'),
				count(*) FILTER (WHERE state = 'queued' AND tenant = $1)
			FROM build_queue`, e.Tenant).Scan(&queued, &running, &tenantQueued); err != nil {
			return err
		}
		if running >= lim.MaxConcurrent && queued >= lim.QueueSize {
			return ErrQueueFull
		}
		if lim.TenantMaxQueued > 0 && tenantQueued >= lim.TenantMaxQueued {
			return ErrTenantQueued
		}
		var owner *string
		if e.Owned {
			owner = &q.replica
		}
		_, err = tx.Exec(ctx, `INSERT INTO build_queue (build_id, tenant, dedup_key, owner) VALUES ($1, $2, $3, $4)`,
			e.BuildID, e.Tenant, e.DedupKey, owner)
		return err
	})
	if err != nil {
		if errors.Is(err, ErrQueueFull) || errors.Is(err, ErrTenantQueued) {
			return "", err
		}
		return "", fmt.Errorf("sharedqueue: enqueue %s: %w", e.BuildID, err)
	}
	return joined, nil
}

// Ready makes a queued build claimable, and tells the replicas.
func (q *Queue) Ready(ctx context.Context, id string) error {
	return q.notifying(ctx, `UPDATE build_queue SET ready = true WHERE build_id = $1`, id)
}

// notifying runs stmt on id and notifies the queue's channel, in one
// transaction.
func (q *Queue) notifying(ctx context.Context, stmt, id string) error {
	err := pgx.BeginFunc(ctx, q.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, stmt, id); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `SELECT pg_notify($1, $2)`, queueChannel, id)
		return err
	})
	if err != nil {
		return fmt.Errorf("sharedqueue: %s: %w", id, err)
	}
	return nil
}

// Done takes an ended build out of the queue, freeing its slot and its
// dedup key.
func (q *Queue) Done(ctx context.Context, id string) error {
	return q.notifying(ctx, `DELETE FROM build_queue WHERE build_id = $1`, id)
}

// ClaimLimits bound the builds running across the replicas.
type ClaimLimits struct {
	// MaxConcurrent builds run at once in all.
	MaxConcurrent int
	// TenantMaxRunning is a tenant's limit on running builds; 0 is none.
	TenantMaxRunning func(tenant string) int
}

// Claim takes up to n queued builds for this replica to run, within lim,
// and returns their ids. Builds are taken oldest first, a tenant with
// fewer builds running before one with more (so that one tenant's many
// builds do not hold back another's first); a build owned by another
// replica is left to it.
func (q *Queue) Claim(ctx context.Context, n int, lim ClaimLimits) ([]string, error) {
	if n <= 0 {
		return nil, nil
	}
	var ids []string
	err := q.tx(ctx, func(tx pgx.Tx) error {
		ids = nil
		runningBy := map[string]int{}
		running := 0
		rows, err := tx.Query(ctx, `SELECT tenant, count(*) FROM build_queue WHERE state = 'running' GROUP BY tenant`)
		if err != nil {
			return err
		}
		for rows.Next() {
			var t string
			var c int
			if err := rows.Scan(&t, &c); err != nil {
				return err
			}
			runningBy[t], running = c, running+c
		}
		if err := rows.Err(); err != nil {
			return err
		}
		free := min(n, lim.MaxConcurrent-running)
		if free <= 0 {
			return nil
		}
		type cand struct {
			id, tenant string
			seq        int64
		}
		var cands []cand
		rows, err = tx.Query(ctx, `SELECT build_id, tenant, seq FROM build_queue
			WHERE state = 'queued' AND ready AND (owner IS NULL OR owner = $1) ORDER BY seq`, q.replica)
		if err != nil {
			return err
		}
		for rows.Next() {
			var c cand
			if err := rows.Scan(&c.id, &c.tenant, &c.seq); err != nil {
				return err
			}
			cands = append(cands, c)
		}
		if err := rows.Err(); err != nil {
			return err
		}
		for len(ids) < free {
			// The next: of the tenants that may start one, the one with
			// the fewest running; oldest first among equals.
			best := -1
			for i, c := range cands {
				if c.id == "" {
					continue
				}
				if limit := tenantLimit(lim, c.tenant); limit > 0 && runningBy[c.tenant] >= limit {
					continue
				}
				if best < 0 || runningBy[c.tenant] < runningBy[cands[best].tenant] {
					best = i
				}
			}
			if best < 0 {
				break
			}
			ids = append(ids, cands[best].id)
			runningBy[cands[best].tenant]++
			cands[best].id = ""
		}
		if len(ids) == 0 {
			return nil
		}
		_, err = tx.Exec(ctx, `UPDATE build_queue SET state = 'running', replica = $1, lease_until = now() + $2::interval
			WHERE build_id = ANY($3)`, q.replica, q.lease.String(), ids)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("sharedqueue: claim: %w", err)
	}
	return ids, nil
}

func tenantLimit(lim ClaimLimits, tenant string) int {
	if lim.TenantMaxRunning == nil {
		return 0
	}
	return lim.TenantMaxRunning(tenant)
}

// Renew renews this replica's lease and its running builds', and returns
// those of them that are to be cancelled.
func (q *Queue) Renew(ctx context.Context) (cancel []string, err error) {
	if err := q.renewReplica(ctx); err != nil {
		return nil, err
	}
	rows, err := q.pool.Query(ctx, `UPDATE build_queue SET lease_until = now() + $2::interval
		WHERE replica = $1 AND state = 'running' RETURNING build_id, cancel`, q.replica, q.lease.String())
	if err != nil {
		return nil, fmt.Errorf("sharedqueue: renew: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var id string
		var c bool
		if err := rows.Scan(&id, &c); err != nil {
			return nil, err
		}
		if c {
			cancel = append(cancel, id)
		}
	}
	return cancel, rows.Err()
}

func (q *Queue) renewReplica(ctx context.Context) error {
	_, err := q.pool.Exec(ctx, `INSERT INTO queue_replicas (name, lease_until) VALUES ($1, now() + $2::interval)
		ON CONFLICT (name) DO UPDATE SET lease_until = EXCLUDED.lease_until`, q.replica, q.lease.String())
	if err != nil {
		return fmt.Errorf("sharedqueue: renew the replica's lease: %w", err)
	}
	return nil
}

// Expired takes out of the queue, and returns, the builds whose replica is
// gone: running ones whose lease ran out, and queued ones owned by a
// replica whose lease ran out. The caller ends them (INTERRUPTED).
func (q *Queue) Expired(ctx context.Context) ([]string, error) {
	var ids []string
	err := q.tx(ctx, func(tx pgx.Tx) error {
		ids = nil
		rows, err := tx.Query(ctx, `DELETE FROM build_queue q
			WHERE (q.state = 'running' AND q.lease_until < now())
			   OR (q.state = 'queued' AND q.owner IS NOT NULL AND NOT EXISTS (
					SELECT 1 FROM queue_replicas r WHERE r.name = q.owner AND r.lease_until >= now()))
			RETURNING q.build_id`)
		if err != nil {
			return err
		}
		ids, err = pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `DELETE FROM queue_replicas WHERE lease_until < now() - interval '1 hour'`); err != nil {
			return err
		}
		if len(ids) > 0 {
			_, err = tx.Exec(ctx, `SELECT pg_notify($1, '')`, queueChannel)
		}
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("sharedqueue: expired: %w", err)
	}
	slices.Sort(ids)
	return ids, nil
}

// Leftovers takes out of the queue, and returns, what a previous process
// of this replica's name left: the builds it ran and those only it could
// run (its owned queued ones). A server calls it once as it starts, before
// it claims; the caller ends them (INTERRUPTED). Without it a restarted
// replica of the same name (a container restarted in its pod) would renew
// the dead process's leases for ever.
func (q *Queue) Leftovers(ctx context.Context) ([]string, error) {
	var ids []string
	err := q.tx(ctx, func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, `DELETE FROM build_queue
			WHERE (state = 'running' AND replica = $1) OR (state = 'queued' AND owner = $1)
			RETURNING build_id`, q.replica)
		if err != nil {
			return err
		}
		ids, err = pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			return err
		}
		if len(ids) > 0 {
			_, err = tx.Exec(ctx, `SELECT pg_notify($1, '')`, queueChannel)
		}
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("sharedqueue: leftovers: %w", err)
	}
	slices.Sort(ids)
	return ids, nil
}

// Where is where a build is in the queue.
type Where int

const (
	// Gone: not in the queue (ended, or never queued).
	Gone Where = iota
	// Queued: waiting; Cancel took it out.
	Queued
	// Running on a replica; Cancel asked it to stop.
	Running
)

// Cancel cancels a build: a queued one is taken out of the queue (the
// caller ends it); a running one is flagged, and its replica told, to stop
// it. It says where the build was.
func (q *Queue) Cancel(ctx context.Context, id string) (Where, error) {
	where := Gone
	err := q.tx(ctx, func(tx pgx.Tx) error {
		var state string
		err := tx.QueryRow(ctx, `SELECT state FROM build_queue WHERE build_id = $1`, id).Scan(&state)
		switch {
		case errors.Is(err, pgx.ErrNoRows):
			return nil
		case err != nil:
			return err
		case state == "queued":
			where = Queued
			if _, err := tx.Exec(ctx, `DELETE FROM build_queue WHERE build_id = $1`, id); err != nil {
				return err
			}
			_, err = tx.Exec(ctx, `SELECT pg_notify($1, $2)`, queueChannel, id)
			return err
		}
		where = Running
		if _, err := tx.Exec(ctx, `UPDATE build_queue SET cancel = true WHERE build_id = $1`, id); err != nil {
			return err
		}
		_, err = tx.Exec(ctx, `SELECT pg_notify($1, $2)`, cancelChannel, id)
		return err
	})
	if err != nil {
		return Gone, fmt.Errorf("sharedqueue: cancel %s: %w", id, err)
	}
	return where, nil
}

// Counts are the queue's builds, waiting and running, in all replicas.
func (q *Queue) Counts(ctx context.Context) (queued, running int, err error) {
	err = q.pool.QueryRow(ctx, `SELECT count(*) FILTER (WHERE state = 'queued'), count(*) FILTER (WHERE state = 'running') FROM build_queue`).Scan(&queued, &running)
	return queued, running, err
}

// Wake is signalled when the queue changed (a build became claimable, one
// ended, a replica's builds were handed back), so that a replica with free
// slots claims at once rather than at its next poll.
func (q *Queue) Wake() <-chan struct{} { return q.wake }

// Cancels delivers the ids of builds some replica asked to cancel; the
// replica running one stops it (the others ignore it).
func (q *Queue) Cancels() <-chan string { return q.cancels }

// EventsChanged returns a channel closed at the next append to build id's
// log by any replica (or when the listener reconnects, when appends may
// have been missed), and a function to call when the caller stops
// waiting.
func (q *Queue) EventsChanged(id string) (<-chan struct{}, func()) {
	ch := make(chan struct{})
	q.mu.Lock()
	q.watchers[id] = append(q.watchers[id], ch)
	q.mu.Unlock()
	return ch, func() {
		q.mu.Lock()
		defer q.mu.Unlock()
		ws := q.watchers[id]
		if i := slices.Index(ws, chan struct{}(ch)); i >= 0 {
			ws = slices.Delete(ws, i, i+1)
		}
		if len(ws) == 0 {
			delete(q.watchers, id)
		} else {
			q.watchers[id] = ws
		}
	}
}

// listen LISTENs on the channels on a connection of its own until ctx
// ends, reconnecting after a failure.
func (q *Queue) listen(ctx context.Context) {
	defer close(q.done)
	pause := 100 * time.Millisecond
	for ctx.Err() == nil {
		err := q.listenOnce(ctx)
		if ctx.Err() != nil {
			return
		}
		q.log.Warn("shared queue: listening for notifications failed; polling meanwhile", "err", err, "retry_in", pause)
		q.wakeAll()
		select {
		case <-time.After(pause):
		case <-ctx.Done():
		}
		pause = min(2*pause, 5*time.Second)
	}
}

func (q *Queue) listenOnce(ctx context.Context) error {
	conn, err := q.pool.Acquire(ctx)
	if err != nil {
		return err
	}
	defer conn.Release()
	for _, ch := range []string{queueChannel, cancelChannel, eventsChannel} {
		if _, err := conn.Exec(ctx, "LISTEN "+pgx.Identifier{ch}.Sanitize()); err != nil {
			return err
		}
	}
	defer func() {
		// The connection goes back to the pool: stop listening first.
		uctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
		defer cancel()
		if _, err := conn.Exec(uctx, "UNLISTEN *"); err != nil {
			conn.Conn().Close(uctx)
		}
	}()
	// Whatever happened before LISTEN is not missed.
	q.wakeAll()
	for {
		n, err := conn.Conn().WaitForNotification(ctx)
		if err != nil {
			return err
		}
		switch n.Channel {
		case queueChannel:
			select {
			case q.wake <- struct{}{}:
			default:
			}
		case cancelChannel:
			select {
			case q.cancels <- n.Payload:
			default:
				q.log.Warn("shared queue: cancel requests arrive faster than they are handled; the lease renewal delivers the rest", "build", n.Payload)
			}
		case eventsChannel:
			q.mu.Lock()
			ws := q.watchers[n.Payload]
			delete(q.watchers, n.Payload)
			q.mu.Unlock()
			for _, w := range ws {
				close(w)
			}
		}
	}
}

// wakeAll wakes the claimer and every events watcher.
func (q *Queue) wakeAll() {
	select {
	case q.wake <- struct{}{}:
	default:
	}
	q.mu.Lock()
	ws := q.watchers
	q.watchers = map[string][]chan struct{}{}
	q.mu.Unlock()
	for _, chs := range ws {
		for _, w := range chs {
			close(w)
		}
	}
}
