#!/usr/bin/env bash
# The main job end to end: start the stack, make sure the builder/base images
# exist, build testdata/sampleapp (served as git://.../sample.git) into an
# image with the build service, then check the pushed image and run its
# binary on the host.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

bash "$ROOT/scripts/up.sh"
bash "$ROOT/scripts/images.sh"
load_env
ensure_apt jq

TAG="$REGISTRY_ADDR/demo/sample:latest"
log "building $GIT_BASE_URL/sample.git@main -> $TAG"
out="$(mktemp)"
progress="$(mktemp)"
tmp="$(mktemp -d)"
trap 'rm -rf "$out" "$progress" "$tmp"' EXIT
start=$(date +%s.%N)
# Progress goes to stderr (the terminal); the last stdout line is REF@sha256:...
"$BIN/buildsvc" build --server "$BUILD_SERVER_ADDR" --repo "$GIT_BASE_URL/sample.git" \
	--commit main --tag "$TAG" 2> >(tee "$progress" >&2) | tee "$out" || die "buildsvc build failed (server log: $LOGS/server.log)"
end=$(date +%s.%N)
ref="$(grep -v '^[[:space:]]*$' "$out" | tail -n 1)"
[[ $ref == *@sha256:* ]] || die "expected IMAGE@sha256:... as the last line of buildsvc build, got: $ref"
digest="${ref##*@}"

log "validating $ref"
# `crane validate` without --fast reads every layer as gzip
# (google/go-containerregistry#1826) and so refuses the service's zstd
# layers: it checks the manifest and config here, each layer's bytes are
# checked against its digest below, and `crane export` decompresses them all.
"$BIN/crane" validate --fast --remote "$ref" --insecure >&2
manifest="$("$BIN/crane" manifest --insecure "$ref")"
while read -r mt layer; do
	got="sha256:$("$BIN/crane" blob --insecure "${ref%@*}@$layer" | sha256sum | cut -d' ' -f1)"
	[[ $got == "$layer" ]] || die "layer $layer: its bytes hash to $got"
	log "layer $layer ($mt): digest checked"
done < <(jq -r '.layers[] | "\(.mediaType) \(.digest)"' <<<"$manifest")

log "unpacking and running the image's entrypoint"
"$BIN/crane" export --insecure "$ref" - | tar -x -C "$tmp"
config="$("$BIN/crane" config --insecure "$ref")"
mapfile -t entrypoint < <(jq -r '(.config.Entrypoint // []) + (.config.Cmd // []) | .[]' <<<"$config")
((${#entrypoint[@]} > 0)) || die "image has no entrypoint or cmd: $(jq -c .config <<<"$config")"
[[ ${entrypoint[0]} == /* ]] || die "entrypoint ${entrypoint[0]} is not an absolute path"
bin="$tmp${entrypoint[0]}"
[[ -x $bin ]] || die "entrypoint ${entrypoint[0]} is not an executable file in the image"
output="$("$bin" "${entrypoint[@]:1}")"

printf '\nbuilt in %ss: %s\n' "$(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.1f", b - a }')" "$ref"
printf 'digest: %s\n' "$digest"
printf 'entrypoint %s printed: %s\n' "${entrypoint[*]}" "$output"
# The build on the web page (sign in first with WEB_URL from .stack/env).
id="$(sed -n 's/^build \([0-9][^:]*\): succeeded.*/\1/p' "$progress" | tail -n 1)"
if [[ -n $id ]]; then
	printf 'on the web page: https://%s/builds/%s (sign in with WEB_URL in .stack/env)\n' "$WEB_ADDR" "$id"
fi
