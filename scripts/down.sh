#!/usr/bin/env bash
# Stop the local stack started by scripts/up.sh (idempotent). State (cache,
# registry data, repos, passwords) is kept; `rm -rf .stack` after this
# removes it.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

stop_pid server "$RUN/server.pid" "$BIN/buildsvc-server"
if command -v git >/dev/null 2>&1; then
	stop_pid git-daemon "$RUN/git-daemon.pid" "$(git --exec-path)/git-daemon"
else
	rm -f "$RUN/git-daemon.pid"
fi
stop_pid buildkitd "$RUN/buildkitd.pid" "$BIN/buildkitd"
stop_pid registry "$RUN/registry.pid" "$BIN/registry"

# buildkitd normally unmounts its snapshots on exit; after a KILL or a crash
# overlay mounts can be left under its root, which would make the next
# start (or an `rm -rf .stack`) fail. Unmount them, deepest first.
mapfile -t mounts < <(awk -v root="$STACK/buildkit" \
	'index($2, root "/") == 1 || $2 == root { print $2 }' /proc/self/mounts | sort -r)
for m in "${mounts[@]}"; do
	log "unmounting leftover $m"
	umount "$m" 2>/dev/null || umount -l "$m" || warn "could not unmount $m"
done
rm -f "$STACK/buildkitd.sock" "$STACK/buildkitd-otel.sock"
log "local stack stopped (state kept in $STACK)"
