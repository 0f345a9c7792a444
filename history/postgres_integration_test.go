//go:build integration

package history_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net/url"
	"os"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/buildsvc/buildsvc/history"
	"github.com/buildsvc/buildsvc/history/storetest"
	buildv1 "github.com/buildsvc/buildsvc/proto/build/v1"
)

// databaseURL is the PostgreSQL the integration tests use: DATABASE_URL,
// as scripts/up.sh writes it into .stack/env (scripts/postgres.sh starts
// the server). A run with the integration tag fails without it.
func databaseURL(t testing.TB) string {
	t.Helper()
	dsn := os.Getenv("DATABASE_URL")
	if dsn == "" {
		t.Fatal("DATABASE_URL is not set: start PostgreSQL with scripts/up.sh (or source scripts/lib.sh and scripts/postgres.sh, then postgres_up) and export DATABASE_URL from .stack/env")
	}
	return dsn
}

// freshSchema creates a schema of a random name for one test, dropped
// when the test ends, and returns the DSN of dsn with it as search_path:
// a store opened on it has tables of its own.
func freshSchema(t testing.TB, dsn string) string {
	t.Helper()
	ctx := context.Background()
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatal(err)
	}
	schema := "history_test_" + hex.EncodeToString(b[:])
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatalf("connect to DATABASE_URL: %v", err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "CREATE SCHEMA "+schema); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		conn, err := pgx.Connect(ctx, dsn)
		if err != nil {
			t.Errorf("drop schema %s: %v", schema, err)
			return
		}
		defer conn.Close(ctx)
		if _, err := conn.Exec(ctx, "DROP SCHEMA "+schema+" CASCADE"); err != nil {
			t.Errorf("drop schema %s: %v", schema, err)
		}
	})
	return withSearchPath(t, dsn, schema)
}

// withSearchPath adds search_path=schema to a DSN, a URL or keyword=value
// pairs.
func withSearchPath(t testing.TB, dsn, schema string) string {
	t.Helper()
	if !strings.Contains(dsn, "://") {
		return dsn + " search_path=" + schema
	}
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatalf("DATABASE_URL: %v", err)
	}
	q := u.Query()
	q.Set("search_path", schema)
	u.RawQuery = q.Encode()
	return u.String()
}

// openPostgres opens a store on a fresh schema, closed when the test ends
// (before its schema is dropped).
func openPostgres(t testing.TB) *history.Postgres {
	t.Helper()
	s, err := history.OpenPostgres(context.Background(), freshSchema(t, databaseURL(t)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// The PostgreSQL store passes the Store contract, each test in a schema of
// its own.
func TestPostgresContract(t *testing.T) {
	storetest.Run(t, func(t *testing.T) history.Store { return openPostgres(t) })
}

// Opening migrates an empty schema once; opening it again (a restart, a
// second server) finds it migrated and keeps what it holds.
func TestPostgresMigratesOnce(t *testing.T) {
	ctx := context.Background()
	dsn := freshSchema(t, databaseURL(t))
	s, err := history.OpenPostgres(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.PutBuild(ctx, testBuild("b1")); err != nil {
		t.Fatal(err)
	}
	s.Close()
	for range 2 {
		s, err := history.OpenPostgres(ctx, dsn)
		if err != nil {
			t.Fatalf("open a migrated schema: %v", err)
		}
		if _, err := s.GetBuild(ctx, "b1"); err != nil {
			t.Errorf("after reopening: %v", err)
		}
		s.Close()
	}
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var version int
	var dirty bool
	if err := conn.QueryRow(ctx, "SELECT version, dirty FROM history_schema_migrations").Scan(&version, &dirty); err != nil {
		t.Fatal(err)
	}
	if version != 1 || dirty {
		t.Errorf("schema version %d dirty %v, want 1, clean", version, dirty)
	}
}

// A DSN that cannot connect fails OpenPostgres, without the password in
// the error.
func TestPostgresOpenFails(t *testing.T) {
	u, err := url.Parse(databaseURL(t))
	if err != nil {
		t.Fatal(err)
	}
	u.User = url.UserPassword("nobody", "s3cret-pw")
	u.Path = "/no_such_database"
	_, err = history.OpenPostgres(context.Background(), u.String())
	if err == nil {
		t.Fatal("OpenPostgres of a database that does not exist succeeded")
	}
	if strings.Contains(err.Error(), "s3cret-pw") {
		t.Errorf("the error shows the password: %v", err)
	}
}

// testBuild is a record of a build of repository "r".
func testBuild(id string) *buildv1.BuildInfo {
	return &buildv1.BuildInfo{BuildId: id, State: buildv1.BuildState_BUILD_STATE_BUILDING,
		Request: &buildv1.CreateImageRequest{GitRepo: "r"}}
}
