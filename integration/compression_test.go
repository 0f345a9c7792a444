//go:build integration

package integration

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/types"

	buildv1 "github.com/buildsvc/buildsvc/proto/build/v1"
)

// The new layer is zstd by default: the image validates (every layer
// decompressed and checked against its digest) and its binary runs; the
// base image's layers are pushed as they are. A request for gzip gets a
// gzip layer.
func TestLayerCompression(t *testing.T) {
	t.Parallel()
	c := startServer(t, nil)
	st := loadStack(t)
	base := pushedImage(t, st.BaseImage)
	baseManifest, err := base.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name        string
		compression buildv1.LayerCompression
		want        types.MediaType
	}{
		{"default", buildv1.LayerCompression_LAYER_COMPRESSION_UNSPECIFIED, types.OCILayerZStd},
		{"gzip", buildv1.LayerCompression_LAYER_COMPRESSION_GZIP, types.OCILayer},
	} {
		t.Run(tt.name, func(t *testing.T) {
			files := sampleFiles(t)
			files["main.go"] += fmt.Sprintf("\nvar _ = %q\n", t.Name()+time.Now().String())
			repo := newRepo(t, files)
			res := requireSuccess(t, build(t, c, &buildv1.CreateImageRequest{GitRepo: repo.URL, GitCommit: "main",
				ImageTag: tagFor(t, tt.name), Compression: tt.compression}))
			img := pushedImage(t, res.GetImage())
			m, err := img.Manifest()
			if err != nil {
				t.Fatal(err)
			}
			layers := m.Layers
			if len(layers) != len(baseManifest.Layers)+1 {
				t.Fatalf("%d layers, the base has %d: want one more", len(layers), len(baseManifest.Layers))
			}
			if got := layers[len(layers)-1].MediaType; got != tt.want {
				t.Errorf("the binary's layer is %s, want %s", got, tt.want)
			}
			for i, l := range baseManifest.Layers {
				if layers[i].Digest != l.Digest {
					t.Errorf("base layer %d was recompressed: %s, the base has %s (%s)", i, layers[i].Digest, l.Digest, l.MediaType)
				}
			}
			if out := runEntrypoint(t, img); !strings.Contains(out, sampleOutput) {
				t.Errorf("binary printed %q", out)
			}
		})
	}
}
