package server

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	buildv1 "github.com/buildsvc/buildsvc/proto/build/v1"
)

// Each limit: a field at its limit is accepted, one byte or entry more is
// InvalidArgument naming the field, with a short error that quotes none of it.
func TestRequestLimits(t *testing.T) {
	cfg := Config{BaseImage: "base.example/static:1", DefaultTimeout: time.Minute, MaxTimeout: time.Hour}
	valid := func() *buildv1.CreateImageRequest {
		return &buildv1.CreateImageRequest{GitRepo: "https://git.example/team/app.git", GitCommit: "main", ImageTag: "registry.example/team/app:v1"}
	}
	pad := func(prefix string, n int) string { return prefix + strings.Repeat("a", n-len(prefix)) }
	entries := func(n int, key func(i int) string, value string) map[string]string {
		m := map[string]string{}
		for i := range n {
			m[key(i)] = value
		}
		return m
	}
	envKey := func(i int) string { return fmt.Sprintf("GOAMD64_%d", i) }
	labelKey := func(i int) string { return fmt.Sprintf("l%d", i) }
	tests := []struct {
		field string
		at    func(*buildv1.CreateImageRequest) // exactly at the limit
		over  func(*buildv1.CreateImageRequest) // one over
	}{
		{"git_repo", func(r *buildv1.CreateImageRequest) { r.GitRepo = pad("https://git.example/", MaxRepoLen) },
			func(r *buildv1.CreateImageRequest) { r.GitRepo = pad("https://git.example/", MaxRepoLen+1) }},
		{"git_commit", func(r *buildv1.CreateImageRequest) { r.GitCommit = pad("b", MaxRefLen) },
			func(r *buildv1.CreateImageRequest) { r.GitCommit = pad("b", MaxRefLen+1) }},
		{"image_tag", func(r *buildv1.CreateImageRequest) { r.ImageTag = pad("registry.example/", MaxImageRefLen-3) + ":v1" },
			func(r *buildv1.CreateImageRequest) { r.ImageTag = pad("registry.example/", MaxImageRefLen-2) + ":v1" }},
		{"base_image", func(r *buildv1.CreateImageRequest) { r.BaseImage = pad("registry.example/", MaxImageRefLen) },
			func(r *buildv1.CreateImageRequest) { r.BaseImage = pad("registry.example/", MaxImageRefLen+1) }},
		{"dir", func(r *buildv1.CreateImageRequest) { r.Dir = pad("d", MaxPathLen) },
			func(r *buildv1.CreateImageRequest) { r.Dir = pad("d", MaxPathLen+1) }},
		{"package", func(r *buildv1.CreateImageRequest) { r.Package = pad("./p", MaxPathLen) },
			func(r *buildv1.CreateImageRequest) { r.Package = pad("./p", MaxPathLen+1) }},
		{"ldflags", func(r *buildv1.CreateImageRequest) { r.Ldflags = "-X " + pad("main.v=", MaxLDFlagsLen-3) },
			func(r *buildv1.CreateImageRequest) { r.Ldflags = "-X " + pad("main.v=", MaxLDFlagsLen-2) }},
		{"build_flags", func(r *buildv1.CreateImageRequest) {
			r.BuildFlags = make([]string, MaxBuildFlags)
			fill(r.BuildFlags, "-v")
		},
			func(r *buildv1.CreateImageRequest) {
				r.BuildFlags = make([]string, MaxBuildFlags+1)
				fill(r.BuildFlags, "-v")
			}},
		{"build_flags[0]", func(r *buildv1.CreateImageRequest) { r.BuildFlags = []string{pad("-tags=", MaxBuildFlagLen)} },
			func(r *buildv1.CreateImageRequest) { r.BuildFlags = []string{pad("-tags=", MaxBuildFlagLen+1)} }},
		{"env", nil, func(r *buildv1.CreateImageRequest) { r.Env = entries(MaxEnv+1, envKey, "v1") }},
		{"env[GOEXPERIMENT]", func(r *buildv1.CreateImageRequest) {
			r.Env = map[string]string{"GOEXPERIMENT": pad("x", MaxEnvValueLen)}
		},
			func(r *buildv1.CreateImageRequest) {
				r.Env = map[string]string{"GOEXPERIMENT": pad("x", MaxEnvValueLen+1)}
			}},
		{"labels", func(r *buildv1.CreateImageRequest) { r.Labels = entries(MaxLabels, labelKey, "v") },
			func(r *buildv1.CreateImageRequest) { r.Labels = entries(MaxLabels+1, labelKey, "v") }},
		{"labels[a]", func(r *buildv1.CreateImageRequest) { r.Labels = map[string]string{"a": pad("", MaxLabelValueLen)} },
			func(r *buildv1.CreateImageRequest) { r.Labels = map[string]string{"a": pad("", MaxLabelValueLen+1)} }},
		{"labels", nil, func(r *buildv1.CreateImageRequest) { r.Labels = map[string]string{pad("k", MaxLabelKeyLen+1): "v"} }},
		{"labels", nil, func(r *buildv1.CreateImageRequest) {
			r.Labels = entries(MaxLabels, labelKey, pad("", MaxLabelValueLen))
		}},
		{"env", nil, func(r *buildv1.CreateImageRequest) { r.Env = entries(10, envKey, pad("", MaxEnvValueLen)) }},
	}
	for _, tt := range tests {
		if tt.at != nil {
			r := valid()
			tt.at(r)
			if err := checkLimits(r); err != nil {
				t.Errorf("%s at its limit refused: %v", tt.field, err)
			}
		}
		r := valid()
		tt.over(r)
		_, err := parseRequest(r, cfg)
		var fe *FieldError
		if !errors.As(err, &fe) || fe.Field != tt.field {
			t.Errorf("%s over its limit: err = %v, want a FieldError naming %s", tt.field, err, tt.field)
			continue
		}
		if len(err.Error()) > 120 {
			t.Errorf("%s: error of %d bytes: %.120s", tt.field, len(err.Error()), err)
		}
	}
}

func fill(s []string, v string) {
	for i := range s {
		s[i] = v
	}
}

// Errors quote at most a short prefix of bad input.
func TestErrorsQuoteAShortPrefix(t *testing.T) {
	cfg := Config{BaseImage: "base.example/static:1", DefaultTimeout: time.Minute, MaxTimeout: time.Hour}
	long := strings.Repeat("Z", 200)
	for _, mutate := range []func(*buildv1.CreateImageRequest){
		func(r *buildv1.CreateImageRequest) { r.GitCommit = "a b" + long },
		func(r *buildv1.CreateImageRequest) { r.ImageTag = "UPPER::" + long },
		func(r *buildv1.CreateImageRequest) { r.BaseImage = "::" + long },
		func(r *buildv1.CreateImageRequest) { r.GitRepo = long + "://host/x.git" },
		func(r *buildv1.CreateImageRequest) { r.Env = map[string]string{"1" + long: "x"} },
		func(r *buildv1.CreateImageRequest) { r.Labels = map[string]string{"-" + long: "x"} },
		func(r *buildv1.CreateImageRequest) { r.BuildFlags = []string{"-mod=" + long} },
		func(r *buildv1.CreateImageRequest) { r.Ldflags = "-X " + long },
	} {
		r := &buildv1.CreateImageRequest{GitRepo: "https://git.example/team/app.git", GitCommit: "main", ImageTag: "registry.example/team/app:v1"}
		mutate(r)
		_, err := parseRequest(r, cfg)
		if err == nil {
			t.Errorf("accepted %v", r)
			continue
		}
		if strings.Count(err.Error(), "Z") > maxQuoted {
			t.Errorf("error quotes %d bytes of the input: %s", strings.Count(err.Error(), "Z"), err)
		}
	}
}
