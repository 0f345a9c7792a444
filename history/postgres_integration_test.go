//go:build integration

package history_test

import (
	"context"
	"net/url"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/buildsvc/buildsvc/history"
	"github.com/buildsvc/buildsvc/history/storetest"
	"github.com/buildsvc/buildsvc/pgschema/pgtest"
	buildv1 "github.com/buildsvc/buildsvc/proto/build/v1"
)

// openPostgres opens a store on a fresh schema, closed when the test ends
// (before its schema is dropped).
func openPostgres(t testing.TB) *history.Postgres {
	t.Helper()
	s, err := history.OpenPostgres(context.Background(), pgtest.FreshSchema(t, "history_test"))
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
	dsn := pgtest.FreshSchema(t, "history_test")
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
	u, err := url.Parse(pgtest.DatabaseURL(t))
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
