//go:build integration

package integration

import (
	"testing"

	"google.golang.org/grpc/codes"

	"github.com/buildsvc/buildsvc/policy"
	buildv1 "github.com/buildsvc/buildsvc/proto/build/v1"
	"github.com/buildsvc/buildsvc/server"
)

// A server whose builder image does not exist refuses a build before it is
// queued: NotFound naming builder_image and the option to fix, no build
// recorded.
func TestMissingBuilderImageBeforeQueueing(t *testing.T) {
	t.Parallel()
	st := loadStack(t)
	c := startServer(t, func(c *server.Config) {
		c.BuilderImage = st.RegistryAddr + "/it/no-such-builder:1"
		c.Tenants = &policy.Policies{Defaults: policy.Tenant{AllowLoopback: true, AllowAnyPort: true}}
	})
	req := &buildv1.CreateImageRequest{GitRepo: st.GitBaseURL + "/sample.git", GitCommit: "main", ImageTag: tagFor(t, "v1")}
	requireRefused(t, c, build(t, c, req), codes.NotFound, "builder_image: ", "does not exist", "--builder-image")
}
