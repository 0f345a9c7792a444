//go:build tools

// Package tools pins the BuildKit daemon and CLI that scripts/up.sh builds
// into .stack/bin. It is a module of its own so that BuildKit's server-side
// dependencies never enter the main module's go.mod, and because
// `go install github.com/moby/buildkit/cmd/buildkitd@version` is refused
// (BuildKit's go.mod has exclude directives).
//
// Build (what scripts/up.sh does):
//
//	go build -ldflags "-X github.com/moby/buildkit/version.Version=v0.34.2" \
//	    -o ../../.stack/bin/buildkitd github.com/moby/buildkit/cmd/buildkitd
package tools

import (
	_ "github.com/moby/buildkit/cmd/buildctl"
	_ "github.com/moby/buildkit/cmd/buildkitd"
)
