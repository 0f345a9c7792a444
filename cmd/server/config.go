package main

import (
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/docker/go-units"
	"github.com/urfave/cli/v2"
	"go.yaml.in/yaml/v3"

	"github.com/buildsvc/buildsvc/buildkitd"
	"github.com/buildsvc/buildsvc/egress"
	"github.com/buildsvc/buildsvc/llb"
	"github.com/buildsvc/buildsvc/server"
	"github.com/buildsvc/buildsvc/workers"
)

// How an option is set. Every option has one name, used three ways:
//
//	flag      --NAME VALUE
//	env var   BUILDSVC_NAME (upper case, "-" becomes "_")
//	file key  NAME: VALUE in the YAML file of --config (env BUILDSVC_CONFIG)
//
// and the first of these that sets it wins: flag, then env var, then file,
// then the default. The values have the same syntax everywhere: durations
// as Go writes them ("90s", "1h30m", "336h"), sizes with units ("20GB",
// "512MiB"; binary multiples, as buildkitd.toml reads them, or a plain byte
// count), booleans as true/false. docs/operations.md lists every option
// (a test keeps it complete); `buildsvc-server --print-config` prints the
// effective configuration, with where each value came from, in the file's
// format.

// envPrefix starts every option's environment variable.
const envPrefix = "BUILDSVC_"

// kind is the type of an option's value.
type kind int

const (
	kString kind = iota
	kInt
	kBool
	kDuration
	kSize // bytes, with units
)

// option is one setting of the server.
type option struct {
	name     string
	kind     kind
	def      string // default, in the syntax of the file
	defText  string // the default as help and --print-config explain it, when def alone is not the whole story
	usage    string
	category string
	// mask hides secrets in a value for --print-config; nil when the value
	// holds none.
	mask func(string) string
	// envAliases are more env vars of the option, the names other tools
	// use for the same setting; BUILDSVC_NAME wins over them.
	envAliases []string
}

// Categories of options in --help and in docs/operations.md.
const (
	catServer   = "Server"
	catSecurity = "Security"
	catBuildKit = "BuildKit"
	catManaged  = "Managed buildkitd (when --buildkit-addr is empty)"
	catBuilds   = "Builds"
	catCleanup  = "Cleanup"
	catCaches   = "Caches that outlive buildkitd"
)

// options are every setting of the server, in the order --help and
// --print-config show them.
var options = []option{
	{name: "listen", def: "127.0.0.1:17070", category: catServer, usage: "gRPC listen `ADDRESS` (Build, Admin, health, reflection)"},
	// Off by default, as containerd's metrics address and buildkitd's debug
	// address are: a fixed default port would keep two servers from sharing
	// a machine (tests, a second instance).
	{name: "metrics-listen", category: catServer, defText: "empty: no metrics listener", usage: "`ADDRESS` of the Prometheus /metrics HTTP listener, e.g. 127.0.0.1:17071; empty turns it off"},
	{name: "web-listen", category: catServer, defText: "empty: no web page", usage: "`ADDRESS` of the web page and the HTTP/JSON API (the gRPC API in the Connect protocol under /api), e.g. 127.0.0.1:17073; HTTPS with tls-cert and tls-key; empty turns it off"},
	{name: "web-session-key-file", category: catServer, defText: "empty: a new key at every start", usage: "`FILE` of at least 32 random bytes that seals the web page's session cookies; give every replica behind one address the same (read, never printed)"},
	{name: "web-session-ttl", kind: kDuration, def: "12h", category: catServer, usage: "how long a web page's session lasts after its sign-in link was opened"},
	{name: "data-dir", def: "/var/lib/buildsvc", category: catServer, usage: "`DIR` of the server's state: the build history, and the managed buildkitd's socket, pid file and root"},
	{name: "database-url", category: catServer, defText: "empty: the history is the bbolt file history.db in data-dir", usage: "PostgreSQL `DSN` of the history and of the build queue that server replicas sharing it share (postgres://user:password@host:5432/db or key=value pairs; its schema is migrated at start; the password is masked in --print-config); empty keeps it in the bbolt file under data-dir (DATABASE_URL, which other tools read, is not read: a shell that has it for them does not move the server off bbolt)", mask: maskDSN},
	{name: "replica-name", category: catServer, defText: "the host name and process id", usage: "`NAME` of this server among the replicas sharing database-url (unique per process)"},
	{name: "replica-lease", kind: kDuration, def: "15s", category: catServer, usage: "with database-url: how long a replica's claim on its running builds holds without renewal (renewed every third of it); the builds of a replica that stops for longer are marked INTERRUPTED by the others"},
	{name: "shutdown-grace", kind: kDuration, def: "30s", category: catServer, usage: "how long running builds may finish after SIGTERM"},
	{name: "log-level", def: "info", category: catServer, usage: "debug, info, warn or error"},
	{name: "log-format", def: "text", category: catServer, usage: "text or json"},

	{name: "tls-cert", category: catSecurity, usage: "server certificate `FILE` (PEM); with --tls-key the API serves TLS. Re-read when the file changes"},
	{name: "tls-key", category: catSecurity, usage: "server key `FILE` (PEM)"},
	{name: "tls-client-ca", category: catSecurity, usage: "CA `FILE` that client certificates (mTLS) are verified against; callers without a certificate may still use a token"},
	{name: "callers", category: catSecurity, defText: "empty: no authentication, every caller is an admin", usage: "`FILE` (YAML) of the callers allowed in: their tenants, roles, token hashes and certificate names; turns authentication on"},
	{name: "tenants", category: catSecurity, defText: "empty: no per-tenant limits", usage: "`FILE` (YAML) of the tenants' policies: git hosts, image tag prefixes, base images, running and queued builds, timeout, rate, wider allow-lists"},
	{name: "insecure-tokens", kind: kBool, def: "false", category: catSecurity, usage: "accept tokens without TLS (development on one machine only)"},
	{name: "public-reflection", kind: kBool, def: "true", category: catSecurity, usage: "serve gRPC reflection without authentication (health is always open)"},
	{name: "allow-loopback-hosts", kind: kBool, def: "false", category: catSecurity, usage: "let the server's own connections to git hosts (resolving refs) reach loopback addresses (127.0.0.0/8, ::1); a tenant's allow_loopback allows it for that tenant"},
	{name: "allow-private-hosts", kind: kBool, def: "false", category: catSecurity, usage: "let them reach private addresses (10/8, 172.16/12, 192.168/16, 100.64/10, fc00::/7); a tenant's allow_private allows it for that tenant"},
	{name: "allowed-ports", category: catSecurity, defText: "empty: only 443 and 80 (https, http), 9418 (git)", usage: "`PORTS` (comma-separated) git hosts may be reached on besides the protocol's usual ones; a tenant's allowed_ports add to them"},
	{name: "allow-any-port", kind: kBool, def: "false", category: catSecurity, usage: "let the server reach git hosts on any port"},

	{name: "buildkit-addr", category: catBuildKit, defText: "empty: start and supervise a local buildkitd", usage: "`ADDRESSES` of the buildkitd workers builds run on: unix:///path or tcp://host:port, several comma-separated (a pool: each repository's builds go to one worker, by rendezvous hashing), or dns://NAME:PORT for every address NAME resolves to (a headless Kubernetes Service), looked up at every check; empty starts a managed one", envAliases: []string{"BUILDKIT_HOST"}},
	{name: "buildkit-ca", category: catBuildKit, usage: "CA certificate `FILE` of buildkitd (tcp with TLS)"},
	{name: "buildkit-cert", category: catBuildKit, usage: "client certificate `FILE` for buildkitd mTLS"},
	{name: "buildkit-key", category: catBuildKit, usage: "client key `FILE` for buildkitd mTLS"},
	{name: "buildkit-server-name", category: catBuildKit, usage: "`NAME` to check in buildkitd's certificate"},
	{name: "buildkit-worker-max-builds", kind: kInt, def: "0", category: catBuildKit, defText: "0: 1.25 times a worker's share of max-concurrent-builds, rounded up", usage: "builds one worker of the pool runs at once; a build whose worker is full goes to the next in its repository's order"},
	{name: "buildkit-check-interval", kind: kDuration, def: "5s", category: catBuildKit, usage: "how often the health check asks buildkitd whether it answers (every second while it does not)"},

	{name: "buildkitd-binary", def: "buildkitd", category: catManaged, usage: "the buildkitd `PATH`, or a name looked up in PATH"},
	{name: "buildkitd-config", category: catManaged, usage: "buildkitd.toml `FILE` for the managed buildkitd; its root and [grpc] address are used when set"},
	{name: "buildkitd-root", category: catManaged, defText: "the buildkitd config's root, else <data-dir>/buildkit", usage: "state `DIR` of the managed buildkitd (its cache)"},
	{name: "buildkitd-ca-bundle", category: catManaged, usage: "PEM `FILE` bind-mounted (read-only, in a mount namespace of its own) over the system CA bundle of each ephemeral buildkitd (builder-mode ephemeral), so that its git fetches over HTTPS trust internal CAs"},
	{name: "buildkitd-start-timeout", kind: kDuration, def: "1m", category: catManaged, usage: "how long a started buildkitd may take to answer before it is restarted (and, at startup, the server gives up)"},

	{name: "builder-image", def: server.DefaultBuilderImage, category: catBuilds, usage: "`IMAGE` with the Go toolchain"},
	{name: "base-image", def: server.DefaultBaseImage, category: catBuilds, usage: "default runtime base `IMAGE`"},
	{name: "docker-config", category: catBuilds, defText: "$DOCKER_CONFIG or ~/.docker", usage: "`DIR` of the docker config.json with registry credentials (read, never printed)"},
	{name: "registry-credentials", category: catBuilds, usage: "more docker config `DIR`s, as NAME=DIR,..., that tenants' policies may name (registry_credentials) instead of docker-config (read, never printed)"},
	{name: "goproxy", category: catBuilds, usage: "GOPROXY for every build (credentials in its URLs are masked in --print-config)", mask: maskURLPasswords},
	{name: "goflags", category: catBuilds, usage: "GOFLAGS for every build"},
	{name: "compression", def: server.DefaultCompression, category: catBuilds, usage: "`FORMAT` of an image's new layer unless the request says: zstd, gzip (for runtimes older than containerd 1.5 or Docker 23), estargz or uncompressed; the base image's layers are kept as they are"},
	{name: "provenance", kind: kBool, def: "false", category: catBuilds, usage: "attach BuildKit's SLSA provenance (mode=max) to every build's image, as an attestation in an OCI index; a request can ask for it too"},
	{name: "sbom", kind: kBool, def: "false", category: catBuilds, usage: "attach an SPDX SBOM of every build's Go binary (per platform) as an attestation in an OCI index; a request can ask for it too"},
	{name: "compression-level", kind: kInt, def: "0", category: catBuilds, usage: "`LEVEL` of the compression, 0 for the format's default (zstd 1-22, gzip and estargz 1-9)"},
	{name: "git-credentials", category: catBuilds, defText: "empty: only public repositories and modules", usage: "`FILE` (YAML) of credentials of private git and Go module hosts, by host pattern: https passwords or tokens and ssh keys, each read from a file of its own (read, never printed)"},
	{name: "ssh-known-hosts", category: catBuilds, defText: "empty: ssh repositories need known hosts in the request", usage: "known_hosts `FILE` that ssh host keys of git hosts are checked against (there is no way to accept any key)"},
	{name: "ca-bundle", category: catBuilds, usage: "PEM `FILE` of internal CAs trusted, besides the system's, for git and Go module hosts: by ref resolution and by go inside the builder (buildkitd's own registry and git access need the CA in buildkitd.toml and its system store)"},
	{name: "goprivate", category: catBuilds, usage: "GOPRIVATE of every build: module path `GLOBS` fetched straight from their git hosts, not through the proxy nor checked against the checksum database; a request's goprivate adds to it"},
	{name: "gonoproxy", category: catBuilds, usage: "GONOPROXY of every build (`GLOBS`)"},
	{name: "gonosumdb", category: catBuilds, usage: "GONOSUMDB of every build (`GLOBS`)"},
	{name: "build-ulimits", category: catBuilds, usage: "resource limits of every build step, `NAME=SOFT[:HARD],...` as in ulimit(1), e.g. nofile=4096:8192,nproc=512"},
	{name: "build-user", category: catBuilds, defText: "empty: root inside the step's container", usage: "numeric `UID:GID` go build runs as, e.g. 65534:65534 (the download step, which alone writes the module cache, stays root)"},
	{name: "build-cgroup-parent", category: catBuilds, usage: "cgroup parent `PATH` of every build step, whose memory, CPU and pids limits then bound builds (buildkitd must be able to create cgroups under it)"},
	{name: "per-tenant-module-cache", kind: kBool, def: "false", category: catBuilds, usage: "give each tenant a Go module cache of its own (the Go build cache always is)"},
	{name: "cache-namespace", category: catBuilds, usage: "`NAME` added to the ids of the Go module and build cache mounts, so that services sharing one buildkitd keep their caches apart (letters, digits, . _ -)"},
	{name: "allow-insecure-git", kind: kBool, def: "false", category: catBuilds, usage: "accept file:// and plain http:// repositories (development only)"},
	{name: "max-concurrent-builds", kind: kInt, def: strconv.Itoa(server.DefaultMaxConcurrent), category: catBuilds, usage: "builds that run at once"},
	{name: "queue-size", kind: kInt, def: strconv.Itoa(server.DefaultQueueSize), category: catBuilds, usage: "builds that may wait for a slot; more are refused with RESOURCE_EXHAUSTED"},
	{name: "default-timeout", kind: kDuration, def: fmtDuration(server.DefaultTimeout), category: catBuilds, usage: "how long a build may run when its request does not say"},
	{name: "max-timeout", kind: kDuration, def: fmtDuration(server.DefaultMaxTimeout), category: catBuilds, usage: "the longest timeout a request may ask for"},
	{name: "resolve-timeout", kind: kDuration, def: "10s", category: catBuilds, usage: "how long resolving a git reference to a commit may take, waiting for a free slot included"},
	{name: "resolve-concurrency", kind: kInt, def: strconv.Itoa(server.DefaultResolveConcurrency), category: catBuilds, usage: "git references resolved at once; more wait"},
	{name: "resolve-concurrency-per-tenant", kind: kInt, def: strconv.Itoa(server.DefaultResolveConcurrencyPerTenant), category: catBuilds, usage: "git references of one tenant resolved at once (within resolve-concurrency)"},
	{name: "log-cap", kind: kSize, def: "32MiB", category: catBuilds, usage: "step output kept per build"},

	{name: "builder-mode", def: builderPersistent, category: catCaches, usage: "`MODE` persistent (every build on buildkit-addr's or the managed buildkitd) or ephemeral (each build on a fresh buildkitd, a child process started from buildkitd-binary and buildkitd-config with an empty state dir under <data-dir>/builders, thrown away after the build: the safe choice for untrusted code, kept warm by the module proxy and the build-cache store)"},
	{name: "idle-builders", kind: kInt, def: "1", category: catCaches, usage: "with builder-mode ephemeral: fresh buildkitds kept started ahead, each with the builder and base images pulled (the service's images, nothing of a tenant), so that a build does not wait for that; 0 starts each when its build needs it"},
	{name: "module-proxy-listen", category: catCaches, defText: "empty: no module proxy, builds use goproxy", usage: "`ADDRESS` the service's Go module proxy listens on (e.g. 127.0.0.1:17072): builds' GOPROXY, caching every module it fetches from goproxy (its upstream) for every later build, on any buildkitd"},
	{name: "module-proxy-url", category: catCaches, defText: "https://<module-proxy-listen>", usage: "`URL` of the module proxy as build steps reach it (its certificate must name the host); the build's netrc holds the proxy's credential for that host and port"},
	{name: "module-proxy-tls-cert", category: catCaches, defText: "tls-cert", usage: "certificate `FILE` (PEM) the module proxy serves HTTPS with (the go command sends credentials only over HTTPS); build steps must trust its CA: the system's, or one in ca-bundle"},
	{name: "module-proxy-tls-key", category: catCaches, defText: "tls-key", usage: "key `FILE` (PEM) of module-proxy-tls-cert"},
	{name: "module-proxy-dir", category: catCaches, defText: "<data-dir>/modproxy", usage: "`DIR` of the module proxy's cache"},
	{name: "module-proxy-max-size", kind: kSize, def: "10GiB", category: catCaches, usage: "the module proxy's cache is cleaned down to this size, least recently used first"},
	{name: "module-proxy-max-age", kind: kDuration, def: "720h", category: catCaches, usage: "module proxy entries unused for this long are removed by the cleanup"},
	{name: "build-cache-store", kind: kBool, def: "false", category: catCaches, usage: "back every build's Go build cache with the service's store (GOCACHEPROG; the builder image needs the helper the offline bootstrap adds), reached through a socket forwarded from the build's session"},
	{name: "build-cache-dir", category: catCaches, defText: "<data-dir>/buildcache", usage: "`DIR` of the build-cache store"},
	{name: "build-cache-registry", category: catCaches, defText: "empty: the store is on disk, in build-cache-dir", usage: "keep the build-cache store in this OCI registry `REPOSITORY` (e.g. registry.example/buildsvc/gocache; turns build-cache-store on), with docker-config's credentials for its registry: one store for a fleet of servers; bounding it is the registry's (retention, garbage collection), not the cleanup's"},
	{name: "build-cache-max-size", kind: kSize, def: "10GiB", category: catCaches, usage: "the build-cache store is cleaned down to this size, least recently used first"},
	{name: "build-cache-max-age", kind: kDuration, def: "336h", category: catCaches, usage: "build-cache entries unused for this long are removed by the cleanup"},
	{name: "cache-scope", def: server.CacheScopeService, category: catCaches, usage: "which builds share the Go caches (mounts and stores): service (the module cache shared, except for builds with private modules; the build cache per tenant) or repository-owner (both also per repository host and owner)"},

	{name: "cleanup-interval", kind: kDuration, def: "1h", category: catCleanup, usage: "time between cleanup runs (BuildKit prune and history retention); 0 turns the periodic run off"},
	{name: "cleanup-keep-duration", kind: kDuration, def: "336h", category: catCleanup, usage: "BuildKit cache used within this long is kept; the Go module and build cache mounts are only ever pruned when older"},
	{name: "cleanup-keep-storage", kind: kSize, def: "20GB", category: catCleanup, usage: "BuildKit cache (other than the Go cache mounts) older than the keep-duration is pruned down to this size"},
	{name: "history-max-age", kind: kDuration, def: "720h", category: catCleanup, usage: "ended builds are removed from the history after this long; 0 keeps them"},
	{name: "history-max-builds", kind: kInt, def: "10000", category: catCleanup, usage: "the history keeps at most this many ended builds, the newest; 0 means no limit"},
}

// Flags that are not settings: they are only flags (and --config also an
// env var), never file keys.
const (
	flagConfig      = "config"
	flagPrintConfig = "print-config"
)

// envName is the environment variable of the option name.
func envName(name string) string {
	return envPrefix + strings.ToUpper(strings.ReplaceAll(name, "-", "_"))
}

// flags are the command line flags: --config, --print-config and one per
// option. The env vars and the file are applied by resolve, not by
// urfave/cli, so that the precedence lives in one place.
func flags() []cli.Flag {
	fs := []cli.Flag{
		&cli.StringFlag{Name: flagConfig, EnvVars: []string{envPrefix + "CONFIG"}, Usage: "YAML `FILE` of settings (keys are the flag names); flags and env vars override it"},
		&cli.BoolFlag{Name: flagPrintConfig, Usage: "print the effective configuration as YAML (secrets masked) and exit"},
	}
	for _, o := range options {
		usage := o.usage + " [$" + strings.Join(append([]string{envName(o.name)}, o.envAliases...), ", $") + "]"
		if o.kind == kBool {
			fs = append(fs, &cli.BoolFlag{Name: o.name, Usage: usage, Category: o.category})
			continue
		}
		defText := o.defText
		if defText == "" && o.def != "" {
			defText = strconv.Quote(o.def)
		}
		fs = append(fs, &cli.StringFlag{Name: o.name, Usage: usage, Category: o.category, DefaultText: defText})
	}
	return fs
}

// setting is the effective value of one option and where it came from.
type setting struct {
	value  string
	source string // "flag", "env BUILDSVC_X", "file", "default"
}

// resolve picks each option's value: the flag if it was given, else its env
// var (set, even to ""), else the file's key, else the default. file is the
// --config file's path, "" for none.
func resolve(c *cli.Context, file string) (map[string]setting, error) {
	var fromFile map[string]string
	if file != "" {
		var err error
		if fromFile, err = readConfigFile(file); err != nil {
			return nil, err
		}
	}
	out := make(map[string]setting, len(options))
	for _, o := range options {
		if c.IsSet(o.name) {
			v := c.String(o.name)
			if o.kind == kBool {
				v = strconv.FormatBool(c.Bool(o.name))
			}
			out[o.name] = setting{v, "flag"}
		} else if env, v, ok := lookupEnv(o); ok {
			out[o.name] = setting{v, "env " + env}
		} else if v, ok := fromFile[o.name]; ok {
			out[o.name] = setting{v, "file"}
		} else {
			out[o.name] = setting{o.def, "default"}
		}
	}
	return out, nil
}

// lookupEnv finds the first of o's env vars that is set (even to ""):
// BUILDSVC_NAME, then its aliases.
func lookupEnv(o option) (name, value string, ok bool) {
	for _, name := range append([]string{envName(o.name)}, o.envAliases...) {
		if value, ok := os.LookupEnv(name); ok {
			return name, value, true
		}
	}
	return "", "", false
}

// readConfigFile reads a YAML mapping of option names to scalar values.
// Unknown keys are errors, so a typo does not go unnoticed.
func readConfigFile(path string) (map[string]string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config file: %w", err)
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(b, &doc); err != nil {
		return nil, fmt.Errorf("config file %s: %w", path, err)
	}
	out := map[string]string{}
	if len(doc.Content) == 0 { // empty file
		return out, nil
	}
	root := doc.Content[0]
	if root.Kind != yaml.MappingNode {
		return nil, fmt.Errorf("config file %s: want a mapping of option names to values", path)
	}
	for i := 0; i+1 < len(root.Content); i += 2 {
		k, v := root.Content[i], root.Content[i+1]
		if !slices.ContainsFunc(options, func(o option) bool { return o.name == k.Value }) {
			return nil, fmt.Errorf("config file %s:%d: unknown key %q (keys are the flag names; see --help)", path, k.Line, k.Value)
		}
		if _, dup := out[k.Value]; dup {
			return nil, fmt.Errorf("config file %s:%d: %q is given twice", path, k.Line, k.Value)
		}
		switch {
		case v.Kind == yaml.ScalarNode && v.Tag == "!!null":
			out[k.Value] = ""
		case v.Kind == yaml.ScalarNode:
			out[k.Value] = v.Value
		default:
			return nil, fmt.Errorf("config file %s:%d: %s: want a single value", path, v.Line, k.Value)
		}
	}
	return out, nil
}

// config is the server's effective configuration, parsed and checked.
type config struct {
	Listen        string
	MetricsListen string
	DataDir       string
	DatabaseURL   string
	// The web page: its listener and sessions.
	WebListen         string
	WebSessionKeyFile string
	WebSessionTTL     time.Duration
	// ReplicaName and ReplicaLease: this replica in the shared queue.
	ReplicaName   string
	ReplicaLease  time.Duration
	ShutdownGrace time.Duration
	LogLevel      slog.Level
	LogFormat     string

	// Security: TLS and who may call (auth).
	TLSCert, TLSKey, TLSClientCA string
	CallersFile                  string
	TenantsFile                  string
	// Private sources: the credentials file, known hosts and CA bundle
	// (read by serve) and the private module settings.
	GitCredentialsFile, KnownHostsFile, CABundleFile string
	GoPrivate, GoNoProxy, GoNoSumDB                  string
	InsecureTokens                                   bool
	PublicReflection                                 bool

	// BuildKit is the remote buildkitd, or (Address a list or a dns://
	// name, see workers.Parse) the pool's workers with its TLS settings;
	// an empty Address means a managed one (Managed).
	BuildKit      buildkitd.Endpoint
	CheckInterval time.Duration
	// WorkerMaxBuilds bounds the builds of one worker (0: the pool's
	// default).
	WorkerMaxBuilds int
	Managed         managedConfig
	// Caches that outlive buildkitd, and the builder mode.
	Caches cachesConfig

	// Server is everything of server.Config that comes from settings (not
	// the store, observer or logger); BuildKit is set by serve.
	Server server.Config
	// Egress widens the host policy of the server's own connections to git
	// hosts; ResolveConcurrency and ResolveConcurrencyPerTenant bound the
	// resolves at once. serve makes the server's resolver of them.
	Egress                      egress.Allowance
	ResolveConcurrency          int
	ResolveConcurrencyPerTenant int
}

// Builder modes (--builder-mode).
const (
	builderPersistent = "persistent"
	builderEphemeral  = "ephemeral"
)

// cachesConfig is the builder mode and the caches that outlive buildkitd:
// the module proxy and the build-cache store (serve makes them).
type cachesConfig struct {
	BuilderMode                           string
	IdleBuilders                          int
	ModuleProxyListen, ModuleProxyURL     string
	ModuleProxyDir                        string
	ModuleProxyTLSCert, ModuleProxyTLSKey string
	ModuleProxyMaxSize                    int64
	ModuleProxyMaxAge                     time.Duration
	BuildCacheStore                       bool
	BuildCacheDir                         string
	BuildCacheRegistry                    string
	BuildCacheMaxSize                     int64
	BuildCacheMaxAge                      time.Duration
}

// managedConfig configures the managed buildkitd.
type managedConfig struct {
	// CABundle is bind-mounted over the system CA bundle of each
	// ephemeral buildkitd.
	CABundle                 string
	Binary, ConfigFile, Root string
	StartTimeout             time.Duration
}

// parseConfig turns the settings into a config, reporting every bad value
// with its option and source.
func parseConfig(s map[string]setting) (config, error) {
	p := &parser{s: s}
	cfg := config{
		Listen:            p.str("listen"),
		MetricsListen:     p.str("metrics-listen"),
		DataDir:           p.str("data-dir"),
		DatabaseURL:       p.str("database-url"),
		WebListen:         p.str("web-listen"),
		WebSessionKeyFile: p.str("web-session-key-file"),
		WebSessionTTL:     p.duration("web-session-ttl"),
		ReplicaName:       p.str("replica-name"),
		ReplicaLease:      p.duration("replica-lease"),
		ShutdownGrace:     p.duration("shutdown-grace"),
		LogFormat:         strings.ToLower(p.str("log-format")),

		TLSCert:     p.str("tls-cert"),
		TLSKey:      p.str("tls-key"),
		TLSClientCA: p.str("tls-client-ca"),
		CallersFile: p.str("callers"),
		TenantsFile: p.str("tenants"),

		GitCredentialsFile: p.str("git-credentials"),
		KnownHostsFile:     p.str("ssh-known-hosts"),
		CABundleFile:       p.str("ca-bundle"),
		GoPrivate:          p.str("goprivate"),
		GoNoProxy:          p.str("gonoproxy"),
		GoNoSumDB:          p.str("gonosumdb"),
		InsecureTokens:     p.bool("insecure-tokens"),
		PublicReflection:   p.bool("public-reflection"),

		BuildKit: buildkitd.Endpoint{
			Address:    p.str("buildkit-addr"),
			CACert:     p.str("buildkit-ca"),
			Cert:       p.str("buildkit-cert"),
			Key:        p.str("buildkit-key"),
			ServerName: p.str("buildkit-server-name"),
		},
		CheckInterval:   p.duration("buildkit-check-interval"),
		WorkerMaxBuilds: p.int("buildkit-worker-max-builds"),
		Managed: managedConfig{
			Binary:       p.str("buildkitd-binary"),
			ConfigFile:   p.str("buildkitd-config"),
			CABundle:     p.str("buildkitd-ca-bundle"),
			Root:         p.str("buildkitd-root"),
			StartTimeout: p.duration("buildkitd-start-timeout"),
		},
		Caches: cachesConfig{
			BuilderMode:        p.str("builder-mode"),
			IdleBuilders:       p.int("idle-builders"),
			ModuleProxyListen:  p.str("module-proxy-listen"),
			ModuleProxyURL:     p.str("module-proxy-url"),
			ModuleProxyDir:     p.str("module-proxy-dir"),
			ModuleProxyTLSCert: cmp.Or(p.str("module-proxy-tls-cert"), p.str("tls-cert")),
			ModuleProxyTLSKey:  cmp.Or(p.str("module-proxy-tls-key"), p.str("tls-key")),
			ModuleProxyMaxSize: p.size("module-proxy-max-size"),
			ModuleProxyMaxAge:  p.duration("module-proxy-max-age"),
			BuildCacheStore:    p.bool("build-cache-store") || p.str("build-cache-registry") != "",
			BuildCacheDir:      p.str("build-cache-dir"),
			BuildCacheRegistry: p.str("build-cache-registry"),
			BuildCacheMaxSize:  p.size("build-cache-max-size"),
			BuildCacheMaxAge:   p.duration("build-cache-max-age"),
		},
		Server: server.Config{
			CacheScope:           p.str("cache-scope"),
			BuilderImage:         p.str("builder-image"),
			BaseImage:            p.str("base-image"),
			DockerConfigDir:      p.str("docker-config"),
			GoProxy:              p.str("goproxy"),
			GoFlags:              p.str("goflags"),
			Provenance:           p.bool("provenance"),
			SBOM:                 p.bool("sbom"),
			Compression:          p.str("compression"),
			CompressionLevel:     p.int("compression-level"),
			CacheNamespace:       p.str("cache-namespace"),
			PerTenantModuleCache: p.bool("per-tenant-module-cache"),
			Ulimits:              p.ulimits("build-ulimits"),
			CgroupParent:         p.str("build-cgroup-parent"),
			RegistryCredentials:  p.namedDirs("registry-credentials"),
			BuildUser:            p.str("build-user"),
			Authenticated:        p.str("callers") != "",
			AllowInsecureGit:     p.bool("allow-insecure-git"),
			MaxConcurrent:        p.int("max-concurrent-builds"),
			QueueSize:            p.int("queue-size"),
			DefaultTimeout:       p.duration("default-timeout"),
			MaxTimeout:           p.duration("max-timeout"),
			ResolveTimeout:       p.duration("resolve-timeout"),
			LogCap:               p.size("log-cap"),
			Cleanup: server.CleanupPolicy{
				Interval:         p.duration("cleanup-interval"),
				KeepDuration:     p.duration("cleanup-keep-duration"),
				KeepStorage:      p.size("cleanup-keep-storage"),
				HistoryMaxAge:    p.duration("history-max-age"),
				HistoryMaxBuilds: p.int("history-max-builds"),
			},
		},
	}
	cfg.Egress = egress.Allowance{
		Loopback: p.bool("allow-loopback-hosts"),
		Private:  p.bool("allow-private-hosts"),
		AnyPort:  p.bool("allow-any-port"),
	}
	ports, err := egress.ParsePorts(p.str("allowed-ports"))
	if err != nil {
		p.fail("allowed-ports", err)
	}
	cfg.Egress.Ports = ports
	cfg.ResolveConcurrency = p.int("resolve-concurrency")
	cfg.ResolveConcurrencyPerTenant = p.int("resolve-concurrency-per-tenant")
	if cfg.ResolveConcurrency == 0 {
		p.fail("resolve-concurrency", errors.New("must be positive"))
	}
	if cfg.ResolveConcurrencyPerTenant == 0 {
		p.fail("resolve-concurrency-per-tenant", errors.New("must be positive"))
	} else if cfg.ResolveConcurrencyPerTenant > cfg.ResolveConcurrency {
		p.fail("resolve-concurrency-per-tenant", errors.New("must not be more than resolve-concurrency"))
	}
	if err := cfg.LogLevel.UnmarshalText([]byte(p.str("log-level"))); err != nil {
		p.fail("log-level", err)
	}
	if cfg.LogFormat != "text" && cfg.LogFormat != "json" {
		p.fail("log-format", errors.New("want text or json"))
	}
	if m := cfg.Caches.BuilderMode; m != builderPersistent && m != builderEphemeral {
		p.fail("builder-mode", fmt.Errorf("want %s or %s", builderPersistent, builderEphemeral))
	}
	if c := cfg.Caches; c.ModuleProxyListen != "" && (c.ModuleProxyTLSCert == "" || c.ModuleProxyTLSKey == "") {
		p.fail("module-proxy-tls-cert", errors.New("the module proxy needs a certificate and key (module-proxy-tls-cert and -key, or tls-cert and tls-key): the go command sends credentials only over HTTPS"))
	}
	if cfg.Caches.IdleBuilders < 0 {
		p.fail("idle-builders", errors.New("must not be negative"))
	}
	if cfg.Caches.ModuleProxyURL != "" && cfg.Caches.ModuleProxyListen == "" {
		p.fail("module-proxy-url", errors.New("needs module-proxy-listen"))
	}
	if cfg.Listen == "" {
		p.fail("listen", errors.New("must not be empty"))
	}
	if (cfg.TLSCert == "") != (cfg.TLSKey == "") {
		p.fail("tls-cert", errors.New("tls-cert and tls-key go together"))
	}
	if cfg.TLSClientCA != "" && cfg.TLSCert == "" {
		p.fail("tls-client-ca", errors.New("needs tls-cert and tls-key: client certificates need TLS"))
	}
	if cfg.DataDir == "" {
		p.fail("data-dir", errors.New("must not be empty"))
	}
	if cfg.WorkerMaxBuilds < 0 {
		p.fail("buildkit-worker-max-builds", errors.New("must not be negative"))
	}
	if cfg.CheckInterval <= 0 {
		p.fail("buildkit-check-interval", errors.New("must be positive"))
	}
	if cfg.BuildKit.Address != "" {
		if es, _, err := workers.Parse(cfg.BuildKit.Address, cfg.BuildKit, nil); err != nil {
			p.fail("buildkit-addr", err)
		} else if cfg.Caches.BuilderMode == builderEphemeral && len(es) != 1 {
			p.fail("buildkit-addr", errors.New("builder-mode ephemeral takes one buildkitd address (the one the cleanup prunes); its builds run on buildkitds of their own"))
		}
	} else {
		if cfg.Managed.Binary == "" {
			p.fail("buildkitd-binary", errors.New("must not be empty when buildkit-addr is"))
		}
		if cfg.Managed.StartTimeout <= 0 {
			p.fail("buildkitd-start-timeout", errors.New("must be positive"))
		}
	}
	return cfg, errors.Join(p.errs...)
}

// parser parses settings, collecting errors.
type parser struct {
	s    map[string]setting
	errs []error
}

func (p *parser) fail(name string, err error) {
	s := p.s[name]
	p.errs = append(p.errs, fmt.Errorf("%s %q (from %s): %w", name, s.value, s.source, err))
}

func (p *parser) str(name string) string { return strings.TrimSpace(p.s[name].value) }

func (p *parser) int(name string) int {
	n, err := strconv.Atoi(p.str(name))
	if err != nil {
		p.fail(name, errors.New("not an integer"))
	} else if n < 0 {
		p.fail(name, errors.New("must not be negative"))
	}
	return n
}

// namedDirs parses NAME=DIR,...
func (p *parser) namedDirs(name string) map[string]string {
	v := p.str(name)
	if v == "" {
		return nil
	}
	out := map[string]string{}
	for _, item := range strings.Split(v, ",") {
		k, dir, ok := strings.Cut(strings.TrimSpace(item), "=")
		if _, dup := out[k]; !ok || k == "" || dir == "" || dup || k == "none" {
			p.fail(name, fmt.Errorf("%q: want NAME=DIR, each NAME once and not \"none\"", item))
			return nil
		}
		out[k] = dir
	}
	return out
}

// ulimits parses NAME=SOFT[:HARD],... (HARD defaults to SOFT).
func (p *parser) ulimits(name string) []llb.Ulimit {
	var out []llb.Ulimit
	v := p.str(name)
	if v == "" {
		return nil
	}
	for _, item := range strings.Split(v, ",") {
		k, limits, ok := strings.Cut(strings.TrimSpace(item), "=")
		soft, hard, hasHard := strings.Cut(limits, ":")
		s, err1 := strconv.ParseInt(soft, 10, 64)
		h, err2 := s, error(nil)
		if hasHard {
			h, err2 = strconv.ParseInt(hard, 10, 64)
		}
		if !ok || !ulimitNames[k] || err1 != nil || err2 != nil || s < 0 || h < s {
			p.fail(name, fmt.Errorf("%q: want NAME=SOFT[:HARD] with NAME one of %s and 0 <= SOFT <= HARD", item, strings.Join(slices.Sorted(maps.Keys(ulimitNames)), ", ")))
			return nil
		}
		out = append(out, llb.Ulimit{Name: k, Soft: s, Hard: h})
	}
	return out
}

// ulimitNames are the limits BuildKit can set on a step.
var ulimitNames = map[string]bool{
	"core": true, "cpu": true, "data": true, "fsize": true, "locks": true, "memlock": true, "msgqueue": true,
	"nice": true, "nofile": true, "nproc": true, "rss": true, "rtprio": true, "rttime": true, "sigpending": true, "stack": true,
}

func (p *parser) bool(name string) bool {
	b, err := strconv.ParseBool(p.str(name))
	if err != nil {
		p.fail(name, errors.New("want true or false"))
	}
	return b
}

func (p *parser) duration(name string) time.Duration {
	v := p.str(name)
	if v == "0" {
		return 0
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		p.fail(name, errors.New(`want a duration such as "90s", "30m" or "336h"`))
	} else if d < 0 {
		p.fail(name, errors.New("must not be negative"))
	}
	return d
}

func (p *parser) size(name string) int64 {
	n, err := units.RAMInBytes(p.str(name))
	if err != nil {
		p.fail(name, errors.New(`want a size such as "20GB", "512MiB" or a byte count`))
	} else if n < 0 {
		p.fail(name, errors.New("must not be negative"))
	}
	return n
}

// printConfig writes the settings as a YAML config file, each value with a
// comment saying where it came from, secrets masked. file is the --config
// file, "" for none.
func printConfig(w io.Writer, s map[string]setting, file string) error {
	from := "no config file"
	if file != "" {
		from = "config file " + file
	}
	doc := &yaml.Node{Kind: yaml.MappingNode, HeadComment: "Effective configuration of buildsvc-server (" + from + ").\n" +
		"Precedence: flag > env var > file > default. Secrets are masked."}
	category := ""
	for _, o := range options {
		st := s[o.name]
		v := st.value
		if o.mask != nil {
			v = o.mask(v)
		}
		key := &yaml.Node{Kind: yaml.ScalarNode, Value: o.name}
		if o.category != category {
			category = o.category
			key.HeadComment = category
		}
		val := &yaml.Node{Kind: yaml.ScalarNode, Value: v, Tag: "!!str"}
		switch o.kind {
		case kInt:
			val.Tag = "!!int"
		case kBool:
			val.Tag = "!!bool"
		}
		val.LineComment = st.source
		if st.source == "default" && o.defText != "" {
			val.LineComment += " (" + o.defText + ")"
		}
		doc.Content = append(doc.Content, key, val)
	}
	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(doc); err != nil {
		return fmt.Errorf("print config: %w", err)
	}
	if err := enc.Close(); err != nil {
		return fmt.Errorf("print config: %w", err)
	}
	_, err := w.Write(buf.Bytes())
	return err
}

// masked replaces a secret in --print-config.
const masked = "xxxxx"

// maskURLPasswords hides the password of every URL in a GOPROXY-style list
// (URLs separated by "," or "|"), or the user name of one that has no
// password (a token).
func maskURLPasswords(v string) string {
	var b strings.Builder
	start := 0
	for i := 0; i <= len(v); i++ {
		if i < len(v) && v[i] != ',' && v[i] != '|' {
			continue
		}
		part := v[start:i]
		if u, err := url.Parse(part); err == nil && u.User != nil {
			if _, has := u.User.Password(); has {
				u.User = url.UserPassword(u.User.Username(), masked)
			} else { // a user name alone is often a token
				u.User = url.User(masked)
			}
			part = u.String()
		}
		b.WriteString(part)
		if i < len(v) {
			b.WriteByte(v[i])
		}
		start = i + 1
	}
	return b.String()
}

// fmtDuration writes d as a config value: "30m" rather than "30m0s".
func fmtDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = s[:len(s)-2]
	}
	if strings.HasSuffix(s, "h0m") {
		s = s[:len(s)-2]
	}
	return s
}
