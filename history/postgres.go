package history

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"google.golang.org/protobuf/proto"

	"github.com/buildsvc/buildsvc/pgschema"
	buildv1 "github.com/buildsvc/buildsvc/proto/build/v1"
)

// migrations are the schema's versions, applied in order by OpenPostgres
// (golang-migrate: NNNN_name.up.sql, and .down.sql to undo one by hand).
//
//go:embed migrations/*.sql
var migrations embed.FS

// EventsChannel is the PostgreSQL notification channel AppendEvents
// notifies, with the build's id as payload, when the batch is committed.
const EventsChannel = "buildsvc_events"

// migrationsTable is where golang-migrate keeps the schema's version, in
// the history's schema.
const migrationsTable = "history_schema_migrations"

// Postgres is a Store in a PostgreSQL database: tables builds (one row per
// record, the BuildInfo protobuf with the columns List filters on), events
// (one row per event, by build and seq) and requests (the claims).
type Postgres struct {
	pool *pgxpool.Pool
}

var _ Store = (*Postgres)(nil)

// OpenPostgres connects to the database of dsn, a URL
// (postgres://user:password@host:5432/db?sslmode=disable) or keyword=value
// pairs as libpq takes them, and migrates its schema to this version's
// before it returns: the first server to open an empty database creates
// the tables, a later version adds to them (a PostgreSQL advisory lock
// keeps two servers from migrating at once). The tables are in the first
// schema of the connection's search_path (search_path=NAME in the DSN
// chooses another schema than public).
func OpenPostgres(ctx context.Context, dsn string) (*Postgres, error) {
	pool, err := pgxpool.New(ctx, dsn)
	if err != nil {
		return nil, fmt.Errorf("history: postgres: %w", err)
	}
	if err := pool.Ping(ctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("history: postgres: %w", err)
	}
	if err := pgschema.Migrate(ctx, pool, migrations, "migrations", migrationsTable); err != nil {
		pool.Close()
		return nil, fmt.Errorf("history: postgres: migrate the schema: %w", err)
	}
	return &Postgres{pool: pool}, nil
}

// Close implements Store.
func (s *Postgres) Close() error {
	s.pool.Close()
	return nil
}

// PutBuild implements Store. A record put again unchanged writes nothing.
func (s *Postgres) PutBuild(ctx context.Context, b *buildv1.BuildInfo) error {
	v, err := proto.Marshal(b)
	if err != nil {
		return fmt.Errorf("history: encode build %s: %w", b.GetBuildId(), err)
	}
	_, err = s.pool.Exec(ctx, `
		INSERT INTO builds (id, tenant, repo, state, record) VALUES ($1, $2, $3, $4, $5)
		ON CONFLICT (id) DO UPDATE
			SET tenant = EXCLUDED.tenant, repo = EXCLUDED.repo, state = EXCLUDED.state, record = EXCLUDED.record
			WHERE builds.record IS DISTINCT FROM EXCLUDED.record`,
		b.GetBuildId(), b.GetTenant(), b.GetRequest().GetGitRepo(), int32(b.GetState()), v)
	if err != nil {
		return fmt.Errorf("history: put build %s: %w", b.GetBuildId(), err)
	}
	return nil
}

// AppendEvents implements Store: one INSERT of the batch (one round trip,
// one transaction). The build's row is not touched: LastSeq is read from
// the events' primary key.
func (s *Postgres) AppendEvents(ctx context.Context, id string, events []*buildv1.BuildEvent) error {
	if len(events) == 0 {
		return nil
	}
	// One row per seq: a seq twice in a batch keeps its last event, as a
	// second Put of a bbolt key does (ON CONFLICT may not touch a row
	// twice). A batch's seqs usually just increase.
	var last map[uint64]int // seq -> index of its last event, if a seq repeats
	for i := 1; i < len(events); i++ {
		if events[i].GetSeq() <= events[i-1].GetSeq() {
			last = make(map[uint64]int, len(events))
			for i, e := range events {
				last[e.GetSeq()] = i
			}
			break
		}
	}
	seqs := make([]int64, 0, len(events))
	vals := make([][]byte, 0, len(events))
	for i, e := range events {
		if last != nil && last[e.GetSeq()] != i {
			continue
		}
		if e.GetSeq() > math.MaxInt64 {
			return fmt.Errorf("history: event seq %d of %s is out of range", e.GetSeq(), id)
		}
		v, err := proto.Marshal(e)
		if err != nil {
			return fmt.Errorf("history: encode event %d of %s: %w", e.GetSeq(), id, err)
		}
		seqs = append(seqs, int64(e.GetSeq()))
		vals = append(vals, v)
	}
	// The build's id on EventsChannel, at the commit: other servers
	// follow the build live (the shared queue's listener).
	_, err := s.pool.Exec(ctx, `
		WITH ins AS (
			INSERT INTO events (build_id, seq, event)
			SELECT $1, seq, event FROM unnest($2::bigint[], $3::bytea[]) AS batch (seq, event)
			ON CONFLICT (build_id, seq) DO UPDATE SET event = EXCLUDED.event
		)
		SELECT pg_notify($4, $1)`,
		id, seqs, vals, EventsChannel)
	if err != nil {
		return fmt.Errorf("history: append %d events to %s: %w", len(seqs), id, err)
	}
	return nil
}

// lastSeqColumn is the highest seq appended to build b's log: one probe of
// the events' primary key.
const lastSeqColumn = `COALESCE((SELECT max(e.seq) FROM events e WHERE e.build_id = b.id), 0)`

// decodeRecord decodes a stored record and sets its LastSeq as Store says.
func decodeRecord(id string, v []byte, appended int64) (*buildv1.BuildInfo, error) {
	b := &buildv1.BuildInfo{}
	if err := proto.Unmarshal(v, b); err != nil {
		return nil, fmt.Errorf("history: decode build %s: %w", id, err)
	}
	b.LastSeq = max(b.GetLastSeq(), uint64(appended))
	return b, nil
}

// GetBuild implements Store.
func (s *Postgres) GetBuild(ctx context.Context, id string) (*buildv1.BuildInfo, error) {
	var (
		v        []byte
		appended int64
	)
	err := s.pool.QueryRow(ctx, `SELECT b.record, `+lastSeqColumn+` FROM builds b WHERE b.id = $1`, id).Scan(&v, &appended)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, fmt.Errorf("build %q: %w", id, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("history: get build %s: %w", id, err)
	}
	return decodeRecord(id, v, appended)
}

// Events implements Store, in one query: no row when the build has no
// record, one row of NULLs when it has no events after after.
func (s *Postgres) Events(ctx context.Context, id string, after uint64, limit int) ([]*buildv1.BuildEvent, error) {
	rows, err := s.pool.Query(ctx, `
		SELECT e.event FROM builds b
		LEFT JOIN LATERAL (
			SELECT seq, event FROM events WHERE build_id = b.id AND seq > $2 ORDER BY seq LIMIT $3
		) e ON true
		WHERE b.id = $1
		ORDER BY e.seq`,
		id, int64(min(after, math.MaxInt64)), max(limit, 0))
	if err != nil {
		return nil, fmt.Errorf("history: events of %s: %w", id, err)
	}
	defer rows.Close()
	var out []*buildv1.BuildEvent
	found := false
	for rows.Next() {
		found = true
		var v []byte
		if err := rows.Scan(&v); err != nil {
			return nil, fmt.Errorf("history: events of %s: %w", id, err)
		}
		if v == nil {
			continue // the build, without events
		}
		e := &buildv1.BuildEvent{}
		if err := proto.Unmarshal(v, e); err != nil {
			return nil, fmt.Errorf("history: decode event of %s: %w", id, err)
		}
		out = append(out, e)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("history: events of %s: %w", id, err)
	}
	if !found {
		return nil, fmt.Errorf("build %q: %w", id, ErrNotFound)
	}
	return out, nil
}

// listPage is the most rows List reads per query when it filters with
// Match (without Match, Limit+1 rows are all it needs).
const listPage = 200

// List implements Store. Tenant, States, Repo, Before and After are
// conditions of the query, which the indexes serve; Match is applied here,
// reading on in pages until Limit builds match and one more is seen.
func (s *Postgres) List(ctx context.Context, f Filter) ([]*buildv1.BuildInfo, bool, error) {
	if f.Limit <= 0 {
		return nil, false, fmt.Errorf("history: list limit %d must be positive", f.Limit)
	}
	page := f.Limit + 1
	if f.Match != nil {
		page = max(page, listPage)
	}
	var out []*buildv1.BuildInfo
	for {
		q, args := listQuery(f, page)
		rows, err := s.pool.Query(ctx, q, args...)
		if err != nil {
			return nil, false, fmt.Errorf("history: list builds: %w", err)
		}
		n, lastID, more, err := scanList(rows, f, &out)
		if err != nil {
			return nil, false, err
		}
		if more || n < page {
			return out, more, nil
		}
		// A full page and room for more: read on past its last row.
		if f.Ascending {
			f.After = lastID
		} else {
			f.Before = lastID
		}
	}
}

// listQuery is the query of one page of List: the builds f's fields other
// than Match keep, in f's order, at most page of them.
func listQuery(f Filter, page int) (string, []any) {
	var (
		where []string
		args  []any
	)
	arg := func(v any) string {
		args = append(args, v)
		return "$" + strconv.Itoa(len(args))
	}
	if !f.AnyTenant {
		where = append(where, "b.tenant = "+arg(f.Tenant))
	}
	if len(f.States) > 0 {
		states := make([]int32, len(f.States))
		for i, st := range f.States {
			states[i] = int32(st)
		}
		where = append(where, "b.state = ANY("+arg(states)+"::integer[])")
	}
	if f.Repo != "" {
		where = append(where, "b.repo = "+arg(f.Repo))
	}
	if f.Before != "" {
		where = append(where, "b.id < "+arg(f.Before))
	}
	if f.After != "" {
		where = append(where, "b.id > "+arg(f.After))
	}
	q := "SELECT b.id, b.record, " + lastSeqColumn + " FROM builds b"
	if len(where) > 0 {
		q += " WHERE " + strings.Join(where, " AND ")
	}
	order := " DESC"
	if f.Ascending {
		order = " ASC"
	}
	q += " ORDER BY b.id" + order + " LIMIT " + arg(page)
	return q, args
}

// scanList adds the rows f.Match keeps to out, up to f.Limit, and says how
// many rows it read, the last one's id, and whether a row past the limit
// matched (more). It closes rows.
func scanList(rows pgx.Rows, f Filter, out *[]*buildv1.BuildInfo) (n int, lastID string, more bool, err error) {
	defer rows.Close()
	for rows.Next() {
		var (
			v        []byte
			appended int64
		)
		if err := rows.Scan(&lastID, &v, &appended); err != nil {
			return 0, "", false, fmt.Errorf("history: list builds: %w", err)
		}
		n++
		b, err := decodeRecord(lastID, v, appended)
		if err != nil {
			return 0, "", false, err
		}
		if f.Match != nil && !f.Match(b) {
			continue
		}
		if len(*out) == f.Limit {
			return n, lastID, true, nil
		}
		*out = append(*out, b)
	}
	if err := rows.Err(); err != nil {
		return 0, "", false, fmt.Errorf("history: list builds: %w", err)
	}
	return n, lastID, false, nil
}

// ClaimRequest implements Store. The insert claims the key, or finds it
// claimed; then the claim is read in a statement of its own, which sees a
// claim committed after the insert began (one statement would not). If
// that claim was deleted in between, it tries again.
func (s *Postgres) ClaimRequest(ctx context.Context, key RequestKey, claim RequestClaim) (RequestClaim, bool, error) {
	for range 10 {
		tag, err := s.pool.Exec(ctx, `
			INSERT INTO requests (tenant, request_id, build_id, fingerprint) VALUES ($1, $2, $3, $4)
			ON CONFLICT (tenant, request_id) DO NOTHING`,
			key.Tenant, key.RequestID, claim.BuildID, claim.Fingerprint)
		if err != nil {
			return RequestClaim{}, false, fmt.Errorf("history: claim request: %w", err)
		}
		if tag.RowsAffected() == 1 {
			return claim, true, nil
		}
		existing, err := s.LookupRequest(ctx, key)
		if errors.Is(err, ErrNotFound) {
			continue // deleted since the insert: claim it again
		}
		if err != nil {
			return RequestClaim{}, false, fmt.Errorf("history: claim request: %w", err)
		}
		return existing, false, nil
	}
	return RequestClaim{}, false, fmt.Errorf("history: claim request %q: claimed and deleted too often while claiming", key.RequestID)
}

// LookupRequest implements Store.
func (s *Postgres) LookupRequest(ctx context.Context, key RequestKey) (RequestClaim, error) {
	var c RequestClaim
	err := s.pool.QueryRow(ctx, `SELECT build_id, fingerprint FROM requests WHERE tenant = $1 AND request_id = $2`,
		key.Tenant, key.RequestID).Scan(&c.BuildID, &c.Fingerprint)
	if errors.Is(err, pgx.ErrNoRows) {
		return RequestClaim{}, fmt.Errorf("request %q: %w", key.RequestID, ErrNotFound)
	}
	if err != nil {
		return RequestClaim{}, fmt.Errorf("history: look up request: %w", err)
	}
	return c, nil
}

// Delete implements Store: the records, events and claims of ids in one
// statement (so one transaction).
func (s *Postgres) Delete(ctx context.Context, ids ...string) error {
	if len(ids) == 0 {
		return nil
	}
	ids = slices.Compact(slices.Sorted(slices.Values(ids)))
	_, err := s.pool.Exec(ctx, `
		WITH gone_builds AS (DELETE FROM builds WHERE id = ANY($1::text[])),
		     gone_events AS (DELETE FROM events WHERE build_id = ANY($1::text[]))
		DELETE FROM requests WHERE build_id = ANY($1::text[])`, ids)
	if err != nil {
		return fmt.Errorf("history: delete %d builds: %w", len(ids), err)
	}
	return nil
}
