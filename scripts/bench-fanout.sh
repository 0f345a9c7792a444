#!/usr/bin/env bash
# Fan-out benchmark (issue 9, point 5): 1,000 WatchBuild streams of one
# build (FANOUT_WATCHERS, over FANOUT_CONNS connections) get every event
# exactly once and in order, with p99 delivery latency under 50 ms and the
# server's RSS under 150 MiB. The watchers are a separate process
# (tools/fanout); the server is a buildsvc-server of this benchmark's own,
# started here on the stack's buildkitd and registry (its own data dir, a
# free port, no TLS or callers), so that its RSS is the benchmark's alone.
#
# The build is testdata/sampleapp on a new commit of fanout.git (served by
# the stack's git daemon) with go build -x -a: every package rebuilt and
# every command printed, many events for a while. The goals are printed,
# never enforced; the exit status is non-zero only if a watcher missed or
# duplicated an event (a bug) or the benchmark could not run.
#
# Runs on its own (bash scripts/bench-fanout.sh) and at the end of
# scripts/bench.sh. Environment: FANOUT_WATCHERS (1000), FANOUT_CONNS (10),
# FANOUT_BUILD_FLAGS (-x,-a), FANOUT_PORT (first free from 17170),
# FANOUT_PPROF=1 to build the server with net/http/pprof (a file added by
# go build -overlay; the tree is not changed) and keep a 30 s CPU profile
# and a heap profile of the run in .stack/bench-fanout/, FANOUT_NICE=N
# to run the server and the watchers at nice N (e.g. -10: a diagnosis of
# how much of the latency is the CPU taken by the build and whatever else
# runs on the machine).
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

WATCHERS="${FANOUT_WATCHERS:-1000}"
CONNS="${FANOUT_CONNS:-10}"
FLAGS="${FANOUT_BUILD_FLAGS:--x,-a}"

bash "$ROOT/scripts/up.sh" >/dev/null
bash "$ROOT/scripts/images.sh" >/dev/null
load_env
require_go

WORK="$STACK/bench-fanout"
BARE="$GIT_BASE_DIR/fanout.git"
CLONE="$WORK/repo"
SRV_DIR="$WORK/server"
SRV_LOG="$WORK/server.log"
SRV_PID="$WORK/server.pid"
SRV_BIN="$WORK/buildsvc-server"
FANOUT_BIN="$WORK/fanout"
rm -rf "$CLONE"
mkdir -p "$WORK" "$SRV_DIR"

log "building the server and tools/fanout"
overlay=()
if [[ ${FANOUT_PPROF:-} == 1 ]]; then
	cat >"$WORK/pprof.go" <<'GO'
package main

import (
	"net/http"
	_ "net/http/pprof" // the profiling handlers, on http.DefaultServeMux
	"os"
)

func init() {
	if addr := os.Getenv("FANOUT_PPROF_ADDR"); addr != "" {
		go func() { _ = http.ListenAndServe(addr, nil) }()
	}
}
GO
	printf '{"Replace": {"%s": "%s"}}\n' "$ROOT/cmd/server/zz_fanout_pprof.go" "$WORK/pprof.go" >"$WORK/overlay.json"
	overlay=(-overlay "$WORK/overlay.json")
fi
(cd "$ROOT" && go build "${overlay[@]}" -o "$SRV_BIN" ./cmd/server)
(cd "$ROOT/tools/fanout" && go build -o "$FANOUT_BIN" .)

# ---------------------------------------------------------------- the repo
export GIT_AUTHOR_NAME="buildsvc-bench" GIT_AUTHOR_EMAIL="bench@example.com" \
	GIT_COMMITTER_NAME="buildsvc-bench" GIT_COMMITTER_EMAIL="bench@example.com" \
	GIT_CONFIG_NOSYSTEM=1 GIT_CONFIG_GLOBAL=/dev/null
[[ -d $BARE ]] || git init -q --bare -b main "$BARE"
git init -q -b main "$CLONE"
if git -C "$BARE" rev-parse -q --verify refs/heads/main >/dev/null; then
	git -C "$CLONE" fetch -q "$BARE" main
	git -C "$CLONE" reset -q --hard FETCH_HEAD
else
	cp -a "$ROOT/testdata/sampleapp/." "$CLONE/"
	git -C "$CLONE" add -A
	git -C "$CLONE" -c commit.gpgsign=false commit -q -m "fanout: sampleapp"
fi
# A new commit, so that the build is not joined to or answered by an
# earlier one.
n="$(date +%s%N)"
printf 'package main\n\n// fanoutRevision changes with every fan-out benchmark commit.\nvar fanoutRevision = "%s"\n\nfunc init() { _ = fanoutRevision }\n' "$n" >"$CLONE/fanout.go"
git -C "$CLONE" add fanout.go
git -C "$CLONE" -c commit.gpgsign=false commit -q -m "fanout $n"
git -C "$CLONE" push -q "$BARE" main:main
SHA="$(git -C "$CLONE" rev-parse HEAD)"

# ---------------------------------------------------------------- the server
PORT="${FANOUT_PORT:-17170}"
while tcp_open "$PORT"; do
	[[ -z ${FANOUT_PORT:-} ]] || die "FANOUT_PORT=$PORT is in use"
	PORT=$((PORT + 1))
done
ADDR="127.0.0.1:$PORT"
git_port="${GIT_BASE_URL##*:}"
PPROF_PORT=$((PORT + 1))
while tcp_open "$PPROF_PORT"; do PPROF_PORT=$((PPROF_PORT + 1)); done
stop_server() { stop_pid fanout-server "$SRV_PID" "$SRV_BIN" 20; }
trap stop_server EXIT
NICE=(nice -n "${FANOUT_NICE:-0}")
FANOUT_PPROF_ADDR="127.0.0.1:$PPROF_PORT" start_bg_exe fanout-server "$SRV_PID" "$SRV_LOG" "$SRV_BIN" \
	"${NICE[@]}" "$SRV_BIN" --listen "$ADDR" --buildkit-addr "$BUILDKIT_ADDR" \
	--docker-config "$DOCKER_CONFIG" --builder-image "$BUILDER_IMAGE" --base-image "$BASE_IMAGE" \
	--goproxy "$(go env GOPROXY)" --allow-insecure-git --data-dir "$SRV_DIR" \
	--allow-loopback-hosts --allowed-ports "$git_port" --build-user 65534:65534
wait_until fanout-server 30 "$SRV_PID" "$SRV_BIN" "$SRV_LOG" tcp_open "$PORT"

# ---------------------------------------------------------------- the run
log "fan-out: $WATCHERS watchers over $CONNS connections of one build ($FLAGS) of $SHA"
if [[ ${FANOUT_PPROF:-} == 1 ]]; then
	# Once the watchers are attached and the build runs: 30 s of CPU.
	(
		sleep 15
		curl -sf -o "$WORK/cpu.pprof" "http://127.0.0.1:$PPROF_PORT/debug/pprof/profile?seconds=30" &&
			curl -sf -o "$WORK/heap.pprof" "http://127.0.0.1:$PPROF_PORT/debug/pprof/heap"
	) &
	pprof_job=$!
fi
rc=0
"${NICE[@]}" "$FANOUT_BIN" -addr "$ADDR" -watchers "$WATCHERS" -conns "$CONNS" \
	-repo "$GIT_BASE_URL/fanout.git" -commit "$SHA" -tag "$REGISTRY_ADDR/bench/fanout:latest" \
	-build-flags "$FLAGS" -server-pid "$(cat "$SRV_PID")" || rc=$?
if [[ ${FANOUT_PPROF:-} == 1 ]]; then
	if wait "$pprof_job"; then
		printf '  profiles: go tool pprof -top %s %s (and %s)\n' "$SRV_BIN" "$WORK/cpu.pprof" "$WORK/heap.pprof"
	else
		warn "no profile (the build ended before 45 s?)"
	fi
fi
cores="$(nproc)"
printf '  machine: %s, %s CPU cores shared by the server, buildkitd, the build and the %s watchers\n' \
	"$(uname -m)" "$cores" "$WATCHERS"
printf '  server log: %s\n' "$SRV_LOG"
exit "$rc"
