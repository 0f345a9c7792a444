package auth_test

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/buildsvc/buildsvc/auth"
)

// chmod sets path's mode exactly, whatever the umask.
func chmod(t *testing.T, path string, mode uint32) {
	t.Helper()
	if err := os.Chmod(path, fs.FileMode(mode)); err != nil {
		t.Fatal(err)
	}
}

func TestReadTokenFile(t *testing.T) {
	tests := []struct {
		name    string
		data    string
		mode    uint32
		want    string
		wantErr string
	}{
		{name: "owner only", data: "tok123\n", mode: 0o600, want: "tok123"},
		{name: "read only", data: "  tok123 \r\n", mode: 0o400, want: "tok123"},
		{name: "group readable", data: "tok123", mode: 0o640, wantErr: "permissions 0640 are too open"},
		{name: "others readable", data: "tok123", mode: 0o604, wantErr: "permissions 0604 are too open"},
		{name: "group writable", data: "tok123", mode: 0o620, wantErr: "chmod 600"},
		{name: "others executable", data: "tok123", mode: 0o601, wantErr: "too open"},
		{name: "world readable", data: "tok123", mode: 0o644, wantErr: "group and others must have no access"},
		{name: "empty", data: "", mode: 0o600, wantErr: "empty"},
		{name: "only whitespace", data: " \n\t\n", mode: 0o600, wantErr: "empty"},
		{name: "two words", data: "tok123 tok456\n", mode: 0o600, wantErr: "more than one word"},
		{name: "two lines", data: "tok123\ntok456\n", mode: 0o600, wantErr: "more than one word"},
		{name: "too large", data: strings.Repeat("a", 64<<10+1), mode: 0o600, wantErr: "larger than"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := writeFile(t, t.TempDir(), "token", []byte(tt.data), 0o600)
			chmod(t, path, tt.mode)
			got, err := auth.ReadTokenFile(path)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("ReadTokenFile = %q, %v; want an error containing %q", got, err, tt.wantErr)
				}
				if !strings.Contains(err.Error(), path) {
					t.Errorf("error %q does not name the file", err)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("ReadTokenFile = %q, %v; want %q", got, err, tt.want)
			}
		})
	}

	t.Run("missing", func(t *testing.T) {
		if _, err := auth.ReadTokenFile(filepath.Join(t.TempDir(), "absent")); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("error %v, want fs.ErrNotExist", err)
		}
	})
	t.Run("directory", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "d")
		if err := os.Mkdir(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		if _, err := auth.ReadTokenFile(dir); err == nil || !strings.Contains(err.Error(), "not a regular file") {
			t.Errorf("error %v, want not a regular file", err)
		}
	})
}

func TestTokenCredentialsMetadata(t *testing.T) {
	for _, requireTLS := range []bool{true, false} {
		c := auth.TokenCredentials("tok123", requireTLS)
		md, err := c.GetRequestMetadata(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if len(md) != 1 || md["authorization"] != "Bearer tok123" {
			t.Errorf("metadata %v, want only authorization: Bearer tok123", md)
		}
		if c.RequireTransportSecurity() != requireTLS {
			t.Errorf("RequireTransportSecurity = %v, want %v", c.RequireTransportSecurity(), requireTLS)
		}
	}
	if _, err := auth.TokenCredentials("", true).GetRequestMetadata(context.Background()); err == nil {
		t.Error("empty token: no error")
	}
}
