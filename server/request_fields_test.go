package server

import (
	"slices"
	"strings"
	"testing"
	"time"

	buildv1 "github.com/buildsvc/buildsvc/proto/build/v1"
)

// TestParseTagsLabelsRequestID: image_tags (image_tag first, each once),
// build_labels and request_id are checked and kept; each refusal names its
// field.
func TestParseTagsLabelsRequestID(t *testing.T) {
	base := func() *buildv1.CreateImageRequest {
		return &buildv1.CreateImageRequest{GitRepo: "https://git.example/a.git", ImageTag: "reg.example/a:v1"}
	}
	cfg := Config{BaseImage: "base.example/static:1", DefaultTimeout: time.Minute, MaxTimeout: time.Hour}
	tests := []struct {
		name      string
		mutate    func(*buildv1.CreateImageRequest)
		wantTags  []string
		wantField string
	}{
		{"one tag", func(*buildv1.CreateImageRequest) {}, []string{"reg.example/a:v1"}, ""},
		{"more tags", func(r *buildv1.CreateImageRequest) { r.ImageTags = []string{"reg.example/a:latest", "other.example/b"} },
			[]string{"reg.example/a:v1", "reg.example/a:latest", "other.example/b:latest"}, ""},
		{"image_tag repeated in image_tags", func(r *buildv1.CreateImageRequest) { r.ImageTags = []string{"reg.example/a:v1", "reg.example/a:v2"} },
			[]string{"reg.example/a:v1", "reg.example/a:v2"}, ""},
		{"only image_tags", func(r *buildv1.CreateImageRequest) { r.ImageTag = ""; r.ImageTags = []string{"reg.example/a:v2"} },
			[]string{"reg.example/a:v2"}, ""},
		{"no tag", func(r *buildv1.CreateImageRequest) { r.ImageTag = "" }, nil, "image_tag"},
		{"bad second tag", func(r *buildv1.CreateImageRequest) { r.ImageTags = []string{"reg.example/a:ok", "Bad Tag"} }, nil, "image_tags[1]"},
		{"digest in image_tags", func(r *buildv1.CreateImageRequest) {
			r.ImageTags = []string{"reg.example/a@sha256:" + strings.Repeat("a", 64)}
		}, nil, "image_tags[0]"},
		{"too many tags", func(r *buildv1.CreateImageRequest) {
			for i := range MaxImageTags + 1 {
				r.ImageTags = append(r.ImageTags, "reg.example/a:t"+strings.Repeat("x", i))
			}
		}, nil, "image_tags"},
		{"request id", func(r *buildv1.CreateImageRequest) { r.RequestId = "ci-42:retry.1_a-b" }, []string{"reg.example/a:v1"}, ""},
		{"request id with a space", func(r *buildv1.CreateImageRequest) { r.RequestId = "a b" }, nil, "request_id"},
		{"request id too long", func(r *buildv1.CreateImageRequest) { r.RequestId = strings.Repeat("a", 129) }, nil, "request_id"},
		{"labels", func(r *buildv1.CreateImageRequest) {
			r.BuildLabels = map[string]string{"team": "payments", "ci-run": "42"}
		}, []string{"reg.example/a:v1"}, ""},
		{"label key upper case", func(r *buildv1.CreateImageRequest) { r.BuildLabels = map[string]string{"Team": "x"} }, nil, "build_labels"},
		{"label key digit first", func(r *buildv1.CreateImageRequest) { r.BuildLabels = map[string]string{"1team": "x"} }, nil, "build_labels"},
		{"label value long", func(r *buildv1.CreateImageRequest) {
			r.BuildLabels = map[string]string{"team": strings.Repeat("x", MaxBuildLabelValueLen+1)}
		}, nil, "build_labels[team]"},
		{"label value control", func(r *buildv1.CreateImageRequest) { r.BuildLabels = map[string]string{"team": "a\nb"} }, nil, "build_labels[team]"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := base()
			tt.mutate(req)
			r, err := parseRequest(req, cfg)
			if tt.wantField != "" {
				fe, ok := err.(*FieldError)
				if !ok || fe.Field != tt.wantField {
					t.Fatalf("err = %v, want a FieldError on %s", err, tt.wantField)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(r.Tags, tt.wantTags) || r.Tag != r.Tags[0] {
				t.Errorf("tags = %q (tag %q), want %q", r.Tags, r.Tag, tt.wantTags)
			}
			p := r.proto()
			if !slices.Equal(p.GetImageTags(), r.Tags) || p.GetImageTag() != r.Tag || p.GetRequestId() != req.GetRequestId() ||
				len(p.GetBuildLabels()) != len(req.GetBuildLabels()) {
				t.Errorf("accepted request %v lost tags, request_id or labels of %v", p, req)
			}
		})
	}
}

// TestRequestFingerprint: a retry with other credentials is the same
// request; any other change is not.
func TestRequestFingerprint(t *testing.T) {
	req := &buildv1.CreateImageRequest{GitRepo: "https://git.example/a.git", ImageTag: "reg.example/a:v1", RequestId: "r1",
		GitCredentials: &buildv1.GitCredentials{Password: "one"}, SecretEnv: map[string]string{"GOEXPERIMENT": "s1"}}
	fp := requestFingerprint(req)
	retry := &buildv1.CreateImageRequest{GitRepo: "https://git.example/a.git", ImageTag: "reg.example/a:v1", RequestId: "r1",
		GitCredentials: &buildv1.GitCredentials{Password: "two"}, SecretEnv: map[string]string{"GOEXPERIMENT": "s2"},
		RegistryCredentials: []*buildv1.RegistryCredentials{{Registry: "reg.example", Password: "p"}}}
	if requestFingerprint(retry) != fp {
		t.Error("a retry with other credentials has another fingerprint")
	}
	if req.GetGitCredentials().GetPassword() != "one" || req.GetSecretEnv()["GOEXPERIMENT"] != "s1" {
		t.Error("requestFingerprint changed the request")
	}
	same := &buildv1.CreateImageRequest{GitRepo: req.GitRepo, ImageTag: req.ImageTag, RequestId: "r1", SecretEnv: map[string]string{"GOEXPERIMENT": "x"}}
	if requestFingerprint(same) != fp {
		t.Fatal("the unchanged request has another fingerprint")
	}
	for _, change := range []func(*buildv1.CreateImageRequest){
		func(r *buildv1.CreateImageRequest) { r.ImageTag = "reg.example/a:v2" },
		func(r *buildv1.CreateImageRequest) { r.GitCommit = "main" },
		func(r *buildv1.CreateImageRequest) { r.BuildLabels = map[string]string{"team": "x"} },
		func(r *buildv1.CreateImageRequest) { r.SecretEnv = map[string]string{"GOFIPS140": "s1"} },
	} {
		other := &buildv1.CreateImageRequest{GitRepo: req.GitRepo, ImageTag: req.ImageTag, RequestId: "r1", SecretEnv: map[string]string{"GOEXPERIMENT": "x"}}
		change(other)
		if requestFingerprint(other) == fp {
			t.Errorf("changed request %v has the same fingerprint", other)
		}
	}
}
