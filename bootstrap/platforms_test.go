package bootstrap

import (
	"encoding/json"
	"slices"
	"testing"

	"github.com/containerd/platforms"
	ocispecs "github.com/opencontainers/image-spec/specs-go/v1"
)

// The base image's platforms: the images' own first, then the defaults
// (or the options'), each once.
func TestBasePlatforms(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts Options
		want []string
	}{
		{"defaults on amd64", Options{Platform: ocispecs.Platform{OS: "linux", Architecture: "amd64"}},
			[]string{"linux/amd64", "linux/arm64", "linux/arm/v7", "linux/riscv64"}},
		{"defaults on arm64", Options{Platform: ocispecs.Platform{OS: "linux", Architecture: "arm64"}},
			[]string{"linux/arm64", "linux/amd64", "linux/arm/v7", "linux/riscv64"}},
		{"given", Options{Platform: ocispecs.Platform{OS: "linux", Architecture: "amd64"},
			BasePlatforms: []ocispecs.Platform{{OS: "linux", Architecture: "s390x"}}}, []string{"linux/amd64", "linux/s390x"}},
		{"the images' own only", Options{Platform: ocispecs.Platform{OS: "linux", Architecture: "amd64"},
			BasePlatforms: []ocispecs.Platform{}}, []string{"linux/amd64"}},
	} {
		var got []string
		for _, p := range tc.opts.withDefaults().BasePlatforms {
			got = append(got, platforms.Format(p))
		}
		if !slices.Equal(got, tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
		}
	}
}

// A base of several platforms is one config per platform, the same but
// for the platform, and the exporter's platform list in the same order.
func TestTargetConfigs(t *testing.T) {
	s := testSpec()
	s.BasePlatforms = []ocispecs.Platform{{OS: "linux", Architecture: "amd64"}, {OS: "linux", Architecture: "arm", Variant: "v7"}}
	tg := target{config: BaseConfig(s), platforms: s.BasePlatforms}
	configs, ps, err := tg.configs()
	if err != nil {
		t.Fatal(err)
	}
	if ps == nil || len(ps.Platforms) != 2 || len(configs) != 2 || ps.Platforms[1].ID != "linux/arm/v7" {
		t.Fatalf("platforms %+v, %d configs", ps, len(configs))
	}
	for i, dt := range configs {
		var img ocispecs.Image
		if err := json.Unmarshal(dt, &img); err != nil {
			t.Fatal(err)
		}
		if platforms.Format(img.Platform) != platforms.Format(s.BasePlatforms[i]) || img.Config.User != BaseConfig(s).Config.User {
			t.Errorf("config %d: platform %v user %q", i, img.Platform, img.Config.User)
		}
	}
	single := target{config: BaseConfig(s)}
	if configs, ps, err := single.configs(); err != nil || ps != nil || len(configs) != 1 {
		t.Errorf("one platform: %d configs, platforms %v, %v", len(configs), ps, err)
	}
}
