package server

import (
	"errors"
	"slices"
	"strings"
	"testing"
)

func TestParsePlatforms(t *testing.T) {
	for _, tc := range []struct {
		in      []string
		want    []string
		wantErr string
	}{
		{nil, nil, ""},
		{[]string{"linux/amd64", "linux/arm64", "linux/arm/v7", "linux/riscv64"}, []string{"linux/amd64", "linux/arm64", "linux/arm/v7", "linux/riscv64"}, ""},
		{[]string{" linux/arm64/v8 "}, []string{"linux/arm64"}, ""},
		{[]string{"linux/arm/v6", "linux/386"}, []string{"linux/arm/v6", "linux/386"}, ""},
		{[]string{"linux"}, nil, `"linux" is not a platform`},
		{[]string{""}, nil, "is not a platform"},
		{[]string{"windows/amd64"}, nil, "only linux images"},
		{[]string{"darwin/arm64"}, nil, "only linux images"},
		{[]string{"linux/sparc64"}, nil, "sparc64 is not an architecture Go builds for here"},
		{[]string{"linux/arm/v9"}, nil, `arm has no variant "v9"`},
		{[]string{"linux/amd64", "linux/amd64"}, nil, "linux/amd64 is named twice"},
		{[]string{"linux/arm64", "linux/arm64/v8"}, nil, "linux/arm64 is named twice"},
		{slices.Repeat([]string{"linux/amd64"}, 9), nil, "9 platforms, at most 8"},
	} {
		got, err := parsePlatforms(tc.in)
		if tc.wantErr != "" {
			fe, ok := errors.AsType[*FieldError](err)
			if !ok || fe.Field != "platforms" || !strings.Contains(fe.Reason, tc.wantErr) {
				t.Errorf("%q: %v, want a field error of platforms saying %q", tc.in, err, tc.wantErr)
			}
			continue
		}
		if err != nil || !slices.Equal(formatPlatforms(got), tc.want) {
			t.Errorf("%q: %v %v, want %v", tc.in, formatPlatforms(got), err, tc.want)
		}
	}
}
