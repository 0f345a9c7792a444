package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	buildv1 "github.com/buildsvc/buildsvc/proto/build/v1"
)

func TestBuildPrivateFlags(t *testing.T) {
	dir := t.TempDir()
	file := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	const token = "tok-SECRET-1234"
	tok := file("token", token+"\n")
	key := file("key", "KEY-SECRET")
	known := file("known", "host ssh-ed25519 AAAA\n")
	auth := file("config.json", `{"auths": {
		"127.0.0.1:15001": {"auth": "dGVhbTpyZWctU0VDUkVU"},
		"https://index.docker.io/v1/": {"identitytoken": "id-SECRET"},
		"registry.example": {"username": "u", "password": "p-SECRET"}}}`)
	env := file("env", "env-SECRET\n")

	f := &fakeServer{events: successEvents()}
	addr := f.start(t)
	r := runCLI(t, "build", "--server", addr, "--progress", "plain",
		"--repo", "https://git.example/app.git", "--tag", "registry.example/team/app:v1",
		"--git-token-file", tok, "--git-user", "bot", "--git-ssh-key-file", key, "--git-known-hosts-file", known,
		"--registry-auth-file", auth, "--goprivate", "git.example", "--secret-env-file", "API_TOKEN="+env)
	if r.code != exitOK {
		t.Fatalf("exit code %d\nstderr:\n%s", r.code, r.stderr)
	}
	want := &buildv1.CreateImageRequest{
		GitRepo: "https://git.example/app.git", ImageTag: "registry.example/team/app:v1",
		GitCredentials: &buildv1.GitCredentials{Username: "bot", Password: token, SshPrivateKey: []byte("KEY-SECRET"), SshKnownHosts: []byte("host ssh-ed25519 AAAA\n")},
		RegistryCredentials: []*buildv1.RegistryCredentials{
			{Registry: "127.0.0.1:15001", Username: "team", Password: "reg-SECRET"},
			{Registry: "docker.io", IdentityToken: "id-SECRET"},
			{Registry: "registry.example", Username: "u", Password: "p-SECRET"},
		},
		Goprivate: "git.example",
		SecretEnv: map[string]string{"API_TOKEN": "env-SECRET"},
	}
	if calls := f.calls(); len(calls) != 1 || !proto.Equal(calls[0], want) {
		t.Errorf("server got %v, want [%v]", calls, want)
	}
	if strings.Contains(r.stdout+r.stderr, "SECRET") {
		t.Errorf("the output shows a secret:\n%s%s", r.stdout, r.stderr)
	}

	for name, args := range map[string][]string{
		"empty token file":     {"--git-token-file", file("empty", "\n")},
		"user without token":   {"--git-user", "bot"},
		"missing file":         {"--git-ssh-key-file", filepath.Join(dir, "nope")},
		"not a docker config":  {"--registry-auth-file", tok},
		"only helpers":         {"--registry-auth-file", file("helpers.json", `{"credsStore": "desktop"}`)},
		"bad auth":             {"--registry-auth-file", file("bad.json", `{"auths": {"r.example": {"auth": "bm9jb2xvbg=="}}}`)},
		"secret env without =": {"--secret-env-file", "API_TOKEN"},
		"stdin twice":          {"--git-token-file", "-", "--git-ssh-key-file", "-"},
	} {
		t.Run(name, func(t *testing.T) {
			r := runCLI(t, append([]string{"build", "--server", addr, "--repo", "https://git.example/app.git", "--tag", "r.example/a:b"}, args...)...)
			if r.code != exitUsage {
				t.Errorf("exit code %d, want %d\nstderr:\n%s", r.code, exitUsage, r.stderr)
			}
			if strings.Contains(r.stderr, "SECRET") || strings.Contains(r.stderr, "nocolon") {
				t.Errorf("the error shows a secret: %s", r.stderr)
			}
		})
	}
}
