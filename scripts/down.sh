#!/usr/bin/env bash
# Stop the local stack started by scripts/up.sh (idempotent). State (cache,
# registry data, repos, passwords) is kept; `rm -rf .stack` after this
# removes it. Stops every server replica and buildkitd worker up.sh started
# (BUILDSVC_REPLICAS, BUILDSVC_WORKERS) and forgets the stack's shape
# (.stack/shape), so the next `make up` is one of each unless told otherwise.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
# shellcheck source=scripts/postgres.sh
source "$(dirname "${BASH_SOURCE[0]}")/postgres.sh"

# The server lets running builds finish for up to 30 s after TERM.
# Replicas 2.. first, then the stack's server.
for f in "$RUN"/server-*.pid; do
	i="${f##*/server-}" i="${i%.pid}"
	if [[ -e $f && $i =~ ^[0-9]+$ ]]; then
		stop_pid "server-$i" "$f" "$BIN/buildsvc-server" 40
	fi
done
stop_pid server "$RUN/server.pid" "$BIN/buildsvc-server" 40
if command -v git >/dev/null 2>&1; then
	stop_pid git-daemon "$RUN/git-daemon.pid" "$(git --exec-path)/git-daemon"
else
	rm -f "$RUN/git-daemon.pid"
fi
# Private sources (scripts/private.sh): git HTTPS server, sshd, registry2.
stop_pid git-https "$RUN/git-https.pid" "$BIN/githttps"
stop_pid sshd "$RUN/sshd.pid" /usr/sbin/sshd
# The pool's extra workers (buildkitd-2.., BUILDSVC_WORKERS), then the
# stack's own.
for f in "$RUN"/buildkitd-*.pid; do
	i="${f##*/buildkitd-}" i="${i%.pid}"
	if [[ -e $f && $i =~ ^[0-9]+$ ]]; then
		stop_pid "buildkitd-$i" "$f" "$BIN/buildkitd"
		cleanup_buildkit_leftovers "$STACK/buildkit-$i" "$f"
		rm -f "$STACK/buildkitd-$i.sock" "$STACK/buildkitd-$i-otel.sock"
	fi
done
stop_pid buildkitd "$RUN/buildkitd.pid" "$BIN/buildkitd"
stop_pid registry2 "$RUN/registry2.pid" "$BIN/registry"
stop_pid registry "$RUN/registry.pid" "$BIN/registry"
postgres_down

cleanup_buildkit_leftovers
rm -f "$STACK/buildkitd.sock" "$STACK/buildkitd-otel.sock" "$STACK/shape"
log "local stack stopped (state kept in $STACK)"
