// Package buildkitd connects to a BuildKit daemon and gives it the
// registry credentials it needs, without the daemon ever storing them. It
// also runs daemons: a Supervisor keeps one managed buildkitd running
// (restarting it when it exits), a Monitor watches a daemon's health, and a
// Launcher starts throw-away ones, one per build, and removes every trace
// of each when it is closed.
package buildkitd

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/docker/cli/cli/config"
	"github.com/docker/cli/cli/config/configfile"
	"github.com/moby/buildkit/client"
	"github.com/moby/buildkit/session"
	"github.com/moby/buildkit/session/auth/authprovider"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
)

// Endpoint says where a buildkitd listens and how to reach it.
type Endpoint struct {
	// Address is unix:///path/to/buildkitd.sock or tcp://host:port.
	Address string
	// CACert is a PEM file that signs the daemon's certificate (tcp only).
	CACert string
	// Cert and Key are the client's PEM certificate and key for mTLS (tcp only).
	Cert string
	Key  string
	// ServerName overrides the name checked in the daemon's certificate.
	ServerName string
}

// Validate reports an endpoint that can never work.
func (e Endpoint) Validate() error {
	switch {
	case e.Address == "":
		return errors.New("buildkitd address is empty")
	case strings.HasPrefix(e.Address, "unix://"):
		if e.CACert != "" || e.Cert != "" || e.Key != "" {
			return errors.New("TLS files are only used with a tcp:// buildkitd address")
		}
	case strings.HasPrefix(e.Address, "tcp://"):
	default:
		return fmt.Errorf("buildkitd address %q: want unix:// or tcp://", e.Address)
	}
	if (e.Cert == "") != (e.Key == "") {
		return errors.New("buildkitd client certificate and key must be given together")
	}
	return nil
}

// reconnect paces gRPC's reconnection to buildkitd. buildkitd may be
// restarted at any time (it holds nothing but cache, and a managed one is
// restarted by its Supervisor); with gRPC's defaults the wait between
// connection attempts grows to two minutes, so a client could stay
// disconnected long after the daemon is back. The attempts are cheap (a
// unix socket or one TCP dial), so they are capped at one second.
var reconnect = grpc.ConnectParams{
	Backoff:           backoff.Config{BaseDelay: 100 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: time.Second},
	MinConnectTimeout: 20 * time.Second,
}

// Dial connects to the daemon. The connection is lazy: an unreachable daemon
// shows up on the first call, not here. After the daemon restarts, the
// client reconnects within about a second.
func Dial(ctx context.Context, e Endpoint) (*client.Client, error) {
	if err := e.Validate(); err != nil {
		return nil, err
	}
	opts := []client.ClientOpt{client.WithGRPCDialOption(grpc.WithConnectParams(reconnect))}
	if e.CACert != "" {
		opts = append(opts, client.WithServerConfig(e.ServerName, e.CACert))
	}
	if e.Cert != "" {
		opts = append(opts, client.WithCredentials(e.Cert, e.Key))
	}
	c, err := client.New(ctx, e.Address, opts...)
	if err != nil {
		return nil, fmt.Errorf("connect to buildkitd at %s: %w", e.Address, err)
	}
	return c, nil
}

// DockerAuth returns a session attachable that answers the daemon's
// credential requests (for pulls and pushes) from the docker config.json in
// dir, including its credential helpers. An empty dir means the default
// docker config location ($DOCKER_CONFIG or ~/.docker).
func DockerAuth(dir string) (session.Attachable, error) {
	cfg, err := LoadDockerConfig(dir)
	if err != nil {
		return nil, err
	}
	return DockerAuthFrom(cfg), nil
}

// DockerAuthFrom is DockerAuth for a docker config already loaded.
func DockerAuthFrom(cfg *configfile.ConfigFile) session.Attachable {
	return authprovider.NewDockerAuthProvider(authprovider.DockerAuthProviderConfig{
		AuthConfigProvider: authprovider.LoadAuthConfig(cfg),
	})
}

// LoadDockerConfig reads the docker config.json in dir (or the default
// location when dir is empty). A missing file is an empty config.
func LoadDockerConfig(dir string) (*configfile.ConfigFile, error) {
	if dir == "" {
		dir = config.Dir()
	}
	cfg, err := config.Load(dir)
	if err != nil {
		return nil, fmt.Errorf("load docker config from %s: %w", dir, err)
	}
	return cfg, nil
}

// Secrets returns every password and token stored inline in a docker config,
// so that callers can make sure none of them ever leaves in a message.
func Secrets(cfg *configfile.ConfigFile) []string {
	var out []string
	for _, a := range cfg.GetAuthConfigs() {
		for _, s := range []string{a.Password, a.IdentityToken, a.RegistryToken, a.Auth} {
			if s != "" {
				out = append(out, s)
			}
		}
	}
	return out
}
