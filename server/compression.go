package server

import (
	"fmt"
	"strconv"
	"strings"

	buildv1 "github.com/buildsvc/buildsvc/proto/build/v1"
)

// DefaultCompression is the compression of an image's new layer unless
// the server or the request says otherwise.
const DefaultCompression = "zstd"

// compressions are BuildKit's names of the layer compressions the API
// offers, with the levels each takes.
var compressions = map[buildv1.LayerCompression]struct {
	name     string
	min, max int
}{
	buildv1.LayerCompression_LAYER_COMPRESSION_ZSTD:         {"zstd", 1, 22},
	buildv1.LayerCompression_LAYER_COMPRESSION_GZIP:         {"gzip", 1, 9},
	buildv1.LayerCompression_LAYER_COMPRESSION_ESTARGZ:      {"estargz", 1, 9},
	buildv1.LayerCompression_LAYER_COMPRESSION_UNCOMPRESSED: {"uncompressed", 0, 0},
}

// compressionByName returns the API's value of BuildKit's name.
func compressionByName(name string) (buildv1.LayerCompression, bool) {
	for c, v := range compressions {
		if v.name == strings.ToLower(name) {
			return c, true
		}
	}
	return buildv1.LayerCompression_LAYER_COMPRESSION_UNSPECIFIED, false
}

// checkCompression checks a compression and level (0 is the format's
// default level); field names the level's field in errors.
func checkCompression(c buildv1.LayerCompression, level int, field string) error {
	v, ok := compressions[c]
	if !ok {
		return fieldErr("compression", "%v is not a compression", c)
	}
	if level != 0 && (level < v.min || level > v.max) {
		if v.max == 0 {
			return fieldErr(field, "%s takes no level", v.name)
		}
		return fieldErr(field, "%d is not a %s level (%d-%d, or 0 for its default)", level, v.name, v.min, v.max)
	}
	return nil
}

// parseCompression fills in r's compression from req, or from the
// server's defaults.
func parseCompression(req *buildv1.CreateImageRequest, r *request, cfg Config) error {
	r.Compression, r.CompressionLevel = cfg.compression(), cfg.CompressionLevel
	if c := req.GetCompression(); c != buildv1.LayerCompression_LAYER_COMPRESSION_UNSPECIFIED {
		r.Compression, r.CompressionLevel = c, 0
	}
	if l := req.GetCompressionLevel(); l != 0 {
		r.CompressionLevel = int(l)
	}
	r.ForceCompression = req.GetForceCompression()
	return checkCompression(r.Compression, r.CompressionLevel, "compression_level")
}

// compression is the server's default compression.
func (c Config) compression() buildv1.LayerCompression {
	if v, ok := compressionByName(c.Compression); ok {
		return v
	}
	return buildv1.LayerCompression_LAYER_COMPRESSION_ZSTD
}

// checkCompressionConfig checks the server's default compression.
func (c Config) checkCompressionConfig() error {
	comp, ok := compressionByName(c.Compression)
	if !ok {
		return fmt.Errorf("config: compression %q: want zstd, gzip, estargz or uncompressed", c.Compression)
	}
	if err := checkCompression(comp, c.CompressionLevel, "compression-level"); err != nil {
		return fmt.Errorf("config: %w", err)
	}
	return nil
}

// compressionAttrs adds the image exporter's attributes of r's compression.
// The base image's layers keep theirs unless r forces it.
func (r *request) compressionAttrs(attrs map[string]string) {
	attrs["compression"] = compressions[r.Compression].name
	if r.CompressionLevel != 0 {
		attrs["compression-level"] = strconv.Itoa(r.CompressionLevel)
	}
	attrs["force-compression"] = strconv.FormatBool(r.ForceCompression)
}
