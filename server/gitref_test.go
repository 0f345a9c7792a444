package server

import (
	"errors"
	"strings"
	"testing"

	"github.com/go-git/go-git/v5/plumbing"
)

func TestPickRef(t *testing.T) {
	h := func(c string) plumbing.Hash { return plumbing.NewHash(strings.Repeat(c, 40)) }
	refs := []*plumbing.Reference{
		plumbing.NewSymbolicReference(plumbing.HEAD, "refs/heads/main"),
		plumbing.NewHashReference("refs/heads/main", h("a")),
		plumbing.NewHashReference("refs/heads/dev", h("b")),
		plumbing.NewHashReference("refs/tags/v1", h("c")),    // annotated: the tag object
		plumbing.NewHashReference("refs/tags/v1^{}", h("d")), // peeled: the commit
		plumbing.NewHashReference("refs/tags/light", h("e")),
		plumbing.NewHashReference("refs/heads/both", h("1")),
		plumbing.NewHashReference("refs/tags/both", h("2")),
	}
	tests := []struct {
		ref, want string
		notFound  bool
	}{
		{ref: "HEAD", want: h("a").String()},
		{ref: "main", want: h("a").String()},
		{ref: "dev", want: h("b").String()},
		{ref: "refs/heads/dev", want: h("b").String()},
		{ref: "v1", want: h("d").String()},
		{ref: "light", want: h("e").String()},
		{ref: "both", want: h("1").String()},
		{ref: strings.Repeat("f", 40), want: strings.Repeat("f", 40)},
		{ref: "nope", notFound: true},
		{ref: "aaaa", notFound: true},
	}
	for _, tt := range tests {
		got, err := pickRef(refs, tt.ref)
		if tt.notFound {
			if !errors.Is(err, ErrRefNotFound) {
				t.Errorf("pickRef(%q) err = %v, want ErrRefNotFound", tt.ref, err)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("pickRef(%q) = %q, %v; want %q", tt.ref, got, err, tt.want)
		}
	}
}
