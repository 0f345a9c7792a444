package server

import (
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	buildv1 "github.com/buildsvc/buildsvc/proto/build/v1"
)

func TestParseRequest(t *testing.T) {
	valid := func() *buildv1.CreateImageRequest {
		return &buildv1.CreateImageRequest{
			GitRepo:   "https://github.com/micro/micro.git",
			GitCommit: "master",
			ImageTag:  "registry.example/micro/micro:latest",
		}
	}
	tests := []struct {
		name      string
		mutate    func(r *buildv1.CreateImageRequest)
		insecure  bool
		wantField string // "" means valid
	}{
		{name: "architecture example", mutate: func(*buildv1.CreateImageRequest) {}},
		{name: "ssh url", mutate: func(r *buildv1.CreateImageRequest) { r.GitRepo = "ssh://git@github.com/a/b.git" }},
		{name: "scp-like", mutate: func(r *buildv1.CreateImageRequest) { r.GitRepo = "git@github.com:a/b.git" }},
		{name: "ssh url with password", mutate: func(r *buildv1.CreateImageRequest) { r.GitRepo = "ssh://git:pw@github.com/a/b.git" }, wantField: "git_repo"},
		{name: "git protocol", mutate: func(r *buildv1.CreateImageRequest) { r.GitRepo = "git://127.0.0.1:9418/sample.git" }},
		{name: "empty repo", mutate: func(r *buildv1.CreateImageRequest) { r.GitRepo = "" }, wantField: "git_repo"},
		{name: "malformed repo", mutate: func(r *buildv1.CreateImageRequest) { r.GitRepo = "ht!tp://::nope" }, wantField: "git_repo"},
		{name: "relative path repo", mutate: func(r *buildv1.CreateImageRequest) { r.GitRepo = "some/dir" }, wantField: "git_repo"},
		{name: "file url refused", mutate: func(r *buildv1.CreateImageRequest) { r.GitRepo = "file:///srv/repo.git" }, wantField: "git_repo"},
		{name: "file url allowed", mutate: func(r *buildv1.CreateImageRequest) { r.GitRepo = "file:///srv/repo.git" }, insecure: true},
		{name: "http refused", mutate: func(r *buildv1.CreateImageRequest) { r.GitRepo = "http://example.com/a.git" }, wantField: "git_repo"},
		{name: "http allowed", mutate: func(r *buildv1.CreateImageRequest) { r.GitRepo = "http://example.com/a.git" }, insecure: true},
		{name: "ftp scheme", mutate: func(r *buildv1.CreateImageRequest) { r.GitRepo = "ftp://example.com/a.git" }, wantField: "git_repo"},
		{name: "password in url", mutate: func(r *buildv1.CreateImageRequest) { r.GitRepo = "https://u:hunter2@example.com/a.git" }, wantField: "git_repo"},
		{name: "token in url", mutate: func(r *buildv1.CreateImageRequest) { r.GitRepo = "https://ghp_token@example.com/a.git" }, wantField: "git_repo"},
		{name: "option injection", mutate: func(r *buildv1.CreateImageRequest) { r.GitRepo = "--upload-pack=touch /x" }, wantField: "git_repo"},
		{name: "no path", mutate: func(r *buildv1.CreateImageRequest) { r.GitRepo = "https://example.com/" }, wantField: "git_repo"},
		{name: "empty commit is HEAD", mutate: func(r *buildv1.CreateImageRequest) { r.GitCommit = "" }},
		{name: "sha commit", mutate: func(r *buildv1.CreateImageRequest) { r.GitCommit = strings.Repeat("a", 40) }},
		{name: "range commit", mutate: func(r *buildv1.CreateImageRequest) { r.GitCommit = "main..dev" }, wantField: "git_commit"},
		{name: "option commit", mutate: func(r *buildv1.CreateImageRequest) { r.GitCommit = "--all" }, wantField: "git_commit"},
		{name: "space commit", mutate: func(r *buildv1.CreateImageRequest) { r.GitCommit = "a b" }, wantField: "git_commit"},
		{name: "empty tag", mutate: func(r *buildv1.CreateImageRequest) { r.ImageTag = "" }, wantField: "image_tag"},
		{name: "malformed tag", mutate: func(r *buildv1.CreateImageRequest) { r.ImageTag = "Not A/Valid:::tag" }, wantField: "image_tag"},
		{name: "digest tag", mutate: func(r *buildv1.CreateImageRequest) {
			r.ImageTag = "registry.example/a@sha256:" + strings.Repeat("a", 64)
		}, wantField: "image_tag"},
		{name: "short tag", mutate: func(r *buildv1.CreateImageRequest) { r.ImageTag = "app" }},
		{name: "package under cmd", mutate: func(r *buildv1.CreateImageRequest) { r.Package = "cmd/app" }},
		{name: "package escapes", mutate: func(r *buildv1.CreateImageRequest) { r.Package = "../x" }, wantField: "package"},
		{name: "package pattern", mutate: func(r *buildv1.CreateImageRequest) { r.Package = "./..." }, wantField: "package"},
		{name: "absolute dir", mutate: func(r *buildv1.CreateImageRequest) { r.Dir = "/etc" }, wantField: "dir"},
		{name: "build flag", mutate: func(r *buildv1.CreateImageRequest) { r.BuildFlags = []string{"-tags=netgo", "-v"} }},
		{name: "output flag", mutate: func(r *buildv1.CreateImageRequest) { r.BuildFlags = []string{"-o=/x"} }, wantField: "build_flags[0]"},
		{name: "ldflags flag", mutate: func(r *buildv1.CreateImageRequest) { r.BuildFlags = []string{"-v", "--ldflags=-s"} }, wantField: "build_flags[1]"},
		{name: "not a flag", mutate: func(r *buildv1.CreateImageRequest) { r.BuildFlags = []string{"netgo"} }, wantField: "build_flags[0]"},
		{name: "ldflags newline", mutate: func(r *buildv1.CreateImageRequest) { r.Ldflags = "-s\n-w" }, wantField: "ldflags"},
		{name: "env ok", mutate: func(r *buildv1.CreateImageRequest) { r.Env = map[string]string{"CGO_ENABLED": "0", "GOAMD64": "v3"} }},
		{name: "cgo", mutate: func(r *buildv1.CreateImageRequest) { r.Env = map[string]string{"CGO_ENABLED": "1"} }, wantField: "env[CGO_ENABLED]"},
		{name: "env GOFLAGS", mutate: func(r *buildv1.CreateImageRequest) { r.Env = map[string]string{"GOFLAGS": "-toolexec=x"} }, wantField: "env[GOFLAGS]"},
		{name: "env LD_PRELOAD", mutate: func(r *buildv1.CreateImageRequest) { r.Env = map[string]string{"LD_PRELOAD": "/x.so"} }, wantField: "env[LD_PRELOAD]"},
		{name: "toolexec", mutate: func(r *buildv1.CreateImageRequest) { r.BuildFlags = []string{"-v", "-toolexec=/bin/sh"} }, wantField: "build_flags[1]"},
		{name: "ldflags ok", mutate: func(r *buildv1.CreateImageRequest) { r.Ldflags = "-s -w -X main.version=1.2.3" }},
		{name: "ldflags extld", mutate: func(r *buildv1.CreateImageRequest) { r.Ldflags = "-s -extld=/bin/sh" }, wantField: "ldflags"},
		{name: "env reserved", mutate: func(r *buildv1.CreateImageRequest) { r.Env = map[string]string{"GOOS": "windows"} }, wantField: "env[GOOS]"},
		{name: "env bad name", mutate: func(r *buildv1.CreateImageRequest) { r.Env = map[string]string{"1X": "y"} }, wantField: "env"},
		{name: "base image bad", mutate: func(r *buildv1.CreateImageRequest) { r.BaseImage = "::" }, wantField: "base_image"},
		{name: "timeout", mutate: func(r *buildv1.CreateImageRequest) { r.Timeout = durationpb.New(time.Second) }},
		{name: "negative timeout", mutate: func(r *buildv1.CreateImageRequest) { r.Timeout = durationpb.New(-time.Second) }, wantField: "timeout"},
		{name: "zero timeout", mutate: func(r *buildv1.CreateImageRequest) { r.Timeout = durationpb.New(0) }, wantField: "timeout"},
		{name: "label reserved", mutate: func(r *buildv1.CreateImageRequest) {
			r.Labels = map[string]string{"org.opencontainers.image.revision": "x"}
		}, wantField: "labels[org.opencontainers.image.revision]"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := valid()
			tt.mutate(req)
			_, err := parseRequest(req, Config{AllowInsecureGit: tt.insecure, BaseImage: "base.example/static:1",
				DefaultTimeout: time.Minute, MaxTimeout: time.Hour})
			if tt.wantField == "" {
				if err != nil {
					t.Fatalf("want valid, got %v", err)
				}
				return
			}
			fe, ok := err.(*FieldError)
			if !ok {
				t.Fatalf("want *FieldError for %s, got %T %v", tt.wantField, err, err)
			}
			if fe.Field != tt.wantField {
				t.Errorf("field = %q, want %q (%v)", fe.Field, tt.wantField, fe)
			}
			if !strings.HasPrefix(fe.Error(), tt.wantField+": ") {
				t.Errorf("error %q does not start with the field name", fe.Error())
			}
		})
	}
}

func TestParseRequestDefaults(t *testing.T) {
	r, err := parseRequest(&buildv1.CreateImageRequest{
		GitRepo:  "git://127.0.0.1:9418/sample.git",
		ImageTag: "127.0.0.1:5000/demo/sample",
	}, Config{BaseImage: "base.example/static:1", DefaultTimeout: time.Minute, MaxTimeout: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	want := request{Repo: "git://127.0.0.1:9418/sample.git", Ref: "HEAD", Tag: "127.0.0.1:5000/demo/sample:latest",
		Dir: ".", Package: ".", Binary: "sample", BaseImage: "base.example/static:1", Timeout: time.Minute}
	if r.Repo != want.Repo || r.Ref != want.Ref || r.Tag != want.Tag || r.Dir != want.Dir ||
		r.Package != want.Package || r.Binary != want.Binary || r.BaseImage != want.BaseImage || r.Timeout != want.Timeout {
		t.Errorf("got %+v, want %+v", *r, want)
	}
}

func TestBinaryName(t *testing.T) {
	tests := []struct{ repo, dir, pkg, want string }{
		{"https://github.com/micro/micro.git", ".", ".", "micro"},
		{"git@github.com:org/svc.git", ".", "./cmd/api", "api"},
		{"https://example.com/mono", "services/billing", ".", "billing"},
		{"https://example.com/x/y/", ".", ".", "y"},
		{"https://example.com/we!rd name.git", ".", ".", "we-rd-name"},
	}
	for _, tt := range tests {
		if got := binaryName(tt.repo, tt.dir, tt.pkg); got != tt.want {
			t.Errorf("binaryName(%q, %q, %q) = %q, want %q", tt.repo, tt.dir, tt.pkg, got, tt.want)
		}
	}
}

func TestTimeoutIsCapped(t *testing.T) {
	r, err := parseRequest(&buildv1.CreateImageRequest{
		GitRepo: "https://example.com/a.git", ImageTag: "example.com/a:b", Timeout: durationpb.New(5 * time.Hour),
	}, Config{DefaultTimeout: time.Minute, MaxTimeout: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if r.Timeout != time.Hour {
		t.Errorf("timeout = %v, want the server's maximum", r.Timeout)
	}
}
