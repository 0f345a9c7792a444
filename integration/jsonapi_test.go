//go:build integration

package integration

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"io"
	"net/http"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	buildv1 "github.com/buildsvc/buildsvc/proto/build/v1"
	"github.com/buildsvc/buildsvc/server"
)

// httpCall makes a Connect unary call of the HTTP/JSON API and decodes
// its answer into out; it returns the Connect error code, "" on success.
func httpCall(t *testing.T, base, method string, in, out proto.Message) string {
	t.Helper()
	body, err := protojson.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodPost, base+"/api/"+method, bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Connect-Protocol-Version", "1")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		var e struct{ Code string }
		_ = json.Unmarshal(b, &e)
		return e.Code
	}
	if err := protojson.Unmarshal(b, out); err != nil {
		t.Fatalf("%s answered %s: %v", method, b, err)
	}
	return ""
}

// httpStream makes a Connect server-streaming call and returns its
// messages (as BuildEvents) and its end's error code.
func httpStream(t *testing.T, base, method string, in proto.Message) ([]*buildv1.BuildEvent, string) {
	t.Helper()
	payload, err := protojson.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	var frame bytes.Buffer
	frame.WriteByte(0)
	_ = binary.Write(&frame, binary.BigEndian, uint32(len(payload)))
	frame.Write(payload)
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodPost, base+"/api/"+method, &frame)
	req.Header.Set("Content-Type", "application/connect+json")
	req.Header.Set("Connect-Protocol-Version", "1")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out []*buildv1.BuildEvent
	for {
		var hdr [5]byte
		if _, err := io.ReadFull(resp.Body, hdr[:]); err != nil {
			t.Fatalf("%s: the stream ended without its end message: %v", method, err)
		}
		msg := make([]byte, binary.BigEndian.Uint32(hdr[1:]))
		if _, err := io.ReadFull(resp.Body, msg); err != nil {
			t.Fatal(err)
		}
		if hdr[0]&2 != 0 {
			var end struct{ Error *struct{ Code string } }
			_ = json.Unmarshal(msg, &end)
			if end.Error != nil {
				return out, end.Error.Code
			}
			return out, ""
		}
		e := &buildv1.BuildEvent{}
		if err := protojson.Unmarshal(msg, e); err != nil {
			t.Fatal(err)
		}
		out = append(out, e)
	}
}

func sameMessage(t *testing.T, what string, viaHTTP, viaGRPC proto.Message) {
	t.Helper()
	if !proto.Equal(viaHTTP, viaGRPC) {
		t.Errorf("%s differs:\nHTTP %v\ngRPC %v", what, viaHTTP, viaGRPC)
	}
}

// Every method of the API through HTTP/JSON (Connect) gives what it gives
// through gRPC: the streams (CreateImage, WatchBuild) the same events, the
// errors the same codes.
func TestJSONAPI(t *testing.T) {
	t.Parallel()
	// Its Cleanup call prunes nothing: the stack's buildkitd is every
	// test's, and a prune of its cache would leave the tests after this one
	// cold (TestCleanupFreesSpace prunes a buildkitd of its own).
	ts := startWebTestServer(t, func(c *server.Config) {
		c.Cleanup = server.CleanupPolicy{KeepDuration: 100 * 365 * 24 * time.Hour, KeepStorage: 1 << 50}
	})
	c, base := ts.Client, ts.WebURL
	repo := newRepo(t, sampleFiles(t))

	// CreateImage through HTTP, then the same build's events through gRPC.
	evs, code := httpStream(t, base, "build.v1.Build/CreateImage", &buildv1.CreateImageRequest{GitRepo: repo.URL, GitCommit: "main", ImageTag: tagFor(t, "http")})
	if code != "" || len(evs) == 0 || evs[len(evs)-1].GetResult() == nil {
		t.Fatalf("CreateImage over HTTP: %d events, code %q", len(evs), code)
	}
	id := evs[0].GetBuildId()
	grpcEvents := watchAll(t, c, id, 0)
	if len(grpcEvents) != len(evs) {
		t.Fatalf("CreateImage over HTTP sent %d events, WatchBuild over gRPC has %d", len(evs), len(grpcEvents))
	}
	for i := range evs {
		sameMessage(t, "event", evs[i], grpcEvents[i])
	}
	httpWatch, code := httpStream(t, base, "build.v1.Build/WatchBuild", &buildv1.WatchBuildRequest{BuildId: id})
	if code != "" || len(httpWatch) != len(grpcEvents) {
		t.Fatalf("WatchBuild over HTTP: %d events, code %q", len(httpWatch), code)
	}
	for i := range httpWatch {
		sameMessage(t, "watched event", httpWatch[i], grpcEvents[i])
	}

	// GetBuild, ListBuilds.
	var got buildv1.BuildInfo
	if code := httpCall(t, base, "build.v1.Build/GetBuild", &buildv1.GetBuildRequest{BuildId: id}, &got); code != "" {
		t.Fatalf("GetBuild: %s", code)
	}
	want, err := c.GetBuild(t.Context(), &buildv1.GetBuildRequest{BuildId: id})
	if err != nil {
		t.Fatal(err)
	}
	sameMessage(t, "GetBuild", &got, want)
	var list buildv1.ListBuildsResponse
	if code := httpCall(t, base, "build.v1.Build/ListBuilds", &buildv1.ListBuildsRequest{PageSize: 10}, &list); code != "" {
		t.Fatalf("ListBuilds: %s", code)
	}
	wantList, err := c.ListBuilds(t.Context(), &buildv1.ListBuildsRequest{PageSize: 10})
	if err != nil {
		t.Fatal(err)
	}
	sameMessage(t, "ListBuilds", &list, wantList)

	// StartBuild of a new commit, and CancelBuild of it.
	files := sampleFiles(t)
	files["main.go"] += "\nvar _ = \"json api\"\n"
	sha := repo.commit("main", "json api", files)
	var started buildv1.StartBuildResponse
	if code := httpCall(t, base, "build.v1.Build/StartBuild", &buildv1.StartBuildRequest{Request: &buildv1.CreateImageRequest{GitRepo: repo.URL, GitCommit: sha, ImageTag: tagFor(t, "start")}}, &started); code != "" || started.GetBuildId() == "" {
		t.Fatalf("StartBuild: %q %v", code, &started)
	}
	var cancelled buildv1.CancelBuildResponse
	if code := httpCall(t, base, "build.v1.Build/CancelBuild", &buildv1.CancelBuildRequest{BuildId: started.GetBuildId()}, &cancelled); code != "" {
		t.Fatalf("CancelBuild: %s", code)
	}
	after, err := c.GetBuild(t.Context(), &buildv1.GetBuildRequest{BuildId: started.GetBuildId()})
	if err != nil {
		t.Fatal(err)
	}
	if ended := after.GetEndTime() != nil; !ended || cancelled.GetBuild().GetBuildId() != started.GetBuildId() {
		t.Errorf("after CancelBuild over HTTP the build is %v (the answer names %s)", after.GetState(), cancelled.GetBuild().GetBuildId())
	}

	// VerifyBuild of a build that does not exist: the same refusal both
	// ways (a real verification rebuilds from nothing: TestVerifyBuild).
	var ver buildv1.VerifyBuildResponse
	httpCode := httpCall(t, base, "build.v1.Build/VerifyBuild", &buildv1.VerifyBuildRequest{BuildId: "20200101-000000.000000-0000000000"}, &ver)
	_, gerr := c.VerifyBuild(t.Context(), &buildv1.VerifyBuildRequest{BuildId: "20200101-000000.000000-0000000000"})
	if httpCode != "not_found" || status.Code(gerr) != codes.NotFound {
		t.Errorf("VerifyBuild of nothing: HTTP %q, gRPC %v", httpCode, gerr)
	}
	// A bad request: InvalidArgument both ways.
	var bad buildv1.StartBuildResponse
	if code := httpCall(t, base, "build.v1.Build/StartBuild", &buildv1.StartBuildRequest{Request: &buildv1.CreateImageRequest{GitRepo: "ftp://x"}}, &bad); code != "invalid_argument" {
		t.Errorf("a bad StartBuild over HTTP: %q", code)
	}

	// The admin service.
	var st buildv1.GetStatusResponse
	if code := httpCall(t, base, "build.v1.AdminService/GetStatus", &buildv1.GetStatusRequest{}, &st); code != "" {
		t.Fatalf("GetStatus: %s", code)
	}
	var cl buildv1.CleanupResponse
	if code := httpCall(t, base, "build.v1.AdminService/Cleanup", &buildv1.CleanupRequest{}, &cl); code != "" || cl.GetSeconds() <= 0 {
		t.Errorf("Cleanup over HTTP: %q %v", code, &cl)
	}
}
