// Package deploy holds the files that deploy the service: the production
// buildkitd config and, at the repository root, docker-compose.yml. Its tests
// check them without a Docker engine.
package deploy

import (
	"errors"
	"net"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/pelletier/go-toml/v2"
	"go.yaml.in/yaml/v3"
)

type compose struct {
	Services map[string]service `yaml:"services"`
	Volumes  map[string]any     `yaml:"volumes"`
	Secrets  map[string]struct {
		File string `yaml:"file"`
	} `yaml:"secrets"`
}

type service struct {
	Image       string            `yaml:"image"`
	Build       any               `yaml:"build"`
	Command     []string          `yaml:"command"`
	Ports       []string          `yaml:"ports"`
	Volumes     []string          `yaml:"volumes"`
	Privileged  bool              `yaml:"privileged"`
	DependsOn   map[string]any    `yaml:"depends_on"`
	Environment map[string]string `yaml:"environment"`
	Secrets     []secretRef       `yaml:"secrets"`
	User        string            `yaml:"user"`
	Healthcheck struct {
		Test []string `yaml:"test"`
	} `yaml:"healthcheck"`
}

// secretRef is a service's use of a secret, in the short (NAME) or the
// long syntax; Target is where the service sees it.
type secretRef struct {
	Source string `yaml:"source"`
	Target string `yaml:"target"`
}

func (s *secretRef) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind == yaml.ScalarNode {
		s.Source = n.Value
	} else {
		type plain secretRef
		if err := n.Decode((*plain)(s)); err != nil {
			return err
		}
	}
	switch {
	case s.Target == "":
		s.Target = "/run/secrets/" + s.Source
	case !path.IsAbs(s.Target):
		s.Target = "/run/secrets/" + s.Target
	}
	return nil
}

// secretFile is the file (relative to the repository root, cleaned) of the
// secret that svc sees at target, or "" if it has none there.
func (c compose) secretFile(svc service, target string) string {
	for _, s := range svc.Secrets {
		if s.Target == target {
			return filepath.Clean(c.Secrets[s.Source].File)
		}
	}
	return ""
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

// flagValue is the value of --name=VALUE (or --name VALUE) in args, and
// whether it is there.
func flagValue(args []string, name string) (string, bool) {
	for i, a := range args {
		if v, ok := strings.CutPrefix(a, "--"+name+"="); ok {
			return v, true
		}
		if a == "--"+name && i+1 < len(args) {
			return args[i+1], true
		}
	}
	return "", false
}

// flagValues is every value of a repeated flag.
func flagValues(args []string, name string) []string {
	var out []string
	for i, a := range args {
		if v, ok := strings.CutPrefix(a, "--"+name+"="); ok {
			out = append(out, v)
		} else if a == "--"+name && i+1 < len(args) {
			out = append(out, args[i+1])
		}
	}
	return out
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
	if want := "moby/buildkit:" + buildkitVersion(t); bk.Image != want || !bk.Privileged {
		t.Errorf("buildkitd: image %q privileged %v, want %s (the client's version, go.mod), privileged", bk.Image, bk.Privileged, want)
	}
	if !slices.Contains(bk.Volumes, "./deploy/buildkitd.toml:/etc/buildkit/buildkitd.toml:ro") ||
		!slices.Contains(bk.Command, "--config=/etc/buildkit/buildkitd.toml") {
		t.Errorf("buildkitd does not load deploy/buildkitd.toml: %v %v", bk.Volumes, bk.Command)
	}
	for svc, s := range c.Services {
		for _, v := range s.Volumes {
			name, _, _ := strings.Cut(v, ":")
			if !strings.HasPrefix(name, ".") && !strings.HasPrefix(name, "/") {
				if _, ok := c.Volumes[name]; !ok {
					t.Errorf("%s: named volume %q is not declared", svc, name)
				}
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
	if len(reg.Ports) == 0 {
		t.Error("registry has no port")
	}
	// The build-cache store is on the data volume: its default directory
	// is under the data dir, which is the server-data volume (see
	// TestComposeDataDir).
	if v := srv.Environment["BUILDSVC_BUILD_CACHE_STORE"]; v != "true" {
		t.Errorf("server BUILDSVC_BUILD_CACHE_STORE = %q, want true", v)
	}
	if d, ok := srv.Environment["BUILDSVC_BUILD_CACHE_DIR"]; ok {
		t.Errorf("server BUILDSVC_BUILD_CACHE_DIR = %q: the store belongs on the data volume, its default", d)
	}
}

// buildkitd listens on TCP with mutual TLS only, with the certificates of
// scripts/buildkitd-certs.sh as secrets, and the server dials it there with
// its client certificate, checking the name the certificate is made for.
func TestComposeBuildkitdMTLS(t *testing.T) {
	c := readCompose(t)
	bk, srv := c.Services["buildkitd"], c.Services["server"]

	// buildkitd's flags are buildkitd's (its source, at go.mod's version).
	known := buildkitdFlags(t)
	for _, a := range bk.Command {
		name, _, _ := strings.Cut(strings.TrimPrefix(a, "--"), "=")
		if strings.HasPrefix(a, "--") && !known[name] {
			t.Errorf("buildkitd has no flag --%s (command %v)", name, bk.Command)
		}
	}
	addrs := flagValues(bk.Command, "addr")
	if !slices.Contains(addrs, "tcp://0.0.0.0:1234") {
		t.Errorf("buildkitd addresses %v, want tcp://0.0.0.0:1234", addrs)
	}
	for _, a := range addrs {
		if !strings.HasPrefix(a, "tcp://") && !strings.HasPrefix(a, "unix://") {
			t.Errorf("buildkitd address %q: want tcp:// or unix://", a)
		}
	}
	for flag, file := range map[string]string{"tlscacert": "deploy/certs/ca.crt", "tlscert": "deploy/certs/buildkitd.crt", "tlskey": "deploy/certs/buildkitd.key"} {
		v, ok := flagValue(bk.Command, flag)
		if !ok {
			t.Errorf("buildkitd has no --%s: TCP without mutual TLS", flag)
			continue
		}
		if got := c.secretFile(bk, v); got != file {
			t.Errorf("buildkitd --%s=%s is secret file %q, want %s (scripts/buildkitd-certs.sh)", flag, v, got, file)
		}
	}
	// The healthcheck asks one of the addresses buildkitd listens on.
	if hc := bk.Healthcheck.Test; len(hc) < 2 || hc[0] != "CMD" {
		t.Errorf("buildkitd healthcheck %v, want [CMD buildctl --addr ADDRESS debug workers]", hc)
	} else if a, _ := flagValue(hc, "addr"); !slices.Contains(addrs, a) ||
		strings.HasPrefix(a, "tcp://") && !slices.Contains(hc, "--tlscert") {
		t.Errorf("buildkitd healthcheck %v asks %q: not one of buildkitd's addresses %v that it can reach", hc, a, addrs)
	}

	env := srv.Environment
	addr := env["BUILDSVC_BUILDKIT_ADDR"]
	host, port, err := net.SplitHostPort(strings.TrimPrefix(addr, "tcp://"))
	if !strings.HasPrefix(addr, "tcp://") || err != nil || host != "buildkitd" || port != "1234" {
		t.Errorf("server BUILDSVC_BUILDKIT_ADDR = %q, want tcp://buildkitd:1234, where buildkitd listens", addr)
	}
	for name, file := range map[string]string{"BUILDSVC_BUILDKIT_CA": "deploy/certs/ca.crt",
		"BUILDSVC_BUILDKIT_CERT": "deploy/certs/client.crt", "BUILDSVC_BUILDKIT_KEY": "deploy/certs/client.key"} {
		v := env[name]
		if v == "" {
			t.Errorf("server has no %s: it cannot dial buildkitd's mutual TLS", name)
			continue
		}
		if got := c.secretFile(srv, v); got != file {
			t.Errorf("server %s=%s is secret file %q, want %s (scripts/buildkitd-certs.sh)", name, v, got, file)
		}
	}
	if n := env["BUILDSVC_BUILDKIT_SERVER_NAME"]; n != "" && n != host {
		t.Errorf("server checks the name %q in buildkitd's certificate but dials %q", n, host)
	}
}

// The certificates scripts/buildkitd-certs.sh makes by default fit the
// compose file: buildkitd's is valid for the name the server checks, the
// server's client certificate is one buildkitd accepts.
func TestComposeCertificatesFit(t *testing.T) {
	dir := runCertScript(t, t.TempDir())
	c := readCompose(t)
	env := c.Services["server"].Environment
	name := env["BUILDSVC_BUILDKIT_SERVER_NAME"]
	if name == "" {
		name, _, _ = net.SplitHostPort(strings.TrimPrefix(env["BUILDSVC_BUILDKIT_ADDR"], "tcp://"))
	}
	ca := readCert(t, filepath.Join(dir, "ca.crt"))
	verifyLeaf(t, ca, readCert(t, filepath.Join(dir, "buildkitd.crt")), name, serverAuth)
	verifyLeaf(t, ca, readCert(t, filepath.Join(dir, "client.crt")), "", clientAuth)
}

// The server's registry credentials are a secret (a docker config.json)
// in the directory its docker-config option names; every secret is a file
// that git and the image's build context leave out.
func TestComposeSecrets(t *testing.T) {
	c := readCompose(t)
	srv := c.Services["server"]
	dir := srv.Environment["BUILDSVC_DOCKER_CONFIG"]
	if dir == "" {
		t.Fatal("server has no BUILDSVC_DOCKER_CONFIG: the builds would have no registry credentials")
	}
	if f := c.secretFile(srv, path.Join(dir, "config.json")); f == "." || f == "" {
		t.Errorf("no secret at %s/config.json, the docker config BUILDSVC_DOCKER_CONFIG=%s points at", dir, dir)
	}
	gitignore := readLines(t, "../.gitignore")
	dockerignore := readLines(t, "../.dockerignore")
	for svc, s := range c.Services {
		for _, ref := range s.Secrets {
			if _, ok := c.Secrets[ref.Source]; !ok {
				t.Errorf("%s: secret %q is not declared", svc, ref.Source)
			}
		}
	}
	for name, s := range c.Secrets {
		if s.File == "" {
			t.Errorf("secret %s has no file", name)
			continue
		}
		d := filepath.Dir(filepath.Clean(s.File)) + "/"
		if !slices.Contains(gitignore, d) || !slices.Contains(dockerignore, d) {
			t.Errorf("secret %s: %s is not in both .gitignore and .dockerignore", name, d)
		}
	}
}

// The server's settings are options it has; it listens where its port is
// published and its healthcheck asks there, with the binary the image has.
func TestComposeServerHealth(t *testing.T) {
	c := readCompose(t)
	srv := c.Services["server"]
	envVars := optionEnvVars(t)
	for k := range srv.Environment {
		if !envVars[k] {
			t.Errorf("server environment %s is not an option in docs/operations.md", k)
		}
	}
	_, listenPort, err := net.SplitHostPort(srv.Environment["BUILDSVC_LISTEN"])
	if err != nil {
		t.Fatalf("server BUILDSVC_LISTEN: %v", err)
	}
	published := false
	for _, p := range srv.Ports {
		if strings.HasSuffix(p, ":"+listenPort) {
			published = true
		}
	}
	if !published {
		t.Errorf("server listens on port %s, which %v does not publish", listenPort, srv.Ports)
	}
	hc := srv.Healthcheck.Test
	if len(hc) < 3 || hc[0] != "CMD" || hc[2] != "health" {
		t.Fatalf("server healthcheck %v, want [CMD /usr/local/bin/buildsvc-server health]", hc)
	}
	if img := dockerfileBinaries(t); !slices.Contains(img, hc[1]) {
		t.Errorf("healthcheck runs %s; the image has %v", hc[1], img)
	}
	if a, ok := flagValue(hc, "addr"); ok {
		if _, p, _ := net.SplitHostPort(a); p != listenPort {
			t.Errorf("healthcheck asks %s; the server listens on port %s", a, listenPort)
		}
	}
}

// The server's data dir is a named volume on a directory the Dockerfile
// makes, owned by the image's (non-root) user, so that Docker's copy of it
// into a new volume is the server's to write.
func TestComposeDataDir(t *testing.T) {
	c := readCompose(t)
	srv := c.Services["server"]
	df := parseDockerfile(t)
	dataDir := srv.Environment["BUILDSVC_DATA_DIR"]
	if dataDir == "" {
		dataDir = df.env["BUILDSVC_DATA_DIR"]
	}
	if dataDir == "" {
		dataDir = "/var/lib/buildsvc" // the option's default
	}
	var volume string
	for _, v := range srv.Volumes {
		if name, target, _ := strings.Cut(v, ":"); strings.TrimSuffix(target, ":rw") == dataDir {
			volume = name
		}
	}
	if volume == "" || strings.HasPrefix(volume, ".") || strings.HasPrefix(volume, "/") {
		t.Fatalf("server volumes %v: want a named volume on the data dir %s", srv.Volumes, dataDir)
	}
	if _, ok := c.Volumes[volume]; !ok {
		t.Errorf("volume %s is not declared", volume)
	}
	user := df.user
	if srv.User != "" {
		user = srv.User
	}
	uid, _, _ := strings.Cut(user, ":")
	if uid == "" || uid == "0" || uid == "root" {
		t.Fatalf("the server runs as %q; want a non-root user", user)
	}
	owner, ok := df.owned[dataDir]
	if !ok {
		t.Fatalf("the Dockerfile does not make %s in the image with an owner (want a chown'd tree copied in, see Dockerfile)", dataDir)
	}
	if owner != user && !strings.HasPrefix(owner, uid+":") {
		t.Errorf("the image's %s is owned by %s; the server runs as %s", dataDir, owner, user)
	}
}

// dockerfile is what the tests read from the Dockerfile's final stage.
type dockerfile struct {
	user  string
	env   map[string]string
	owned map[string]string // directory in the final image -> owner it is made with
	bins  []string          // files of /usr/local/bin in the final image
}

// parseDockerfile reads ../Dockerfile: the final stage's USER and ENV, the
// directories it copies in from a tree made in the build stage
// (`RUN ... chown U:G /rootfs/DIR` then `COPY --from=build /rootfs/ /`),
// and the binaries built into /out and copied to /usr/local/bin.
func parseDockerfile(t *testing.T) dockerfile {
	t.Helper()
	b, err := os.ReadFile("../Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	// Join continued lines.
	text := regexp.MustCompile(`\\\n\s*`).ReplaceAllString(string(b), " ")
	df := dockerfile{env: map[string]string{}, owned: map[string]string{}}
	chowned := map[string]string{} // build stage path -> owner
	built := []string{}
	var outTo string
	stage := 0
	for _, line := range strings.Split(text, "\n") {
		f := strings.Fields(line)
		if len(f) == 0 || strings.HasPrefix(f[0], "#") {
			continue
		}
		switch strings.ToUpper(f[0]) {
		case "FROM":
			stage++
			df.user, df.env, df.owned = "", map[string]string{}, map[string]string{}
		case "USER":
			df.user = f[1]
		case "ENV":
			for _, kv := range f[1:] {
				if k, v, ok := strings.Cut(kv, "="); ok {
					df.env[k] = v
				}
			}
		case "RUN":
			for _, m := range regexp.MustCompile(`chown (\d+:\d+) (\S+)`).FindAllStringSubmatch(line, -1) {
				chowned[m[2]] = m[1]
			}
			for _, m := range regexp.MustCompile(`-o /out/(\S+)`).FindAllStringSubmatch(line, -1) {
				built = append(built, m[1])
			}
		case "COPY":
			if len(f) == 4 && f[1] == "--from=build" && f[2] == "/rootfs/" && f[3] == "/" {
				for p, owner := range chowned {
					if d, ok := strings.CutPrefix(p, "/rootfs"); ok {
						df.owned[d] = owner
					}
				}
			}
			if len(f) == 4 && f[1] == "--from=build" && f[2] == "/out/" {
				outTo = f[3]
			}
		}
	}
	if stage < 2 {
		t.Fatalf("the Dockerfile has %d stages, want a build stage and the image", stage)
	}
	for _, b := range built {
		if outTo != "" {
			df.bins = append(df.bins, path.Join(outTo, b))
		}
	}
	return df
}

func dockerfileBinaries(t *testing.T) []string { return parseDockerfile(t).bins }

// optionEnvVars are the env vars of the server's options, from the table
// of docs/operations.md (which cmd/server's tests keep in step with the
// options).
func optionEnvVars(t *testing.T) map[string]bool {
	t.Helper()
	out := map[string]bool{}
	re := regexp.MustCompile("^\\| `[a-z-]+` \\| `(BUILDSVC_[A-Z_]+)` \\|")
	for _, l := range readLines(t, "../docs/operations.md") {
		if m := re.FindStringSubmatch(l); m != nil {
			out[m[1]] = true
		}
	}
	if len(out) < 10 {
		t.Fatalf("docs/operations.md lists %d options; its table is not where this test looks", len(out))
	}
	return out
}

func readLines(t *testing.T, file string) []string {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, l := range strings.Split(string(b), "\n") {
		out = append(out, strings.TrimSpace(l))
	}
	return out
}

// buildkitVersion is the BuildKit version of go.mod.
func buildkitVersion(t *testing.T) string {
	t.Helper()
	for _, l := range readLines(t, "../go.mod") {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == "github.com/moby/buildkit" {
			return f[1]
		}
	}
	t.Fatal("go.mod does not require github.com/moby/buildkit")
	return ""
}

// buildkitdFlags are the flag names of buildkitd at go.mod's BuildKit
// version, read from its source in the module cache.
func buildkitdFlags(t *testing.T) map[string]bool {
	t.Helper()
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "github.com/moby/buildkit").Output()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		t.Fatalf("go list -m github.com/moby/buildkit: %v: %s", err, ee.Stderr)
	} else if err != nil {
		t.Fatalf("go list -m github.com/moby/buildkit: %v", err)
	}
	files, err := filepath.Glob(filepath.Join(strings.TrimSpace(string(out)), "cmd", "buildkitd", "main*.go"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no buildkitd source in %s: %v", out, err)
	}
	flags := map[string]bool{}
	re := regexp.MustCompile(`Name:\s+"([a-z][a-z0-9-]*)"`)
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range re.FindAllStringSubmatch(string(b), -1) {
			flags[m[1]] = true
		}
	}
	for _, must := range []string{"addr", "config", "tlscert"} {
		if !flags[must] {
			t.Fatalf("found no --%s among buildkitd's flags in %v: the source is not as this test expects", must, files)
		}
	}
	return flags
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

// On a Linux engine secret files keep their host owner and mode, so the
// docs (docs/quickstart.md, the compose file's header) give the server's
// private ones to the image's user; that command must name each of them
// and that user.
func TestComposeDocsChownServerSecrets(t *testing.T) {
	c := readCompose(t)
	srv := c.Services["server"]
	uid, _, _ := strings.Cut(parseDockerfile(t).user, ":")
	var private []string
	for _, ref := range srv.Secrets {
		if f := c.Secrets[ref.Source].File; strings.HasSuffix(f, ".key") || strings.HasSuffix(f, "config.json") {
			private = append(private, "/"+strings.TrimPrefix(filepath.Clean(f), "./"))
		}
	}
	if len(private) < 2 {
		t.Fatalf("server secrets %v: want its client key and docker config among them", srv.Secrets)
	}
	re := regexp.MustCompile(`chown -v "\$PWD/deploy:/deploy" \S+ *\\?\n?#? *(\d+):(\d+) ([^\n]+)`)
	for _, doc := range []string{"../docs/quickstart.md", "../docker-compose.yml"} {
		b, err := os.ReadFile(doc)
		if err != nil {
			t.Fatal(err)
		}
		m := re.FindStringSubmatch(string(b))
		if m == nil {
			t.Errorf("%s has no `docker run ... chown -v \"$PWD/deploy:/deploy\" IMAGE UID:GID FILES`", doc)
			continue
		}
		if m[1] != uid {
			t.Errorf("%s: chown to %s, but the server runs as %s", doc, m[1], uid)
		}
		for _, f := range private {
			if !strings.Contains(m[3], f) {
				t.Errorf("%s: the chown does not name %s (%q)", doc, f, m[3])
			}
		}
	}
}
