// Package pgschema applies a package's PostgreSQL schema migrations
// (golang-migrate's NNNN_name.up.sql files, embedded), each package's
// versions in a table of its own, so that packages sharing a database
// (the history, the shared build queue) migrate independently.
package pgschema

import (
	"context"
	"errors"
	"fmt"
	"io/fs"

	"github.com/golang-migrate/migrate/v4"
	pgxmigrate "github.com/golang-migrate/migrate/v4/database/pgx/v5"
	"github.com/golang-migrate/migrate/v4/source/iofs"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"
)

// Migrate applies the migrations in dir of fsys that the database lacks,
// keeping the version in table. golang-migrate takes an advisory lock, so
// two servers starting at once do not migrate twice. It stops after the
// running migration when ctx ends.
func Migrate(ctx context.Context, pool *pgxpool.Pool, fsys fs.FS, dir, table string) error {
	src, err := iofs.New(fsys, dir)
	if err != nil {
		return err
	}
	// golang-migrate's pgx driver takes a database/sql handle; this one
	// borrows the pool's connections (and m.Close does not close the pool).
	db := stdlib.OpenDBFromPool(pool)
	drv, err := pgxmigrate.WithInstance(db, &pgxmigrate.Config{MigrationsTable: table})
	if err != nil {
		db.Close()
		return err
	}
	m, err := migrate.NewWithInstance("iofs", src, "pgx5", drv)
	if err != nil {
		drv.Close()
		return err
	}
	defer m.Close()
	done := make(chan error, 1)
	go func() { done <- m.Up() }()
	select {
	case err = <-done:
	case <-ctx.Done():
		m.GracefulStop <- true // after the migration that runs, if one does
		err = errors.Join(ctx.Err(), <-done)
	}
	if errors.Is(err, migrate.ErrNoChange) {
		return nil
	}
	var dirty migrate.ErrDirty
	if errors.As(err, &dirty) {
		return fmt.Errorf("%w: migration %d failed half-way; repair the schema by hand, then set version and dirty in %s", err, dirty.Version, table)
	}
	return err
}
