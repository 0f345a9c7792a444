package server

import (
	"testing"
	"time"

	buildv1 "github.com/buildsvc/buildsvc/proto/build/v1"
)

// The new layer is zstd unless the server or the request says otherwise;
// levels are checked per format; the exporter gets BuildKit's names and
// keeps the base image's layers unless forced.
func TestCompression(t *testing.T) {
	tests := []struct {
		name      string
		server    Config
		req       func(*buildv1.CreateImageRequest)
		want      map[string]string
		wantField string
	}{
		{"default zstd", Config{}, nil, map[string]string{"compression": "zstd", "force-compression": "false"}, ""},
		{"server gzip", Config{Compression: "gzip", CompressionLevel: 9}, nil,
			map[string]string{"compression": "gzip", "compression-level": "9", "force-compression": "false"}, ""},
		{"request overrides the server's format and level", Config{Compression: "gzip", CompressionLevel: 9},
			func(r *buildv1.CreateImageRequest) { r.Compression = buildv1.LayerCompression_LAYER_COMPRESSION_ZSTD },
			map[string]string{"compression": "zstd", "force-compression": "false"}, ""},
		{"request level", Config{}, func(r *buildv1.CreateImageRequest) { r.CompressionLevel = 19; r.ForceCompression = true },
			map[string]string{"compression": "zstd", "compression-level": "19", "force-compression": "true"}, ""},
		{"estargz", Config{}, func(r *buildv1.CreateImageRequest) {
			r.Compression = buildv1.LayerCompression_LAYER_COMPRESSION_ESTARGZ
		},
			map[string]string{"compression": "estargz", "force-compression": "false"}, ""},
		{"zstd level too high", Config{}, func(r *buildv1.CreateImageRequest) { r.CompressionLevel = 23 }, nil, "compression_level"},
		{"gzip level too high", Config{}, func(r *buildv1.CreateImageRequest) {
			r.Compression, r.CompressionLevel = buildv1.LayerCompression_LAYER_COMPRESSION_GZIP, 10
		}, nil, "compression_level"},
		{"uncompressed takes no level", Config{}, func(r *buildv1.CreateImageRequest) {
			r.Compression, r.CompressionLevel = buildv1.LayerCompression_LAYER_COMPRESSION_UNCOMPRESSED, 1
		}, nil, "compression_level"},
		{"unknown value", Config{}, func(r *buildv1.CreateImageRequest) { r.Compression = 99 }, nil, "compression"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := &buildv1.CreateImageRequest{GitRepo: "https://git.example/a.git", ImageTag: "reg.example/a:v1"}
			if tt.req != nil {
				tt.req(req)
			}
			cfg := tt.server
			cfg.BaseImage, cfg.DefaultTimeout, cfg.MaxTimeout = "base.example/static:1", time.Minute, time.Hour
			r, err := parseRequest(req, cfg)
			if tt.wantField != "" {
				if fe, ok := err.(*FieldError); !ok || fe.Field != tt.wantField {
					t.Fatalf("err = %v, want a FieldError on %s", err, tt.wantField)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			got := map[string]string{}
			r.compressionAttrs(got)
			if len(got) != len(tt.want) {
				t.Errorf("attrs %v, want %v", got, tt.want)
			}
			for k, v := range tt.want {
				if got[k] != v {
					t.Errorf("attrs %v, want %v", got, tt.want)
				}
			}
			if p := r.proto(); p.GetCompression() == buildv1.LayerCompression_LAYER_COMPRESSION_UNSPECIFIED {
				t.Errorf("the accepted request does not say which compression: %v", p)
			}
		})
	}
	for _, bad := range []Config{{Compression: "lz4"}, {Compression: "gzip", CompressionLevel: 10}} {
		if err := bad.checkCompressionConfig(); err == nil {
			t.Errorf("server config %+v accepted", bad)
		}
	}
}
