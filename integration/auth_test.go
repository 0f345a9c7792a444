//go:build integration

package integration

import (
	"encoding/base64"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/encoding/protojson"

	buildv1 "github.com/buildsvc/buildsvc/proto/build/v1"
	"github.com/buildsvc/buildsvc/server"
)

// A wrong registry password fails the build with an authentication error,
// and the password appears in no event.
func TestWrongRegistryPassword(t *testing.T) {
	st := loadStack(t)
	password := fmt.Sprintf("wrong-password-%d", os.Getpid())
	auth := base64.StdEncoding.EncodeToString([]byte(os.Getenv("REGISTRY_USER") + ":" + password))
	dir := t.TempDir()
	cfg := fmt.Sprintf(`{"auths": {%q: {"auth": %q}}}`, st.RegistryAddr, auth)
	if err := os.WriteFile(filepath.Join(dir, "config.json"), []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	c := startServer(t, func(c *server.Config) { c.DockerConfigDir = dir })
	repo := newRepo(t, sampleFiles(t))

	o := build(t, c, &buildv1.CreateImageRequest{GitRepo: repo.URL, GitCommit: "main", ImageTag: tagFor(t, "x")})
	if o.err == nil {
		t.Fatal("the stream of a failed build ended OK, not with the build's status")
	}
	berr := o.buildErr()
	if berr == nil {
		t.Fatalf("build did not fail; result %v", o.result())
	}
	if codes.Code(berr.Code) != codes.Unauthenticated {
		t.Errorf("error code = %v (%s), want Unauthenticated", codes.Code(berr.Code), berr.Message)
	}
	if !strings.Contains(strings.ToLower(berr.Message), "401 unauthorized") {
		t.Errorf("error does not say 401 Unauthorized: %s", berr.Message)
	}
	for _, e := range o.events {
		b, _ := protojson.Marshal(e)
		text := string(b) + string(e.GetLog().GetData())
		if strings.Contains(text, password) || strings.Contains(text, auth) {
			t.Fatalf("event %d leaks the password: %s", e.Seq, b)
		}
	}
}
