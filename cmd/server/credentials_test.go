package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestLoadCredentials(t *testing.T) {
	dir := t.TempDir()
	file := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	tok := file("token", "tok-SECRET\n")
	good := config{
		GitCredentialsFile: file("creds.yaml", "hosts:\n  - host: git.internal.example\n    password_file: "+tok+"\n"),
		KnownHostsFile:     file("known", "git.internal.example ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl\n"),
		GoPrivate:          "git.internal.example",
	}
	c, err := loadCredentials(good)
	if err != nil {
		t.Fatal(err)
	}
	if g, ok := c.Git("", "git.internal.example"); !ok || g.Password != "tok-SECRET" || len(c.KnownHosts) == 0 || c.GoPrivate != "git.internal.example" {
		t.Errorf("loaded %+v", c)
	}
	for name, tt := range map[string]struct {
		cfg  config
		want string
	}{
		"missing credentials file": {config{GitCredentialsFile: filepath.Join(dir, "nope")}, "git-credentials"},
		"bad credentials file":     {config{GitCredentialsFile: file("bad.yaml", "hosts: [{host: a.example}]\n")}, "git-credentials"},
		"bad known hosts":          {config{KnownHostsFile: file("badknown", "not a key line\n")}, "ssh-known-hosts"},
		"CA bundle without a cert": {config{CABundleFile: tok}, "ca-bundle"},
	} {
		_, err := loadCredentials(tt.cfg)
		if err == nil || !strings.HasPrefix(err.Error(), tt.want+": ") {
			t.Errorf("%s: %v, want an error naming %s", name, err, tt.want)
		} else if strings.Contains(err.Error(), "SECRET") {
			t.Errorf("%s: the error quotes a secret: %v", name, err)
		}
	}
}
