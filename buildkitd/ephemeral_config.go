package buildkitd

import (
	"fmt"
	"path/filepath"

	"github.com/pelletier/go-toml/v2"
)

// Files a Launcher keeps in each instance's directory, besides SocketName,
// RootName and PidFileName.
const (
	// ConfigName is the instance's buildkitd.toml: the Launcher's base
	// config with root, [grpc] address and [otel] socketPath rewritten.
	ConfigName = "buildkitd.toml"
	// LogName is the instance's stdout and stderr.
	LogName = "buildkitd.log"
	// OtelSocketName is the instance's own OpenTelemetry socket. buildkitd
	// has no way to turn it off (an empty socketPath means the host-wide
	// /run/buildkit/otel-grpc.sock), so each instance gets one of its own.
	OtelSocketName = "otel.sock"
)

// instanceConfig rewrites the buildkitd.toml base (nil or empty for none)
// for an instance living in dir: its root is dir/RootName, it listens only
// on unix://dir/SocketName, its OpenTelemetry socket is dir/OtelSocketName,
// and it has no debug address (a TCP port that two instances would share).
// Everything else (workers, gc policy, registry mirrors, http and CA
// settings, history) is kept as it is.
func instanceConfig(base []byte, dir string) ([]byte, error) {
	doc := map[string]any{}
	if err := toml.Unmarshal(base, &doc); err != nil {
		return nil, fmt.Errorf("parse buildkitd config: %w", err)
	}
	doc["root"] = filepath.Join(dir, RootName)
	grpc, err := table(doc, "grpc")
	if err != nil {
		return nil, err
	}
	grpc["address"] = []any{"unix://" + filepath.Join(dir, SocketName)}
	delete(grpc, "debugAddress")
	otel, err := table(doc, "otel")
	if err != nil {
		return nil, err
	}
	otel["socketPath"] = filepath.Join(dir, OtelSocketName)
	out, err := toml.Marshal(doc)
	if err != nil {
		return nil, fmt.Errorf("write buildkitd config: %w", err)
	}
	return out, nil
}

// table returns doc's table key, adding an empty one when doc has none.
func table(doc map[string]any, key string) (map[string]any, error) {
	v, ok := doc[key]
	if !ok {
		t := map[string]any{}
		doc[key] = t
		return t, nil
	}
	t, ok := v.(map[string]any)
	if !ok {
		return nil, fmt.Errorf("buildkitd config: %s is a %T, want a table", key, v)
	}
	return t, nil
}
