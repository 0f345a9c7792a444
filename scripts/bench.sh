#!/usr/bin/env bash
# `make bench`: the warm rebuild of a new commit, four ways, on generated
# repositories of three sizes, on the local stack:
#
#   service     a buildsvc-server this script starts (same buildkitd, same
#               registry as the stack's), driven by `buildsvc build -o json`
#   twoplat     the service, for linux/amd64 and linux/arm64 at once (an
#               index; goal: at most 1.6x the one-platform build)
#   ko          `ko build` (pinned, installed into .stack/bin) at its defaults
#   dockerfile  buildctl + dockerfile.v0 (a hand-written multi-stage
#               Dockerfile with cache mounts) on the same buildkitd
#   floor       host `go build -trimpath` + a tar of the binary + `crane
#               append` onto the base image, pushed to the same registry
#
# The repositories (tools/bench/cmd/genrepos, deterministic): small (a main
# package and 1 dependency module), medium (60 modules), large (250 modules
# and a main package of 400 functions). Their dependency modules are served
# by a module proxy of the bench's own on 127.0.0.1 (tools/bench/cmd/benchproxy);
# they are not in sum.golang.org, so every way runs with
# GONOSUMDB=bench.example (the go.sum files carry their real hashes).
#
# Each way builds each size once to warm its caches; then every measured
# build is of a NEW commit (a change to the main package, the dependencies
# unchanged), the ways interleaved (service, ko, dockerfile, floor, service,
# ...) so that the noise of a shared machine spreads over all of them.
# Medians of BENCH_RUNS (3). ko and the floor build from a local clone at the
# same commit; the service and the Dockerfile from the git daemon.
#
# Then 4 concurrent warm builds (4 new commits of the medium repository at
# once) through the service against the same 4 serially. The goals are
# printed next to the figures, never enforced. Then the history's stores:
# 100,000 events of one build appended to bbolt and to the stack's
# PostgreSQL, events per second of each. Then the worker pool's routing:
# Acquire+Release on a pool of 3 against a single endpoint (workers'
# BenchmarkAcquireRelease). Finally the fan-out benchmark
# (scripts/bench-fanout.sh) if it exists.
#
# BENCH_RUNS (3), BENCH_SIZES ("small medium large"), BENCH_SEED (1),
# BENCH_HISTORY (1; 0 skips the history stores), BENCH_POOL (1; 0 skips
# the worker pool routing).
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
# shellcheck source=scripts/private.sh
source "$(dirname "${BASH_SOURCE[0]}")/private.sh" # INTERNAL_CA, INTERNAL_CERT, BK_CA_BUNDLE

RUNS="${BENCH_RUNS:-3}"
SIZES="${BENCH_SIZES:-small medium large}"
SEED="${BENCH_SEED:-1}"
KO_VERSION="v0.19.1"
NOSUMDB="bench.example"
GOAL_KO="0.90" GOAL_FLOOR="1.05" GOAL_CONC="0.80"

bash "$ROOT/scripts/up.sh" >/dev/null
bash "$ROOT/scripts/images.sh"
load_env
# The bench's server has no TLS and no callers: the CLI must not use the
# stack's TLS settings and tokens.
unset BUILDSVC_TLS_CA BUILDSVC_TOKEN_FILE BUILDSVC_TLS_CERT BUILDSVC_TLS_KEY BUILDSVC_SERVER
[[ -x $BIN/buildsvc && -x $BIN/buildsvc-server && -x $BIN/buildctl ]] ||
	die "$BIN/buildsvc, buildsvc-server or buildctl is missing (scripts/up.sh builds them)"

ensure_bin ko "$KO_VERSION" env GOBIN="$BIN" go install "github.com/google/ko@$KO_VERSION"
ensure_bin crane "$CRANE_VERSION" env GOBIN="$BIN" go install "github.com/google/go-containerregistry/cmd/crane@$CRANE_VERSION"

WORK="$STACK/bench"
TOOLS="$WORK/tools"
GEN="$WORK/gen"
LOGDIR="$WORK/logs"
RESULTS="$WORK/results.txt"
mkdir -p "$WORK" "$TOOLS" "$WORK/run"
rm -rf "$LOGDIR" "$GEN"
mkdir -p "$LOGDIR"

log "building tools/bench"
(cd "$ROOT/tools/bench" && go build -o "$TOOLS/" ./cmd/...)
log "generating the repositories (seed $SEED)"
"$TOOLS/genrepos" -out "$GEN" -seed "$SEED"

export GIT_AUTHOR_NAME="buildsvc-bench" GIT_AUTHOR_EMAIL="bench@example.com" \
	GIT_COMMITTER_NAME="buildsvc-bench" GIT_COMMITTER_EMAIL="bench@example.com"

# ---------------------------------------------------------------- daemons
PROXY_PID="$WORK/run/proxy.pid"
BSRV_PID="$WORK/run/server.pid"
SSRV_PID="$WORK/run/server-stores.pid"
FSRV_PID="$WORK/run/server-fresh.pid"
cleanup() {
	stop_pid "bench server" "$BSRV_PID" "$BIN/buildsvc-server" 30 || true
	stop_pid "bench server (stores)" "$SSRV_PID" "$BIN/buildsvc-server" 30 || true
	stop_pid "bench server (fresh builders)" "$FSRV_PID" "$BIN/buildsvc-server" 30 || true
	stop_pid "bench proxy" "$PROXY_PID" "$TOOLS/benchproxy" 5 || true
}
trap cleanup EXIT
cleanup

rm -f "$WORK/run/proxy.url"
start_bg "bench proxy" "$PROXY_PID" "$LOGDIR/proxy.log" "$TOOLS/benchproxy" \
	-dir "$GEN/proxy" -url-file "$WORK/run/proxy.url"
wait_until "bench proxy" 10 "$PROXY_PID" "$TOOLS/benchproxy" "$LOGDIR/proxy.log" test -s "$WORK/run/proxy.url"
PROXY_URL="$(cat "$WORK/run/proxy.url")"

# free_port FROM: the first port from FROM on that nothing listens on.
free_port() {
	local p="$1"
	while tcp_open "$p"; do p=$((p + 1)); done
	echo "$p"
}
# start_server NAME PIDFILE PORT DATADIR [ARGS...]: a bench server like the
# stack's (scripts/up.sh) but with the bench proxy as GOPROXY and
# GONOSUMDB for its modules; its own data dir, no TLS. The proxy is on
# loopback: the download step reaches it like the integration tests'
# proxies (the build steps use the host's network); the loopback and port
# allowance is for the server's own connections to the git daemon.
start_server() {
	local name="$1" pidfile="$2" port="$3" data="$4"
	shift 4
	rm -rf "$data"
	start_bg "$name" "$pidfile" "$LOGDIR/$(basename "$data").log" "$BIN/buildsvc-server" \
		--listen "127.0.0.1:$port" --buildkit-addr "$BUILDKIT_ADDR" \
		--docker-config "$DOCKER_CONFIG_DIR" --builder-image "$BUILDER_IMAGE" --base-image "$BASE_IMAGE" \
		--goproxy "$PROXY_URL" --gonosumdb "$NOSUMDB" --allow-insecure-git --data-dir "$data" \
		--allow-loopback-hosts --allowed-ports "$GIT_PORT" --build-user 65534:65534 "$@"
	wait_until "$name" 30 "$pidfile" "$BIN/buildsvc-server" "$LOGDIR/$(basename "$data").log" tcp_open "$port"
}
# Ports of their own for the bench's servers (the stack's stay as they are).
BPORT="$(free_port $((SERVER_PORT + 20)))"
BSRV_ADDR="127.0.0.1:$BPORT"
start_server "bench server" "$BSRV_PID" "$BPORT" "$WORK/server"
# The same with the service's caches that outlive buildkitd: its module
# proxy (HTTPS with the stack's internal CA, which the download step trusts
# through --ca-bundle; upstream the bench proxy) and the build-cache store.
# "stores" builds on the long-lived buildkitd, "fresh" each build on a
# brand-new one (builder-mode ephemeral), after another fresh one built the
# parent commit: a warm fleet, a cold builder. Its server keeps one idle
# builder ready (the builder and base images pulled, nothing of a build);
# each fresh build waits, untimed, until one is.
stores_args() { # PORT
	echo --module-proxy-listen "127.0.0.1:$1" --module-proxy-url "https://localhost:$1" \
		--module-proxy-tls-cert "$INTERNAL_CERT" --module-proxy-tls-key "$INTERNAL_KEY" \
		--ca-bundle "$INTERNAL_CA" --build-cache-store
}
SPORT="$(free_port $((BPORT + 1)))"
SSRV_ADDR="127.0.0.1:$SPORT"
# shellcheck disable=SC2046 # stores_args prints words
start_server "bench server (stores)" "$SSRV_PID" "$SPORT" "$WORK/server-stores" $(stores_args "$(free_port $((SPORT + 10)))")
FPORT="$(free_port $((SPORT + 1)))"
FSRV_ADDR="127.0.0.1:$FPORT"
# shellcheck disable=SC2046
start_server "bench server (fresh builders)" "$FSRV_PID" "$FPORT" "$WORK/server-fresh" $(stores_args "$(free_port $((FPORT + 20)))") \
	--builder-mode ephemeral --buildkitd-binary "$BIN/buildkitd" --buildkitd-config "$STACK/buildkitd.toml" \
	--buildkitd-ca-bundle "$BK_CA_BUNDLE"

# ---------------------------------------------------------------- the ways
DF_DIR="$WORK/dockerfile"
mkdir -p "$DF_DIR"
cat >"$DF_DIR/Dockerfile" <<'EOF'
# Hand-written equivalent of what the build service does, for comparison.
ARG BUILDER_IMAGE
ARG BASE_IMAGE
FROM ${BUILDER_IMAGE} AS build
ARG GOPROXY
ARG GONOSUMDB
ENV HOME=/root GOPATH=/go GOMODCACHE=/go/pkg/mod GOCACHE=/root/.cache/go-build \
    CGO_ENABLED=0 GOTOOLCHAIN=local GOPROXY=${GOPROXY} GONOSUMDB=${GONOSUMDB}
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/go/pkg/mod \
    --mount=type=cache,target=/root/.cache/go-build \
    go build -trimpath -o /out/app .

FROM ${BASE_IMAGE}
COPY --from=build /out/app /usr/local/bin/app
ENTRYPOINT ["/usr/local/bin/app"]
EOF

# The host ways (ko, floor): the bench proxy, their own warm build caches, a
# shared module cache. ko and the floor build with CGO_ENABLED=0 and
# -trimpath, as the service does.
HOSTENV=(GOPROXY="$PROXY_URL" GONOSUMDB="$NOSUMDB" GOFLAGS="-buildvcs=false" GOMODCACHE="$WORK/gomodcache"
	CGO_ENABLED=0 GOTOOLCHAIN=local)

# now: seconds since the epoch with nanoseconds.
now() { date +%s.%N; }

# The current size's settings, set by setup_size.
SIZE="" BARE="" CLONE="" REPO_URL=""

# setup_size NAME: a fresh bare repo on the git daemon with the generated
# repository as its first commit, and a local clone.
setup_size() {
	SIZE="$1"
	BARE="$GIT_BASE_DIR/bench-$SIZE.git"
	CLONE="$WORK/$SIZE/repo"
	REPO_URL="$GIT_BASE_URL/bench-$SIZE.git"
	rm -rf "$BARE" "$CLONE"
	mkdir -p "$WORK/$SIZE"
	git init -q --bare -b main "$BARE"
	git init -q -b main "$CLONE"
	cp -a "$GEN/repos/$SIZE/." "$CLONE/"
	git -C "$CLONE" add -A
	git -C "$CLONE" -c commit.gpgsign=false commit -q -m "bench: generated $SIZE repository"
	git -C "$CLONE" push -q "$BARE" main:main
}

# new_commit: a commit that changes the main package (so `go build`
# recompiles and relinks it) with the dependencies unchanged; prints its sha.
new_commit() {
	local n
	n="$(date +%s%N)"
	printf 'package main\n\n// benchRevision changes with every benchmark commit.\nvar benchRevision = "%s"\n\nfunc init() { _ = benchRevision }\n' "$n" >"$CLONE/bench.go"
	git -C "$CLONE" add bench.go
	git -C "$CLONE" -c commit.gpgsign=false commit -q -m "bench $n"
	git -C "$CLONE" push -q "$BARE" main:main
	git -C "$CLONE" rev-parse HEAD
}

# build_service SHA LOG [TAG [ADDR]]: one build through the bench's server
# (or the one at ADDR); LOG gets the build's events (JSON lines) and the
# CLI's stderr.
build_service() {
	"$BIN/buildsvc" build --server "${4:-$BSRV_ADDR}" --repo "$REPO_URL" --commit "$1" \
		--tag "${3:-$REGISTRY_ADDR/bench/$SIZE-service:latest}" -o json --progress quiet >"$2" 2>"$2.stderr"
}

# build_twoplat SHA LOG: the same for linux/amd64 and linux/arm64 at once
# (an index of two images, both cross-compiled in one solve).
build_twoplat() {
	"$BIN/buildsvc" build --server "$BSRV_ADDR" --repo "$REPO_URL" --commit "$1" \
		--tag "$REGISTRY_ADDR/bench/$SIZE-twoplat:latest" --platform linux/amd64,linux/arm64 \
		-o json --progress quiet >"$2" 2>"$2.stderr"
}

# build_stores SHA LOG: the same through the server with the stores.
build_stores() { build_service "$1" "$2" "$REGISTRY_ADDR/bench/$SIZE-stores:latest" "$SSRV_ADDR"; }

# build_fresh SHA LOG: the same on a brand-new buildkitd.
build_fresh() { build_service "$1" "$2" "$REGISTRY_ADDR/bench/$SIZE-fresh:latest" "$FSRV_ADDR"; }

# usage_sum FIELD LOGS...: the sum of a CacheUsage field over the builds'
# results (protojson leaves out zeros); "none" if a result has no usage.
usage_sum() {
	local field="$1" f sum=0 v
	shift
	for f in "$@"; do
		grep -q '"cacheUsage"' "$f" || { echo none; return; }
		v="$(grep -o "\"$field\":\"[0-9]*\"" "$f" | grep -o '[0-9]*' | tail -n 1)"
		sum=$((sum + ${v:-0}))
	done
	echo "$sum"
}

# build_ko SHA LOG: ko build of the clone (at SHA) at ko's defaults.
build_ko() {
	[[ "$(git -C "$CLONE" rev-parse HEAD)" == "$1" ]] || die "the clone is not at $1"
	(cd "$CLONE" && env "${HOSTENV[@]}" GOCACHE="$WORK/gocache-ko" \
		KO_DOCKER_REPO="$REGISTRY_ADDR/bench/$SIZE-ko" KO_DEFAULTBASEIMAGE="$BASE_IMAGE" \
		"$BIN/ko" build --insecure-registry --bare .) >"$2" 2>&1
}

# build_dockerfile SHA LOG: the commit through buildctl + Dockerfile.
build_dockerfile() {
	"$BIN/buildctl" --addr "$BUILDKIT_ADDR" build --progress=plain \
		--frontend dockerfile.v0 \
		--opt "context=$REPO_URL#$1" \
		--local "dockerfile=$DF_DIR" --opt dockerfilekey=dockerfile \
		--opt "build-arg:BUILDER_IMAGE=$BUILDER_IMAGE" \
		--opt "build-arg:BASE_IMAGE=$BASE_IMAGE" \
		--opt "build-arg:GOPROXY=$PROXY_URL" \
		--opt "build-arg:GONOSUMDB=$NOSUMDB" \
		--output "type=image,name=$REGISTRY_ADDR/bench/$SIZE-dockerfile:latest,push=true" >"$2" 2>&1
}

# build_floor SHA LOG: host go build + tar + crane append onto the base.
build_floor() {
	local dir="$WORK/$SIZE/floor"
	[[ "$(git -C "$CLONE" rev-parse HEAD)" == "$1" ]] || die "the clone is not at $1"
	rm -rf "$dir" && mkdir -p "$dir/layer/usr/local/bin"
	{
		(cd "$CLONE" && env "${HOSTENV[@]}" GOCACHE="$WORK/gocache-floor" \
			go build -trimpath -o "$dir/layer/usr/local/bin/app" .) &&
			tar -C "$dir/layer" -cf "$dir/layer.tar" usr &&
			"$BIN/crane" append --insecure -b "$BASE_IMAGE" -f "$dir/layer.tar" \
				-t "$REGISTRY_ADDR/bench/$SIZE-floor:latest"
	} >"$2" 2>&1
}

# before_fresh: wait (untimed) until the fresh builders' server has an idle
# builder ready that no build took yet: what a pool sized for the build
# rate gives every build. After 5 minutes, the build starts its own.
before_fresh() {
	local i log="$LOGDIR/server-fresh.log" readyn taken
	for ((i = 0; i < 1200; i++)); do
		readyn="$(grep -c 'msg="idle builder ready"' "$log" || true)"
		taken="$(grep 'msg="builder ready"' "$log" | grep -c 'builder="ephemeral idle-' || true)"
		((readyn > taken)) && return 0
		sleep 0.25
	done
	warn "no idle builder after 5 minutes; the build starts its own"
}

# timed KIND N: build a new commit with KIND, print the seconds it took.
timed() {
	local kind="$1" n="$2" sha t0 t1 logf
	if declare -F "before_$kind" >/dev/null; then "before_$kind"; fi
	sha="$(new_commit)"
	logf="$LOGDIR/$SIZE-$kind-$n.log"
	t0="$(now)"
	"build_$kind" "$sha" "$logf" || {
		tail -n 40 "$logf" "$logf.stderr" >&2 2>/dev/null || true
		die "$kind build of $SIZE at $sha failed (log: $logf)"
	}
	t1="$(now)"
	awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f\n", b - a }'
	# The next idle builder is warmed (pulls, unpacks) before the next
	# way's build, not during it.
	if declare -F "before_$kind" >/dev/null; then "before_$kind"; fi
}

median() { printf '%s\n' "$@" | sort -n | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else printf "%.3f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
# goal RATIO MAX: "met" or "not met".
goal() { awk -v r="$1" -v g="$2" 'BEGIN { print (r <= g ? "met" : "not met") }'; }

WAYS=(service twoplat stores fresh ko dockerfile floor)
GOAL_FRESH="1.50" GOAL_STORES="1.05" GOAL_TWOPLAT="1.60"
: >"$RESULTS"
out() { printf '%s\n' "$*" | tee -a "$RESULTS"; }

out "buildsvc benchmark, $(date -u +%FT%TZ), commit $(git -C "$ROOT" rev-parse --short HEAD)$(git -C "$ROOT" diff --quiet HEAD -- llb server 2>/dev/null || echo ' (llb/ or server/ modified in the work tree)')"
out "machine: $(nproc) CPUs ($(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)), $(awk '/^MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo) memory, load $(cut -d' ' -f1-3 /proc/loadavg)"
out "ko $KO_VERSION (defaults: gzip layers, an SBOM), crane $CRANE_VERSION, $(go version | cut -d' ' -f3), median of $RUNS warm rebuilds of a new commit"

for size in $SIZES; do
	[[ -d $GEN/repos/$size ]] || die "no generated repository $size"
	setup_size "$size"
	log "$SIZE: warm-up, one build each way"
	for w in "${WAYS[@]}"; do
		t="$(timed "$w" warmup)"
		log "$SIZE warm-up $w: ${t}s"
	done
	declare -A times=()
	for ((i = 1; i <= RUNS; i++)); do
		line=""
		for w in "${WAYS[@]}"; do
			t="$(timed "$w" "$i")"
			times[$w]+="$t "
			line+=" $w ${t}s"
		done
		log "$SIZE run $i:$line"
	done
	declare -A med=()
	for w in "${WAYS[@]}"; do
		# shellcheck disable=SC2086 # the runs are words
		med[$w]="$(median ${times[$w]})"
	done
	r_ko="$(ratio "${med[service]}" "${med[ko]}")"
	r_floor="$(ratio "${med[service]}" "${med[floor]}")"
	svc_logs=()
	for ((i = 1; i <= RUNS; i++)); do svc_logs+=("$LOGDIR/$SIZE-service-$i.log"); done
	declare -A ph=()
	while read -r k v; do ph[$k]="$v"; done < <("$TOOLS/phases" "${svc_logs[@]}")
	out ""
	out "$(printf '%-19s %8s   %s' "$SIZE ($(grep -c '^bench.example.* h1:' "$GEN/repos/$SIZE/go.sum" | awk '{ print $1 / 2 }') mod.)" median "runs (s)")"
	for w in "${WAYS[@]}"; do
		out "$(printf '  %-17s %7.3fs   %s' "$w" "${med[$w]}" "${times[$w]}")"
	done
	out "$(printf '  %-17s %7s   goal <= %s: %s' service/ko "$r_ko" "$GOAL_KO" "$(goal "$r_ko" "$GOAL_KO")")"
	out "$(printf '  %-17s %7s   goal <= %s: %s' service/floor "$r_floor" "$GOAL_FLOOR" "$(goal "$r_floor" "$GOAL_FLOOR")")"
	out "$(printf '  service phases (medians, from its events): resolving %.3fs, queued %.3fs, building %.3fs (the go build step %.3fs), export+push %.3fs; first to last event %.3fs' \
		"${ph[resolving]}" "${ph[queued]}" "${ph[building]}" "${ph[gobuild]}" "${ph[pushing]}" "${ph[events]}")"
	r_twoplat="$(ratio "${med[twoplat]}" "${med[service]}")"
	out "$(printf '  %-17s %7s   goal <= %s (linux/amd64 and linux/arm64 against one platform): %s' twoplat/service "$r_twoplat" "$GOAL_TWOPLAT" "$(goal "$r_twoplat" "$GOAL_TWOPLAT")")"
	r_stores="$(ratio "${med[stores]}" "${med[service]}")"
	r_fresh="$(ratio "${med[fresh]}" "${med[service]}")"
	out "$(printf '  %-17s %7s   goal <= %s (the warm path with the stores is no slower): %s' stores/service "$r_stores" "$GOAL_STORES" "$(goal "$r_stores" "$GOAL_STORES")")"
	out "$(printf '  %-17s %7s   goal <= %s (a brand-new buildkitd, the fleet warm): %s' fresh/service "$r_fresh" "$GOAL_FRESH" "$(goal "$r_fresh" "$GOAL_FRESH")")"
	fresh_logs=()
	for ((i = 1; i <= RUNS; i++)); do fresh_logs+=("$LOGDIR/$SIZE-fresh-$i.log"); done
	declare -A fph=()
	while read -r k v; do fph[$k]="$v"; done < <("$TOOLS/phases" "${fresh_logs[@]}")
	out "$(printf '  fresh builders: building %.3fs (the go build step %.3fs), export+push %.3fs; module proxy: %s requests from its cache, %s fetched upstream; build-cache store: %s hits, %s misses' \
		"${fph[building]}" "${fph[gobuild]}" "${fph[pushing]}" \
		"$(usage_sum moduleHits "${fresh_logs[@]}")" "$(usage_sum moduleMisses "${fresh_logs[@]}")" \
		"$(usage_sum buildCacheHits "${fresh_logs[@]}")" "$(usage_sum buildCacheMisses "${fresh_logs[@]}")")"
	unset times med ph fph
done

# ---------------------------------------------------------------- concurrency
if [[ " $SIZES " == *" medium "* ]]; then
	setup_size medium
	log "concurrency: warm-up"
	t="$(timed service cwarmup)"
	shas=()
	for k in 1 2 3 4; do shas+=("$(new_commit)"); done
	log "concurrency: 4 builds at once"
	t0="$(now)"
	pids=()
	for k in 1 2 3 4; do
		build_service "${shas[k - 1]}" "$LOGDIR/conc-$k.log" "$REGISTRY_ADDR/bench/medium-conc$k:latest" &
		pids+=($!)
	done
	for p in "${pids[@]}"; do wait "$p" || die "a concurrent build failed (logs: $LOGDIR/conc-*.log)"; done
	t1="$(now)"
	conc="$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }')"
	log "concurrency: the same 4, one after another (new commits)"
	serial=0
	for k in 1 2 3 4; do
		t="$(timed service "serial$k")"
		serial="$(awk -v a="$serial" -v b="$t" 'BEGIN { printf "%.3f", a + b }')"
	done
	r_conc="$(ratio "$conc" "$serial")"
	out ""
	out "4 warm builds of the medium repository through the service: at once ${conc}s, one after another ${serial}s"
	out "$(printf '  %-17s %7s   goal <= %s: %s' concurrent/serial "$r_conc" "$GOAL_CONC" "$(goal "$r_conc" "$GOAL_CONC")")"
fi
# ---------------------------------------------------------------- history stores
# Not a build: the history's two stores appending 100,000 events of one
# build (batches of 50 of about 200 bytes, as the server writes a step's
# output), the two interleaved batch by batch, on the stack's PostgreSQL
# (DATABASE_URL from .stack/env): history's BenchmarkAppendEvents.
if [[ ${BENCH_HISTORY:-1} == 1 ]]; then
	log "history stores: 100,000 events of one build to bbolt and PostgreSQL"
	hist_log="$LOGDIR/history-append.log"
	(cd "$ROOT" && go test -tags integration -count=1 -run '^$' -bench '^BenchmarkAppendEvents$' -benchtime 1x ./history/) \
		>"$hist_log" 2>&1 || {
		tail -n 30 "$hist_log" >&2
		die "the history benchmark failed (log: $hist_log)"
	}
	out ""
	out "history stores, 100,000 events of one build in batches of 50 (about 200 bytes each), interleaved:"
	out "  $(grep -o 'bbolt [0-9]* events/s.*' "$hist_log" | tail -n 1)"
fi
# ---------------------------------------------------------------- worker pool routing
# Not a build either: what the pool of buildkitd workers adds to a build,
# workers' BenchmarkAcquireRelease (Acquire for the build's repository, out
# of 1000, then Release, on fake workers): a pool of 3 against a single
# endpoint, one build at a time and from every core at once. Goal: the
# difference under 10 ms per build.
if [[ ${BENCH_POOL:-1} == 1 ]]; then
	log "worker pool routing: Acquire+Release with 1 and 3 workers"
	pool_log="$LOGDIR/pool-routing.log"
	(cd "$ROOT" && go test -count=1 -run '^$' -bench '^BenchmarkAcquireRelease$' ./workers/) \
		>"$pool_log" 2>&1 || {
		tail -n 30 "$pool_log" >&2
		die "the worker pool benchmark failed (log: $pool_log)"
	}
	# pool_ns NAME: ns/op of sub-benchmark NAME (workers=1, parallel/workers=3).
	pool_ns() {
		awk -v n="BenchmarkAcquireRelease/$1" '{ sub(/-[0-9]+$/, "", $1) } $1 == n { print $3; exit }' "$pool_log"
	}
	out ""
	out "worker pool routing per build (Acquire+Release, 1000 repositories, fake workers):"
	for mode in "" parallel/; do
		ns1="$(pool_ns "${mode}workers=1")" ns3="$(pool_ns "${mode}workers=3")"
		[[ -n $ns1 && -n $ns3 ]] || die "no ${mode}workers=1 or =3 figure in $pool_log"
		out "$(awk -v m="${mode:-serial/}" -v a="$ns1" -v b="$ns3" 'BEGIN {
			d = (b - a) / 1e6
			printf "  %-9s 1 worker %.0f ns, 3 workers %.0f ns (x%.2f): %.6f ms more   goal < 10 ms: %s",
				substr(m, 1, length(m) - 1), a, b, b / a, d, (d < 10 ? "met" : "not met")
		}')"
	done
fi
out ""
out "The machine is shared: the figures are noisy, which is why the ways interleave. Logs: $LOGDIR; this table: $RESULTS"

cleanup
trap - EXIT
if [[ -f $ROOT/scripts/bench-fanout.sh ]]; then
	bash "$ROOT/scripts/bench-fanout.sh"
fi
