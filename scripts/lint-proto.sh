#!/usr/bin/env bash
# buf lint (STANDARD) on the build.v1 API, with buf.yaml's documented
# exceptions. buf is built from source at a pinned version into .stack/bin.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
require_go
cd "$ROOT"
ensure_bin buf "$BUF_VERSION" env GOBIN="$BIN" go install "github.com/bufbuild/buf/cmd/buf@$BUF_VERSION"
log "buf lint (buf.yaml: STANDARD)"
"$BIN/buf" lint
