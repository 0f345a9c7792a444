package buildfilter

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	buildv1 "github.com/buildsvc/buildsvc/proto/build/v1"
)

// builds are the records the match tests filter: b1 oldest, b4 newest.
func builds() []*buildv1.BuildInfo {
	at := func(day int) *timestamppb.Timestamp {
		return timestamppb.New(time.Date(2026, 12, day, 10, 0, 0, 0, time.UTC))
	}
	return []*buildv1.BuildInfo{
		{BuildId: "b1", State: buildv1.BuildState_BUILD_STATE_SUCCEEDED, Tenant: "team-a", Commit: "1a2b3c4d5e6f7a8b9c0d1a2b3c4d5e6f7a8b9c0d",
			CreateTime: at(1), Labels: map[string]string{"team": "payments", "pipeline": "nightly"},
			Request: &buildv1.CreateImageRequest{GitRepo: "https://git.example/a.git", ImageTag: "registry.example/a:v1", ImageTags: []string{"registry.example/a:v1", "registry.example/a:latest"}}},
		{BuildId: "b2", State: buildv1.BuildState_BUILD_STATE_FAILED, Tenant: "team-a", Commit: "ffff3c4d5e6f7a8b9c0d1a2b3c4d5e6f7a8b9c0d",
			CreateTime: at(2), Labels: map[string]string{"team": "payments-eu"},
			Error:   &buildv1.BuildError{Reason: "COMPILE_ERROR", Message: "go build: exit status 1"},
			Request: &buildv1.CreateImageRequest{GitRepo: "https://git.example/b.git", ImageTag: "registry.example/b:v1"}},
		{BuildId: "b3", State: buildv1.BuildState_BUILD_STATE_FAILED, Tenant: "team-b",
			CreateTime: at(3), Labels: map[string]string{"team": "search"},
			Error:   &buildv1.BuildError{Reason: "GIT_NOT_FOUND"},
			Request: &buildv1.CreateImageRequest{GitRepo: "https://git.example/a.git", ImageTag: "registry.example/a:v2"}},
		// An old record: no time, no labels, no tags in image_tags.
		{BuildId: "b4", State: buildv1.BuildState_BUILD_STATE_QUEUED,
			Request: &buildv1.CreateImageRequest{GitRepo: "ssh://git@git.example/c.git", ImageTag: "registry.example/c:v1"}},
	}
}

func TestMatch(t *testing.T) {
	tests := []struct {
		filter string
		want   string // the ids kept, space-separated
	}{
		{"", "b1 b2 b3 b4"},
		{"   ", "b1 b2 b3 b4"},
		{"state = FAILED", "b2 b3"},
		{"state=failed", "b2 b3"},
		{"state = BUILD_STATE_FAILED", "b2 b3"},
		{`state = "FAILED"`, "b2 b3"},
		{"state != FAILED", "b1 b4"},
		{`git_repo = "https://git.example/a.git"`, "b1 b3"},
		{`git_repo != "https://git.example/a.git"`, "b2 b4"},
		{`git_repo : "b.git"`, "b2"},
		{`git_repo:"git.example"`, "b1 b2 b3 b4"},
		{`git_repo:*`, "b1 b2 b3 b4"},
		{`image_tag = "registry.example/a:latest"`, "b1"},
		{`image_tag = "registry.example/a:v1"`, "b1"},
		{`image_tag : "registry.example/a"`, "b1 b3"},
		{`image_tag != "registry.example/a:latest"`, "b2 b3 b4"},
		{`commit = 1a2b3c4d5e6f7a8b9c0d1a2b3c4d5e6f7a8b9c0d`, "b1"},
		{`commit : 1A2B`, "b1"},
		{`commit : ffff`, "b2"},
		{`commit : *`, "b1 b2"},
		{`-commit:*`, "b3 b4"},
		{`labels.team = "payments"`, "b1"},
		{`labels.team = payments`, "b1"},
		{`labels.team = payments-eu`, "b2"},
		{`labels.team : payments`, "b1 b2"},
		{`labels.team != payments`, "b2 b3 b4"},
		{`labels.pipeline:*`, "b1"},
		{`labels:pipeline`, "b1"},
		{`NOT labels.team:*`, "b4"},
		{`tenant = "team-a"`, "b1 b2"},
		{`tenant = team-b`, "b3"},
		{`tenant != team-a`, "b3 b4"},
		{`create_time > "2026-12-01T10:00:00Z"`, "b2 b3"},
		{`create_time >= "2026-12-01T10:00:00Z"`, "b1 b2 b3"},
		{`create_time < "2026-12-02T10:00:00Z"`, "b1"},
		{`create_time <= "2026-12-02T10:00:00Z"`, "b1 b2"},
		{`create_time = "2026-12-02T11:00:00+01:00"`, "b2"},
		{`create_time > "2026-12-01T00:00:00.5Z" AND create_time < "2026-12-03T00:00:00Z"`, "b1 b2"},
		{`NOT create_time < "2026-12-02T00:00:00Z"`, "b2 b3 b4"},
		{`error.reason = COMPILE_ERROR`, "b2"},
		{`error.reason = "compile_error"`, "b2"},
		{`error.reason != COMPILE_ERROR`, "b1 b3 b4"},
		{`error.reason : GIT`, "b3"},
		{`error.reason:*`, "b2 b3"},
		// Logic.
		{`state = FAILED AND labels.team = "payments-eu"`, "b2"},
		{`state = FAILED labels.team = search`, "b3"},
		{`state = FAILED OR state = QUEUED`, "b2 b3 b4"},
		{`NOT state = FAILED`, "b1 b4"},
		{`-state = FAILED`, "b1 b4"},
		{`- state = FAILED`, "b1 b4"},
		{`NOT NOT state = FAILED`, "b2 b3"},
		{`NOT (state = FAILED OR state = QUEUED)`, "b1"},
		{`-(tenant = team-a)`, "b3 b4"},
		// OR binds tighter than AND, as in AIP-160.
		{`state = SUCCEEDED AND tenant = team-a OR tenant = team-b`, "b1"},
		{`state = FAILED tenant = team-a OR tenant = team-b`, "b2 b3"},
		{`(state = SUCCEEDED AND tenant = team-a) OR tenant = team-b`, "b1 b3"},
		{`((state = FAILED))`, "b2 b3"},
		{"state = FAILED\tAND\n\ttenant = team-b", "b3"},
		{`labels.team = "p\u0061yments"`, "b1"},
	}
	for _, tt := range tests {
		f, err := Parse(tt.filter)
		if err != nil {
			t.Errorf("Parse(%q): %v", tt.filter, err)
			continue
		}
		var got []string
		for _, b := range builds() {
			if f.Match(b) {
				got = append(got, b.GetBuildId())
			}
		}
		if strings.Join(got, " ") != tt.want {
			t.Errorf("Parse(%q) (%s) keeps %q, want %q", tt.filter, f, got, tt.want)
		}
	}
}

func TestParseErrors(t *testing.T) {
	tests := []struct {
		filter string
		want   string
	}{
		{`colour = red`, `filter: at 1: unknown field "colour"; fields: state, git_repo, image_tag, commit, labels.KEY, tenant, create_time, error.reason`},
		{`state = FAILED AND colour = red`, `filter: at 20: unknown field "colour"`},
		{`state = DONE`, `filter: at 9: unknown state "DONE"; states: RESOLVING, QUEUED, BUILDING, PUSHING, SUCCEEDED, FAILED, CANCELLED, INTERRUPTED`},
		{`state = UNSPECIFIED`, `filter: at 9: unknown state "UNSPECIFIED"`},
		{`state : FAILED`, `filter: at 7: state takes = or !=, not :`},
		{`state > FAILED`, `filter: at 7: state takes = or !=, not >`},
		{`tenant : a`, `filter: at 8: tenant takes = or !=, not :`},
		{`git_repo < "a"`, `filter: at 10: git_repo takes =, != or :, not <`},
		{`create_time != "2026-12-01T00:00:00Z"`, `filter: at 13: create_time takes <, <=, >, >= or =, not !=`},
		{`create_time > 2026-12-01T00:00:00Z`, `filter: at 15: create_time wants an RFC 3339 time in double quotes, such as "2026-12-01T00:00:00Z", not "2026-12-01T00"`},
		{`create_time > "yesterday"`, `filter: at 15: create_time wants an RFC 3339 time`},
		{`image_tag = registry.example/a:v1`, `filter: at 29: unexpected character '/': a value other than a word of letters, digits, _ . and - goes in double quotes`},
		{`image_tag = registry:5000`, `filter: at 21: unexpected ":": a value with : in it (a time, an image tag, a URL) goes in double quotes`},
		{`labels.Team = x`, `filter: at 1: "Team": a label key is 1-63 characters of a-z, 0-9, _ and -, starting with a letter`},
		{`labels. = x`, `filter: at 1: "": a label key is`},
		{`labels = x`, `filter: at 8: labels takes : KEY (has the label)`},
		{`labels:*`, `filter: at 7: labels takes : KEY`},
		{`labels:Team`, `filter: at 8: "Team": a label key is`},
		{`state = *`, `filter: at 9: * is a value only after : (has)`},
		{`FAILED`, `filter: at 1: "FAILED" alone is not a comparison: want FIELD OPERATOR VALUE, such as state = FAILED`},
		{`state = FAILED and tenant = a`, `filter: at 16: "and" is not a comparison: AND, OR and NOT are upper case`},
		{`state =`, `filter: at 8: want a value after =, got end of filter`},
		{`state = = FAILED`, `filter: at 9: want a value after =, got "="`},
		{`state = FAILED AND`, `filter: at 19: the filter ends where a comparison should be`},
		{`AND state = FAILED`, `filter: at 1: AND without a comparison before it`},
		{`state = FAILED OR OR state = QUEUED`, `filter: at 19: OR without a comparison before it`},
		{`(state = FAILED`, `filter: at 16: want ) to close the ( at 1, got end of filter`},
		{`state = FAILED)`, `filter: at 15: a ) that closes no (`},
		{`()`, `filter: at 2: empty parentheses: want a comparison inside`},
		{`NOT`, `filter: at 4: the filter ends where a comparison should be`},
		{`state != FAILED !`, `filter: at 17: "!" alone: want != (or NOT before a comparison)`},
		{`labels.team = "payments`, `filter: at 15: a string that does not end: want a closing "`},
		{`labels.team = "a\qb"`, `filter: at 15: a string with an invalid escape or a line break`},
		{`"state" = FAILED`, `filter: at 1: want a comparison (FIELD OPERATOR VALUE, such as state = FAILED), got string "state"`},
		{`state = FAILED # comment`, `filter: at 16: unexpected character '#'`},
		// Positions count characters, not bytes.
		{`labels.team = "é" AND x = 1`, `filter: at 23: unknown field "x"`},
		{strings.Repeat("(", 40) + "state = FAILED" + strings.Repeat(")", 40), `filter: at 33: nested more than 32 deep`},
		{strings.Repeat("NOT ", 40) + "state = FAILED", `filter: at 129: nested more than 32 deep`},
		{strings.Repeat(" ", MaxLen+1), `filter: 4097 bytes long; at most 4096`},
	}
	for _, tt := range tests {
		f, err := Parse(tt.filter)
		var fe *Error
		if !errors.As(err, &fe) || !strings.HasPrefix(err.Error(), tt.want) {
			t.Errorf("Parse(%q) = %v, %v; want an *Error %q", tt.filter, f, err, tt.want)
		}
	}
}

// The canonical form parses to itself, and keeps the same builds.
func TestString(t *testing.T) {
	tests := []struct{ filter, want string }{
		{"", ""},
		{"state=failed", `state = "FAILED"`},
		{`a:* `, ""}, // not a field: see below
		{`state = FAILED labels.team:payments -commit:*`, `(state = "FAILED" AND labels.team : "payments" AND NOT commit : *)`},
		{`state = FAILED OR NOT (tenant = a AND tenant = b)`, `(state = "FAILED" OR NOT (tenant = "a" AND tenant = "b"))`},
		{`labels.team = "a\"b\\c"`, `labels.team = "a\"b\\c"`},
	}
	for _, tt := range tests {
		f, err := Parse(tt.filter)
		if tt.want == "" && tt.filter != "" {
			if err == nil {
				t.Errorf("Parse(%q) accepted", tt.filter)
			}
			continue
		}
		if err != nil || f.String() != tt.want {
			t.Errorf("Parse(%q).String() = %q, %v; want %q", tt.filter, f, err, tt.want)
			continue
		}
		again, err := Parse(f.String())
		if err != nil || again.String() != tt.want {
			t.Errorf("Parse(%q) = %q, %v; want itself", f.String(), again, err)
		}
	}
}

// Every state the API has is a value of state.
func TestStateNames(t *testing.T) {
	names := stateNames()
	if len(names) != len(buildv1.BuildState_name)-1 || slices.Contains(names, "UNSPECIFIED") {
		t.Errorf("stateNames() = %q, want every state but UNSPECIFIED", names)
	}
}
