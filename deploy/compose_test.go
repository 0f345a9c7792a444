// Package deploy holds the files that deploy the service: the production
// buildkitd config and, at the repository root, docker-compose.yml. Its tests
// check them without a Docker engine.
package deploy

import (
	"os"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/pelletier/go-toml/v2"
	"go.yaml.in/yaml/v3"
)

type compose struct {
	Services map[string]struct {
		Image       string            `yaml:"image"`
		Build       any               `yaml:"build"`
		Command     []string          `yaml:"command"`
		Ports       []string          `yaml:"ports"`
		Volumes     []string          `yaml:"volumes"`
		Privileged  bool              `yaml:"privileged"`
		DependsOn   map[string]any    `yaml:"depends_on"`
		Environment map[string]string `yaml:"environment"`
	} `yaml:"services"`
	Volumes map[string]any `yaml:"volumes"`
}

func readCompose(t *testing.T) compose {
	t.Helper()
	b, err := os.ReadFile("../docker-compose.yml")
	if err != nil {
		t.Fatal(err)
	}
	var c compose
	var raw map[string]any
	if err := yaml.Unmarshal(b, &raw); err != nil {
		t.Fatalf("docker-compose.yml does not parse: %v", err)
	}
	if err := yaml.Unmarshal(b, &c); err != nil {
		t.Fatalf("docker-compose.yml: %v", err)
	}
	return c
}

// The compose file has the services, ports and volumes the docs name, and
// its pieces point at each other.
func TestCompose(t *testing.T) {
	c := readCompose(t)
	var names []string
	for n := range c.Services {
		names = append(names, n)
	}
	sort.Strings(names)
	if strings.Join(names, " ") != "buildkitd registry server" {
		t.Fatalf("services = %v, want buildkitd, registry, server", names)
	}
	bk, reg, srv := c.Services["buildkitd"], c.Services["registry"], c.Services["server"]
	if bk.Image != "moby/buildkit:v0.34.2" || !bk.Privileged {
		t.Errorf("buildkitd: image %q privileged %v, want moby/buildkit:v0.34.2 (the client's version), privileged", bk.Image, bk.Privileged)
	}
	if !slices.Contains(bk.Command, "--addr=tcp://0.0.0.0:1234") || !slices.Contains(srv.Command, "--buildkit-addr=tcp://buildkitd:1234") {
		t.Errorf("the server does not reach buildkitd where it listens: %v / %v", bk.Command, srv.Command)
	}
	if !slices.Contains(bk.Volumes, "./deploy/buildkitd.toml:/etc/buildkit/buildkitd.toml:ro") ||
		!slices.Contains(bk.Command, "--config=/etc/buildkit/buildkitd.toml") {
		t.Errorf("buildkitd does not load deploy/buildkitd.toml: %v %v", bk.Volumes, bk.Command)
	}
	for _, v := range append(bk.Volumes, reg.Volumes...) {
		name, _, _ := strings.Cut(v, ":")
		if !strings.HasPrefix(name, ".") && !strings.HasPrefix(name, "/") {
			if _, ok := c.Volumes[name]; !ok {
				t.Errorf("named volume %q is not declared", name)
			}
		}
	}
	if _, ok := c.Volumes["buildkit-state"]; !ok {
		t.Error("no buildkit-state volume for buildkitd's cache")
	}
	wantPorts := map[string]string{"buildkitd": "127.0.0.1:1234:1234", "registry": "127.0.0.1:5000:5000", "server": "127.0.0.1:17070:17070"}
	for svc, p := range wantPorts {
		if !slices.Contains(c.Services[svc].Ports, p) {
			t.Errorf("%s ports = %v, want %s", svc, c.Services[svc].Ports, p)
		}
	}
	if srv.Build == nil {
		t.Error("server has no build context")
	} else if _, err := os.Stat("../Dockerfile"); err != nil {
		t.Errorf("server builds from . but: %v", err)
	}
	if _, ok := srv.DependsOn["buildkitd"]; !ok {
		t.Error("server does not wait for buildkitd")
	}
}

// The production buildkitd config parses, keeps the containerd worker off
// and the OCI worker on, and declares the compose registry plain HTTP.
func TestBuildkitdConfig(t *testing.T) {
	b, err := os.ReadFile("buildkitd.toml")
	if err != nil {
		t.Fatal(err)
	}
	var cfg struct {
		Worker struct {
			OCI struct {
				Enabled *bool `toml:"enabled"`
				GC      *bool `toml:"gc"`
			} `toml:"oci"`
			Containerd struct {
				Enabled *bool `toml:"enabled"`
			} `toml:"containerd"`
		} `toml:"worker"`
		Registry map[string]struct {
			HTTP bool `toml:"http"`
		} `toml:"registry"`
	}
	if err := toml.Unmarshal(b, &cfg); err != nil {
		t.Fatalf("buildkitd.toml: %v", err)
	}
	if cfg.Worker.OCI.Enabled == nil || !*cfg.Worker.OCI.Enabled || cfg.Worker.Containerd.Enabled == nil || *cfg.Worker.Containerd.Enabled {
		t.Error("want worker.oci enabled and worker.containerd disabled")
	}
	if cfg.Worker.OCI.GC == nil || !*cfg.Worker.OCI.GC {
		t.Error("want garbage collection on")
	}
	if !cfg.Registry["registry:5000"].HTTP {
		t.Error(`want [registry."registry:5000"] http = true for the compose registry`)
	}
}
