// Command checkconfig validates buildkitd.toml files against the config
// structs of the pinned BuildKit version. buildkitd itself ignores unknown
// keys, so a misspelt field (e.g. "maxUsedSpaces") would silently fall back
// to a default; this tool rejects it. It then applies buildkitd's own loader
// and prints the fields the local stack depends on.
//
//	checkconfig FILE...
package main

import (
	"bytes"
	"errors"
	"fmt"
	"os"

	"github.com/moby/buildkit/cmd/buildkitd/config"
	"github.com/pelletier/go-toml/v2"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: checkconfig FILE...")
		os.Exit(2)
	}
	failed := false
	for _, p := range os.Args[1:] {
		if err := check(p); err != nil {
			fmt.Fprintf(os.Stderr, "%s: %v\n", p, err)
			failed = true
		}
	}
	if failed {
		os.Exit(1)
	}
}

func check(path string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	var strict config.Config
	dec := toml.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&strict); err != nil {
		var sm *toml.StrictMissingError
		if errors.As(err, &sm) {
			return fmt.Errorf("unknown keys:\n%s", sm.String())
		}
		var de *toml.DecodeError
		if errors.As(err, &de) {
			return fmt.Errorf("%s", de.String())
		}
		return err
	}
	cfg, err := config.Load(bytes.NewReader(b))
	if err != nil {
		return err
	}
	oci := cfg.Workers.OCI
	if oci.Enabled == nil || !*oci.Enabled {
		return errors.New("worker.oci is not enabled")
	}
	if c := cfg.Workers.Containerd.Enabled; c == nil || *c {
		return errors.New("worker.containerd must be disabled explicitly")
	}
	if len(cfg.GRPC.Address) == 0 {
		return errors.New("grpc.address is empty")
	}
	gc := oci.GC != nil && *oci.GC
	fmt.Printf("%s: ok: root=%s grpc=%v snapshotter=%s gc=%v gcpolicies=%d max-parallelism=%d registries=%d\n",
		path, cfg.Root, cfg.GRPC.Address, oci.Snapshotter, gc, len(oci.GCPolicy), oci.MaxParallelism, len(cfg.Registries))
	return nil
}
