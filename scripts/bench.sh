#!/usr/bin/env bash
# Warm rebuild benchmark on the local stack: the build service (`buildsvc
# build`) against a hand-written multi-stage Dockerfile built by `buildctl`
# on the same buildkitd, from the same git repository, pushing to the same
# registry.
#
# The repository is testdata/sampleapp served as git://.../bench.git. One
# warm-up build each fills the module and build caches; then every measured
# build is of a NEW commit (pushed to the bare repo) whose dependencies are
# already cached, which is the common case for a CI image build. The two
# paths alternate, each on its own new commit. Medians of BENCH_RUNS (3).
#
# Cache sharing: the Dockerfile's cache mounts have their own ids (the
# frontend derives them from the targets), so the two paths do not share a
# cache; each is warmed by its own warm-up build.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

RUNS="${BENCH_RUNS:-3}"
bash "$ROOT/scripts/up.sh" >/dev/null
bash "$ROOT/scripts/images.sh"
load_env
[[ -x $BIN/buildsvc ]] || die "$BIN/buildsvc is missing (scripts/up.sh builds it)"

WORK="$STACK/bench"
BARE="$GIT_BASE_DIR/bench.git"
CLONE="$WORK/repo"
DF_DIR="$WORK/dockerfile"
LOGDIR="$WORK/logs"
rm -rf "$CLONE" "$LOGDIR"
mkdir -p "$WORK" "$DF_DIR" "$LOGDIR"

export GIT_AUTHOR_NAME="buildsvc-bench" GIT_AUTHOR_EMAIL="bench@example.com" \
	GIT_COMMITTER_NAME="buildsvc-bench" GIT_COMMITTER_EMAIL="bench@example.com"

# The bench repo: created from the sample app once, then one commit per build.
if [[ ! -d $BARE ]]; then
	git init -q --bare -b main "$BARE"
fi
git init -q -b main "$CLONE"
if git -C "$BARE" rev-parse -q --verify refs/heads/main >/dev/null; then
	git -C "$CLONE" fetch -q "$BARE" main
	git -C "$CLONE" reset -q --hard FETCH_HEAD
else
	cp -a "$ROOT/testdata/sampleapp/." "$CLONE/"
	git -C "$CLONE" add -A
	git -C "$CLONE" -c commit.gpgsign=false commit -q -m "bench: sampleapp"
	git -C "$CLONE" push -q "$BARE" main:main
fi

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

cat >"$DF_DIR/Dockerfile" <<'EOF'
# Hand-written equivalent of what the build service does, for comparison.
ARG BUILDER_IMAGE
ARG BASE_IMAGE
FROM ${BUILDER_IMAGE} AS build
ARG GOPROXY
ENV HOME=/root GOPATH=/go GOMODCACHE=/go/pkg/mod GOCACHE=/root/.cache/go-build \
    CGO_ENABLED=0 GOTOOLCHAIN=local GOPROXY=${GOPROXY}
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/go/pkg/mod \
    --mount=type=cache,target=/root/.cache/go-build \
    go build -trimpath -o /out/app .

FROM ${BASE_IMAGE}
COPY --from=build /out/app /usr/local/bin/app
ENTRYPOINT ["/usr/local/bin/app"]
EOF

GOPROXY_VALUE="$(go env GOPROXY)"
SVC_TAG="$REGISTRY_ADDR/bench/service:latest"
DF_TAG="$REGISTRY_ADDR/bench/dockerfile:latest"

# now: seconds since the epoch with nanoseconds.
now() { date +%s.%N; }

# build_service SHA LOG: one build through the build service.
build_service() {
	"$BIN/buildsvc" build --server "$BUILD_SERVER_ADDR" --repo "$GIT_BASE_URL/bench.git" \
		--commit "$1" --tag "$SVC_TAG" >"$2" 2>&1
}

# build_dockerfile SHA LOG: the same commit through buildctl + Dockerfile.
build_dockerfile() {
	"$BIN/buildctl" --addr "$BUILDKIT_ADDR" build --progress=plain \
		--frontend dockerfile.v0 \
		--opt "context=$GIT_BASE_URL/bench.git#$1" \
		--local "dockerfile=$DF_DIR" --opt dockerfilekey=dockerfile \
		--opt "build-arg:BUILDER_IMAGE=$BUILDER_IMAGE" \
		--opt "build-arg:BASE_IMAGE=$BASE_IMAGE" \
		--opt "build-arg:GOPROXY=$GOPROXY_VALUE" \
		--output "type=image,name=$DF_TAG,push=true" >"$2" 2>&1
}

# timed KIND N: build a new commit with KIND, print the seconds it took.
timed() {
	local kind="$1" n="$2" sha t0 t1 logf
	sha="$(new_commit)"
	logf="$LOGDIR/$kind-$n.log"
	t0="$(now)"
	"build_$kind" "$sha" "$logf" || {
		tail -n 40 "$logf" >&2
		die "$kind build of $sha failed (log: $logf)"
	}
	t1="$(now)"
	awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f\n", b - a }'
}

median() { printf '%s\n' "$@" | sort -n | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else printf "%.3f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

log "warm-up: one build each (fills the module and build caches)"
w_svc="$(timed service warmup)"
w_df="$(timed dockerfile warmup)"
log "warm-up took: service ${w_svc}s, dockerfile ${w_df}s"

svc=() df=()
for ((i = 1; i <= RUNS; i++)); do
	svc+=("$(timed service "$i")")
	df+=("$(timed dockerfile "$i")")
	log "run $i: service ${svc[-1]}s, dockerfile ${df[-1]}s"
done

m_svc="$(median "${svc[@]}")"
m_df="$(median "${df[@]}")"
ratio="$(awk -v a="$m_svc" -v b="$m_df" 'BEGIN { printf "%.2f", a / b }')"
cat <<EOF

Warm rebuild of a new commit ($GIT_BASE_URL/bench.git, deps cached), median of $RUNS:
  build service (buildsvc build)     ${m_svc}s   runs: ${svc[*]}
  Dockerfile (buildctl, dockerfile.v0) ${m_df}s   runs: ${df[*]}
  ratio service/dockerfile           ${ratio}
Logs: $LOGDIR
EOF
