package server

import (
	"strings"
	"testing"
)

// TestParseGitRemote: URLs are read as BuildKit's gitutil reads them, with
// the host the credential rules and the tenant's git_hosts see; URLs that
// BuildKit and go-git would read differently, or that carry a ref, are
// refused.
func TestParseGitRemote(t *testing.T) {
	tests := []struct {
		in      string
		scheme  string
		host    string
		user    string
		path    string
		wantErr string
	}{
		{in: "https://git.example/team/app.git", scheme: "https", host: "git.example", path: "/team/app.git"},
		{in: "https://git.example:8443/team/app.git", scheme: "https", host: "git.example:8443", path: "/team/app.git"},
		{in: "HTTPS://Git.Example/a.git", scheme: "https", host: "Git.Example", path: "/a.git"},
		{in: "git://127.0.0.1:9418/sample.git", scheme: "git", host: "127.0.0.1:9418", path: "/sample.git"},
		{in: "ssh://git@git.example:2222/team/app.git", scheme: "ssh", host: "git.example:2222", user: "git", path: "/team/app.git"},
		{in: "git@git.example:team/app.git", scheme: "ssh", host: "git.example", user: "git", path: "team/app.git"},
		{in: "https://[::1]:8443/a.git", scheme: "https", host: "[::1]:8443", path: "/a.git"},
		{in: "https://[::1]/a.git", scheme: "https", host: "::1", path: "/a.git"},
		{in: "file:///srv/git/a.git", scheme: "file", path: "/srv/git/a.git"},
		{in: "https://user:pw@git.example/a.git", scheme: "https", host: "git.example", user: "user", path: "/a.git"},
		{in: "git.example/team/app.git", wantErr: "is not a git URL"},
		{in: "ftp://git.example/a.git", wantErr: "scheme that is not supported"},
		{in: "https://git.example/a.git#main", wantErr: "#fragment"},
		{in: "https://git.example/a.git?ref=main", wantErr: "query"},
		{in: "file://host/srv/a.git", wantErr: "file://"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			r, err := parseGitRemote(tt.in)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				if strings.Contains(err.Error(), "git.example") {
					t.Errorf("the error quotes the URL: %v", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if r.Scheme != tt.scheme || r.host() != tt.host || r.User != tt.user || r.Path != tt.path {
				t.Errorf("= %+v (host %q), want %s %s %s %s", r, r.host(), tt.scheme, tt.host, tt.user, tt.path)
			}
		})
	}
	if r, err := parseGitRemote("https://user:pw@git.example/a.git"); err != nil || !r.HasPassword {
		t.Errorf("a password in the URL is not seen: %+v %v", r, err)
	}
}
