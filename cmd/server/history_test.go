package main

import (
	"context"
	"path/filepath"
	"strings"
	"testing"

	"github.com/buildsvc/buildsvc/history"
)

func TestMaskDSN(t *testing.T) {
	tests := []struct{ in, want string }{
		{"", ""},
		{"postgres://postgres@127.0.0.1:5432/buildsvc?sslmode=disable", "postgres://postgres@127.0.0.1:5432/buildsvc?sslmode=disable"},
		{"postgres://svc:s3cret@db.example:5432/buildsvc", "postgres://svc:xxxxx@db.example:5432/buildsvc"},
		{"postgresql://svc:p%40ss@h1:5432,h2:5432/buildsvc?target_session_attrs=read-write", "postgresql://svc:xxxxx@h1:5432,h2:5432/buildsvc?target_session_attrs=read-write"},
		{"postgres://svc@db/buildsvc?password=s3cret&sslmode=require", "postgres://svc@db/buildsvc?password=xxxxx&sslmode=require"},
		{"host=db user=svc password=s3cret dbname=buildsvc", "host=db user=svc password=xxxxx dbname=buildsvc"},
		{"host=db password = 's3 \\'cret' dbname=buildsvc", "host=db password = xxxxx dbname=buildsvc"},
		{"password=s3cret host=db", "password=xxxxx host=db"},
		{"host=db user=svc dbname=buildsvc", "host=db user=svc dbname=buildsvc"},
	}
	for _, tt := range tests {
		if got := maskDSN(tt.in); got != tt.want {
			t.Errorf("maskDSN(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

// database-url selects PostgreSQL (DATABASE_URL does not: the stack's
// .stack/env exports it for the tests), and --print-config masks its
// password; without it the history is history.db in data-dir.
func TestDatabaseURL(t *testing.T) {
	clearEnv(t)
	const dsn = "postgres://svc:s3cret@127.0.0.1:1/buildsvc?connect_timeout=2"
	tests := []struct {
		name string
		env  map[string]string
		args []string
		want string
	}{
		{"default", nil, nil, ""},
		{"flag", nil, []string{"--database-url", dsn}, dsn},
		{"DATABASE_URL is not read", map[string]string{"DATABASE_URL": dsn}, nil, ""},
		{"BUILDSVC_DATABASE_URL", map[string]string{"DATABASE_URL": "postgres://other/db", "BUILDSVC_DATABASE_URL": dsn}, nil, dsn},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for k, v := range tt.env {
				t.Setenv(k, v)
			}
			cfg, _, err := runApp(t, tt.args...)
			if err != nil {
				t.Fatal(err)
			}
			if cfg.DatabaseURL != tt.want {
				t.Errorf("DatabaseURL = %q, want %q", cfg.DatabaseURL, tt.want)
			}
			_, out, err := runApp(t, append(tt.args, "--print-config")...)
			if err != nil {
				t.Fatal(err)
			}
			if strings.Contains(out, "s3cret") {
				t.Errorf("--print-config shows the password:\n%s", out)
			}
		})
	}

	ctx := context.Background()
	s, err := openHistory(ctx, config{DataDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := s.(*history.Bolt); !ok {
		t.Errorf("without database-url the history is a %T, want *history.Bolt", s)
	}
	s.Close()
	// Nothing listens on port 1: the error names the option, not the password.
	_, err = openHistory(ctx, config{DataDir: filepath.Join(t.TempDir(), "unused"), DatabaseURL: dsn})
	if err == nil || !strings.Contains(err.Error(), "database-url postgres://svc:xxxxx@127.0.0.1:1/") || strings.Contains(err.Error(), "s3cret") {
		t.Errorf("openHistory of a database nobody serves: %v", err)
	}
}
