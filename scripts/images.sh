#!/usr/bin/env bash
# Make sure the builder and base images exist in the local registry; build and
# push them with `buildsvc bootstrap` if either is missing. Needs the stack
# (scripts/up.sh) to be running.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
load_env

# .stack/env (and the running server) use the tag of the last scripts/up.sh;
# after a change to builder_image in lib.sh, bootstrapping the old tag would
# leave the server and the tests on the old image.
if [[ $BUILDER_IMAGE != "$(builder_image)" ]]; then
	die "$STACK/env has BUILDER_IMAGE=$BUILDER_IMAGE but lib.sh now says $(builder_image); run scripts/up.sh first"
fi

have_image() {
	"$BIN/crane" manifest --insecure "$1" >/dev/null 2>&1
}

if have_image "$BUILDER_IMAGE" && have_image "$BASE_IMAGE"; then
	log "images present: $BUILDER_IMAGE, $BASE_IMAGE"
	exit 0
fi

[[ -x $BIN/buildsvc ]] || die "$BIN/buildsvc is missing; run scripts/up.sh without STACK_NO_SERVER=1 first"
# The builder gets the host's git (Go needs it for modules straight from a
# git host); bootstrap fails without it.
ensure_apt git
log "bootstrapping $BUILDER_IMAGE and $BASE_IMAGE"
"$BIN/buildsvc" bootstrap --buildkit-addr "$BUILDKIT_ADDR" --docker-config "$DOCKER_CONFIG" \
	--builder-image "$BUILDER_IMAGE" --base-image "$BASE_IMAGE" ||
	die "buildsvc bootstrap failed (buildkitd log: $LOGS/buildkitd.log)"

for ref in "$BUILDER_IMAGE" "$BASE_IMAGE"; do
	have_image "$ref" || die "bootstrap finished but $ref is not in the registry"
done
log "images pushed: $BUILDER_IMAGE, $BASE_IMAGE"
