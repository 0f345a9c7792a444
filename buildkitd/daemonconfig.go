package buildkitd

import (
	"fmt"
	"os"

	"github.com/pelletier/go-toml/v2"
)

// DaemonConfig is the part of a buildkitd.toml that a Supervisor needs to
// know: where the daemon keeps its state and where it listens.
type DaemonConfig struct {
	// Root is the file's `root`, empty when it sets none.
	Root string
	// Addresses is the file's `[grpc] address`, empty when it sets none.
	Addresses []string
}

// LoadDaemonConfig reads root and [grpc] address from the buildkitd.toml at
// path. Other keys are left to buildkitd, which reads the file itself.
func LoadDaemonConfig(path string) (DaemonConfig, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return DaemonConfig{}, fmt.Errorf("read buildkitd config: %w", err)
	}
	var f struct {
		Root string `toml:"root"`
		GRPC struct {
			Address []string `toml:"address"`
		} `toml:"grpc"`
	}
	if err := toml.Unmarshal(b, &f); err != nil {
		return DaemonConfig{}, fmt.Errorf("parse buildkitd config %s: %w", path, err)
	}
	return DaemonConfig{Root: f.Root, Addresses: f.GRPC.Address}, nil
}
