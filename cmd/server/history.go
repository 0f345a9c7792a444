package main

import (
	"context"
	"fmt"
	"path/filepath"
	"regexp"

	"github.com/buildsvc/buildsvc/history"
)

// openHistory opens the build history: the PostgreSQL database of
// database-url when it is set (migrating its schema), else the bbolt file
// history.db under data-dir.
func openHistory(ctx context.Context, cfg config) (history.Store, error) {
	if cfg.DatabaseURL == "" {
		return history.Open(filepath.Join(cfg.DataDir, "history.db"))
	}
	s, err := history.OpenPostgres(ctx, cfg.DatabaseURL)
	if err != nil {
		return nil, fmt.Errorf("database-url %s: %w", maskDSN(cfg.DatabaseURL), err)
	}
	return s, nil
}

var (
	// dsnURLPassword is the password of a postgres:// URL's user info.
	dsnURLPassword = regexp.MustCompile(`(://[^/?#@:]*:)[^/?#@]*@`)
	// dsnPassword is a password=... of a URL's query or of keyword=value
	// pairs, quoted ('...', with \' inside) or not.
	dsnPassword = regexp.MustCompile(`(?i)((?:^|[\s?&])password\s*=\s*)('(?:[^'\\]|\\.)*'|[^\s&]*)`)
)

// maskDSN hides the password of a PostgreSQL DSN, a URL or keyword=value
// pairs, for --print-config and errors; the user, hosts and database stay.
func maskDSN(v string) string {
	v = dsnURLPassword.ReplaceAllString(v, "${1}"+masked+"@")
	return dsnPassword.ReplaceAllString(v, "${1}"+masked)
}
