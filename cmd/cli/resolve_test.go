package main

import (
	"encoding/json"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	buildv1 "github.com/buildsvc/buildsvc/proto/build/v1"
)

// historyBuilds is builds with the server's kind of ids, newest first: one
// a minute from 10:00 to 10:06 (seven of them), then two in the same second
// at 09:59:30.
func historyBuilds() []*buildv1.BuildInfo {
	var builds []*buildv1.BuildInfo
	add := func(id string, at time.Time) {
		builds = append(builds, &buildv1.BuildInfo{BuildId: id, State: buildv1.BuildState_BUILD_STATE_SUCCEEDED, CreateTime: timestamppb.New(at),
			Request: &buildv1.CreateImageRequest{GitRepo: "https://git.example/app.git", ImageTag: "r.example/app:v1"}})
	}
	for m := 6; m >= 0; m-- {
		at := time.Date(2025, 11, 25, 10, m, 3, 0, time.UTC)
		add(at.Format("20060102-150405.000000")+fmt.Sprintf("-%010x", m), at)
	}
	at := time.Date(2025, 11, 25, 9, 59, 30, 0, time.UTC)
	add("20251125-095930.000002-bbbbbbbbbb", at)
	add("20251125-095930.000001-aaaaaaaaaa", at)
	return builds
}

// TestFindBuild resolves a BUILD_ID argument through get, whose output is
// the record found.
func TestFindBuild(t *testing.T) {
	builds := historyBuilds()
	newest, fourth := builds[0].GetBuildId(), builds[3].GetBuildId()
	tests := []struct {
		name   string
		builds []*buildv1.BuildInfo
		args   []string
		wantID string
		// wantCode and wantStderr, when the lookup fails.
		wantCode   int
		wantStderr []string
		wantCalls  []proto.Message
	}{
		{
			name: "whole id", args: []string{fourth}, wantID: fourth,
			wantCalls: []proto.Message{&buildv1.GetBuildRequest{BuildId: fourth}},
		},
		{
			name: "unique prefix", args: []string{"20251125-1003"}, wantID: fourth,
			wantCalls: []proto.Message{&buildv1.GetBuildRequest{BuildId: "20251125-1003"}, &buildv1.ListBuildsRequest{PageSize: 1000}},
		},
		{
			name: "prefix unique by its end", args: []string{"20251125-095930.000002"}, wantID: "20251125-095930.000002-bbbbbbbbbb",
		},
		{
			name: "last", args: []string{"last"}, wantID: newest,
			wantCalls: []proto.Message{&buildv1.ListBuildsRequest{PageSize: 1}},
		},
		{
			name: "no id is last", args: nil, wantID: newest,
			wantCalls: []proto.Message{&buildv1.ListBuildsRequest{PageSize: 1}},
		},
		{
			name: "ambiguous, two", args: []string{"20251125-095930"}, wantCode: exitUsage,
			wantStderr: []string{
				`error: "20251125-095930" is the start of more than one build's id; give more of it:` + "\n" +
					"  20251125-095930.000002-bbbbbbbbbb  succeeded  2025-11-25T09:59:30Z\n" +
					"  20251125-095930.000001-aaaaaaaaaa  succeeded  2025-11-25T09:59:30Z\n" +
					"Run 'buildsvc get --help' for usage.\n",
			},
		},
		{
			name: "ambiguous, more than five", args: []string{"2025"}, wantCode: exitUsage,
			wantStderr: []string{"give more of it:\n  " + newest, builds[4].GetBuildId() + "  succeeded  2025-11-25T10:02:03Z\n  and more\nRun "},
		},
		{
			name: "no match", args: []string{"2024"}, wantCode: exitUsage,
			wantStderr: []string{`error: no build has an id that is or starts with "2024" ('buildsvc builds ls' lists them)`},
		},
		{
			name: "last without builds", builds: []*buildv1.BuildInfo{}, args: []string{"last"}, wantCode: exitUsage,
			wantStderr: []string{"error: there are no builds yet"},
		},
		{
			name: "empty", args: []string{" "}, wantCode: exitUsage,
			wantStderr: []string{"BUILD_ID is empty"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := historyFake{&fakeServer{builds: builds}}
			if tt.builds != nil {
				h.builds = tt.builds
			}
			r := runCLI(t, append([]string{"get", "--server", h.start(t), "-o", "json"}, tt.args...)...)
			if tt.wantID == "" {
				if r.code != tt.wantCode || r.stdout != "" {
					t.Errorf("exit code %d, stdout %q; want %d and nothing", r.code, r.stdout, tt.wantCode)
				}
				for _, want := range tt.wantStderr {
					if !strings.Contains(r.stderr, want) {
						t.Errorf("stderr lacks %q:\n%s", want, r.stderr)
					}
				}
				return
			}
			var got struct {
				BuildID string `json:"buildId"`
			}
			if err := json.Unmarshal([]byte(r.stdout), &got); r.code != exitOK || err != nil || got.BuildID != tt.wantID {
				t.Errorf("exit code %d, build %q (%v); want 0 and %s\nstderr:\n%s", r.code, got.BuildID, err, tt.wantID, r.stderr)
			}
			if tt.wantCalls != nil && !protosEqual(h.calls(), tt.wantCalls) {
				t.Errorf("calls %v, want %v", h.calls(), tt.wantCalls)
			}
		})
	}
}

// TestFindBuildPages finds a prefix on the second page of a long history.
func TestFindBuildPages(t *testing.T) {
	var builds []*buildv1.BuildInfo
	for i := 1500; i > 0; i-- {
		builds = append(builds, &buildv1.BuildInfo{BuildId: fmt.Sprintf("id-%05d-x", i), State: buildv1.BuildState_BUILD_STATE_FAILED})
	}
	h := historyFake{&fakeServer{builds: builds}}
	r := runCLI(t, "get", "--server", h.start(t), "id-0012")
	if r.code != exitUsage || !strings.Contains(r.stderr, "id-00129-x  failed\n  id-00128-x  failed\n  id-00127-x  failed\n  id-00126-x  failed\n  id-00125-x  failed\n  and more\n") {
		t.Errorf("exit code %d, stderr:\n%s\nwant 2 and the first five candidates", r.code, r.stderr)
	}
	h = historyFake{&fakeServer{builds: builds}}
	r = runCLI(t, "get", "--server", h.start(t), "id-00007")
	if r.code != exitOK || !strings.Contains(r.stdout, "id-00007-x") {
		t.Errorf("exit code %d, stdout %q; want 0 and id-00007-x\nstderr:\n%s", r.code, r.stdout, r.stderr)
	}
	var tokens []string
	for _, c := range h.calls() {
		if l, ok := c.(*buildv1.ListBuildsRequest); ok {
			tokens = append(tokens, l.GetPageToken())
		}
	}
	if want := []string{"", "1000"}; !reflect.DeepEqual(tokens, want) {
		t.Errorf("page tokens %q, want %q", tokens, want)
	}
}

// TestCommandsFindBuild checks that each command acts on the build it
// found, with its whole id.
func TestCommandsFindBuild(t *testing.T) {
	builds := historyBuilds()
	fourth := builds[3].GetBuildId()
	tests := []struct {
		args []string
		want proto.Message // the call that acts on the build
	}{
		{[]string{"builds", "get", "20251125-1003"}, &buildv1.ListBuildsRequest{PageSize: 1000}},
		{[]string{"builds", "cancel", "20251125-1003"}, &buildv1.CancelBuildRequest{BuildId: fourth}},
		{[]string{"builds", "cancel", "last"}, &buildv1.CancelBuildRequest{BuildId: builds[0].GetBuildId()}},
		{[]string{"builds", "watch", "--progress", "quiet", "20251125-1003"}, &buildv1.WatchBuildRequest{BuildId: fourth}},
		{[]string{"builds", "logs", "-f", "20251125-1003"}, &buildv1.WatchBuildRequest{BuildId: fourth}},
		{[]string{"builds", "logs", "-f"}, &buildv1.WatchBuildRequest{BuildId: builds[0].GetBuildId()}},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			h := historyFake{&fakeServer{builds: builds, events: successEvents()}}
			r := runCLI(t, append(tt.args[:2:2], append([]string{"--server", h.start(t)}, tt.args[2:]...)...)...)
			if r.code != exitOK {
				t.Fatalf("exit code %d\nstderr:\n%s", r.code, r.stderr)
			}
			found := false
			for _, c := range h.calls() {
				found = found || proto.Equal(c, tt.want)
			}
			if !found {
				t.Errorf("calls %v lack %v", h.calls(), tt.want)
			}
		})
	}
	h := historyFake{&fakeServer{builds: builds}}
	if r := runCLI(t, "builds", "cancel", "--server", h.start(t)); r.code != exitUsage || !strings.Contains(r.stderr, "BUILD_ID is missing (give an id, a unique prefix of one, or last)") {
		t.Errorf("cancel without BUILD_ID: exit code %d, stderr %q; want 2: it never guesses", r.code, r.stderr)
	}
	if len(h.calls()) != 0 {
		t.Errorf("cancel without BUILD_ID called %v", h.calls())
	}
}

func protosEqual(got, want []proto.Message) bool {
	if len(got) != len(want) {
		return false
	}
	for i := range got {
		if !proto.Equal(got[i], want[i]) {
			return false
		}
	}
	return true
}
