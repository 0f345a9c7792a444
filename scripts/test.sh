#!/usr/bin/env bash
# Every test: static checks and unit tests (no daemons), then the integration
# tests against the real local stack (started if needed, left running so a
# rerun is fast; `make down` stops it).
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
require_go
cd "$ROOT"

# buf takes a few minutes to build the first time: build it while the
# unit tests run (into a directory of its own; lint-proto.sh records it).
buf_log="$LOGS/buf-install.log"
mkdir -p "$LOGS"
buf_pid=""
if [[ ! -x $BIN/buf || "$(stamp_get buf)" != "$BUF_VERSION" ]]; then
	log "building buf $BUF_VERSION in the background"
	rm -rf "$BIN/.buf"
	GOBIN="$BIN/.buf" go install "github.com/bufbuild/buf/cmd/buf@$BUF_VERSION" >"$buf_log" 2>&1 &
	buf_pid=$!
fi

# The stack (its tools built, its daemons started, the images
# bootstrapped, the packages the integration tests need installed) comes
# up in the background while the static checks, the unit tests and the
# fuzzing run: much of it waits on processes and disks, not the CPU.
stack_log="$LOGS/stack-up.log"
log "starting the stack in the background (log: $stack_log)"
(
	bash "$ROOT/scripts/up.sh"
	bash "$ROOT/scripts/images.sh"
	# The multi-platform test runs the arm64 binary it builds under qemu;
	# the web page's tests drive Debian's headless Chromium.
	ensure_apt qemu-user-static chromium fonts-liberation
) >"$stack_log" 2>&1 &
stack_pid=$!

log "go vet ./..."
go vet ./...

log "tools/buildkit: go vet, deploy/buildkitd.toml check"
(cd tools/buildkit && go vet ./cmd/... && go run ./cmd/checkconfig "$ROOT/deploy/buildkitd.toml")
log "tools/bench, tools/fanout (the benchmarks' own modules): go vet, unit tests"
(cd tools/bench && go vet ./... && go test ./...)
(cd tools/fanout && go vet ./... && go test ./...)

log "unit tests: go test ./..."
t0=$SECONDS
cover="$LOGS/unit-cover.out"
go test -timeout 5m -coverprofile="$cover" ./...
log "unit tests took $((SECONDS - t0))s"
# The server package's unit coverage (its lifecycle runs on a fake BuildKit
# client; see docs/testing.md), from its own blocks of the profile.
server_cover_min=70
server_cover="$LOGS/server-unit-cover.out"
{ head -n 1 "$cover"; grep -E "^$(go list -m)/server/[^/]+:" "$cover"; } >"$server_cover"
server_pct=$(go tool cover -func="$server_cover" | awk '$1 == "total:" { sub("%", "", $NF); print $NF }')
if awk -v p="$server_pct" -v min="$server_cover_min" 'BEGIN { exit !(p >= min) }'; then
	log "server unit coverage: $server_pct%"
else
	die "server unit coverage: $server_pct%, below the floor of $server_cover_min%"
fi
bash "$ROOT/scripts/fuzz.sh"

if [[ -n $buf_pid ]]; then
	wait "$buf_pid" || { cat "$buf_log"; die "building buf failed"; }
	mv -f "$BIN/.buf/buf" "$BIN/buf"
	stamp_set buf "$BUF_VERSION"
fi
bash "$ROOT/scripts/lint-proto.sh"

log "waiting for the stack"
stack_rc=0
wait "$stack_pid" || stack_rc=$?
cat "$stack_log" >&2
((stack_rc == 0)) || die "starting the stack failed (exit $stack_rc; its log is above and in $stack_log)"

if [[ ! -d $ROOT/integration ]]; then
	log "integration/ does not exist yet: skipping the integration tests"
	exit 0
fi

load_env
export STACK_DIR BUILD_SERVER_ADDR WEB_ADDR WEB_URL BUILDKIT_ADDR REGISTRY_ADDR REGISTRY_USER REGISTRY_PASSWORD_FILE \
	DOCKER_CONFIG GIT_BASE_URL GIT_BASE_DIR BUILDER_IMAGE BASE_IMAGE DATABASE_URL
# The packages with integration tests of their own: the offline bootstrap
# (on the stack's buildkitd and registry), the ephemeral buildkitd
# launcher (the stack's buildkitd binary, config and CA bundle) and the
# history's PostgreSQL store (the stack's PostgreSQL, DATABASE_URL).
export BUILDKITD_BIN="$BIN/buildkitd" BUILDKITD_CONFIG="$STACK_DIR/buildkitd.toml" \
	BUILDKITD_CA_BUNDLE="$STACK_DIR/buildkit-ca-bundle.crt" BUILDKITD_TEST_IMAGE="$BUILDER_IMAGE"
log "integration tests: go test -tags integration ./integration/... ./bootstrap/ ./buildkitd/ ./history/ ./sharedqueue/"
rc=0
go test -tags integration -count=1 -timeout 40m ./integration/... ./bootstrap/ ./buildkitd/ ./history/ ./sharedqueue/ || rc=$?
if ((rc != 0)); then
	for f in "$LOGS/buildkitd.log" "$LOGS/server.log" "$LOGS/postgres.log"; do
		printf '\n===== last 200 lines of %s =====\n' "$f"
		tail -n 200 "$f" 2>/dev/null || echo "(missing)"
	done
	die "integration tests failed (exit $rc); the stack is left running for inspection"
fi
