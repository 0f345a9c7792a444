#!/usr/bin/env bash
# Stop the local stack started by scripts/up.sh (idempotent). State (cache,
# registry data, repos, passwords) is kept; `rm -rf .stack` after this
# removes it.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
# shellcheck source=scripts/postgres.sh
source "$(dirname "${BASH_SOURCE[0]}")/postgres.sh"

# The server lets running builds finish for up to 30 s after TERM.
stop_pid server "$RUN/server.pid" "$BIN/buildsvc-server" 40
if command -v git >/dev/null 2>&1; then
	stop_pid git-daemon "$RUN/git-daemon.pid" "$(git --exec-path)/git-daemon"
else
	rm -f "$RUN/git-daemon.pid"
fi
# Private sources (scripts/private.sh): git HTTPS server, sshd, registry2.
stop_pid git-https "$RUN/git-https.pid" "$BIN/githttps"
stop_pid sshd "$RUN/sshd.pid" /usr/sbin/sshd
stop_pid buildkitd "$RUN/buildkitd.pid" "$BIN/buildkitd"
stop_pid registry2 "$RUN/registry2.pid" "$BIN/registry"
stop_pid registry "$RUN/registry.pid" "$BIN/registry"
postgres_down

cleanup_buildkit_leftovers
rm -f "$STACK/buildkitd.sock" "$STACK/buildkitd-otel.sock"
log "local stack stopped (state kept in $STACK)"
