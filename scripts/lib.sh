# shellcheck shell=bash
# shellcheck disable=SC2034 # the variables are for the scripts that source this
# Shared settings and helpers for the local stack scripts. Sourced, never run.
#
# Everything the stack creates lives under $STACK (the repo's .stack/, git-ignored):
#   bin/      binaries built from pinned versions (bin/versions.stamp records them)
#   run/      pid files          logs/  service logs
#   buildkit/ buildkitd root     registry/  registry data, htpasswd, password
#   docker/   DOCKER_CONFIG      git/       bare repos served by git daemon
#   env       `export` lines for other scripts and the integration tests

set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
STACK="$ROOT/.stack"
BIN="$STACK/bin"
RUN="$STACK/run"
LOGS="$STACK/logs"
STAMP="$BIN/versions.stamp"

# Ports: REGISTRY_PORT, GIT_PORT, SERVER_PORT from the environment if set,
# else the ones this stack last used ($STACK/ports, written by up.sh), else
# the defaults. up.sh moves a port that is not set in the environment to a
# free one when another process holds it (say, the stack of another clone).
PORTS_FILE="$STACK/ports"
DEFAULT_REGISTRY_PORT=15000
DEFAULT_GIT_PORT=19418
DEFAULT_SERVER_PORT=17070
PORTS_FROM_ENV=""
for _p in REGISTRY_PORT GIT_PORT SERVER_PORT; do
	if [[ -n ${!_p:-} ]]; then
		[[ ${!_p} =~ ^[0-9]+$ ]] || { printf 'ERROR: %s=%s is not a port\n' "$_p" "${!_p}" >&2; exit 1; }
		PORTS_FROM_ENV+=" $_p"
	elif [[ -f $PORTS_FILE ]] && _v="$(awk -F= -v k="$_p" '$1 == k && $2 ~ /^[0-9]+$/ { print $2; exit }' "$PORTS_FILE")" && [[ -n $_v ]]; then
		printf -v "$_p" '%s' "$_v"
	else
		_d="DEFAULT_$_p"
		printf -v "$_p" '%s' "${!_d}"
	fi
done
unset _p _v _d

# Pinned tool versions. BUILDKIT_VERSION must match the main module's go.mod
# (checked in ensure_buildkit).
BUILDKIT_VERSION="v0.34.2"
REGISTRY_VERSION="v3.1.2"
CRANE_VERSION="v0.22.1"
BUF_VERSION="v1.75.0"

REGISTRY_USER="buildsvc"
BUILDKIT_SOCK="$STACK/buildkitd.sock"
BUILDKIT_ADDR="unix://$BUILDKIT_SOCK"
GIT_BASE_DIR="$STACK/git"
DOCKER_CONFIG_DIR="$STACK/docker"
# derive_addrs sets the addresses that depend on the ports.
derive_addrs() {
	REGISTRY_ADDR="127.0.0.1:$REGISTRY_PORT"
	BUILD_SERVER_ADDR="127.0.0.1:$SERVER_PORT"
	GIT_BASE_URL="git://127.0.0.1:$GIT_PORT"
}
derive_addrs

# Go: the machines have it in /usr/local/go; a non-login shell may lack it in PATH.
if ! command -v go >/dev/null 2>&1 && [[ -x /usr/local/go/bin/go ]]; then
	export PATH="/usr/local/go/bin:$PATH"
fi
# VCS stamping needs a trusted git checkout and adds nothing here.
case " ${GOFLAGS:-} " in
*" -buildvcs="*) ;;
*) export GOFLAGS="${GOFLAGS:+$GOFLAGS }-buildvcs=false" ;;
esac

log() { printf '==> [%s] %s\n' "$(date +%T)" "$*" >&2; }
warn() { printf 'WARNING: %s\n' "$*" >&2; }
die() {
	printf 'ERROR: %s\n' "$*" >&2
	exit 1
}

require_go() {
	command -v go >/dev/null 2>&1 || die "go is not installed (expected /usr/local/go/bin/go)"
}

# go_version prints the local toolchain's version without the "go" prefix (1.26.8).
go_version() {
	local v
	v="$(go env GOVERSION)"
	printf '%s\n' "${v#go}"
}

# The builder's tag: the Go version, and a suffix that changes whenever what
# `buildsvc bootstrap` puts in the image changes (images.sh only bootstraps a
# missing tag). git1: the host's git with its HTTPS helpers and libraries;
# cp-HASH: the GOCACHEPROG helper and its seed (the standard library
# compiled through it), built from the source of buildcache/ and
# buildcache/cacheprog/ by the steps of bootstrap/gocacheprog.go, and how
# the bootstrap pushes the images (bootstrap/run.go, options.go: the base's
# platforms); HASH of those files, so a change to any is a new tag and
# images.sh bootstraps both images again.
helper_hash() {
	local f files=()
	for f in "$ROOT"/buildcache/*.go "$ROOT"/buildcache/cacheprog/*.go "$ROOT"/bootstrap/gocacheprog.go \
		"$ROOT"/bootstrap/run.go "$ROOT"/bootstrap/options.go; do
		[[ $f == *_test.go ]] || files+=("$f")
	done
	cat "${files[@]}" | sha256sum | cut -c1-8
}
builder_image() { printf '%s/buildsvc/builder:go%s-git1-cp%s\n' "$REGISTRY_ADDR" "$(go_version)" "$(helper_hash)"; }
base_image() { printf '%s/buildsvc/base:latest\n' "$REGISTRY_ADDR"; }

# ensure_apt PKG... installs the Debian packages that are not installed yet.
ensure_apt() {
	local missing=() p
	for p in "$@"; do
		dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
	done
	((${#missing[@]} == 0)) && return 0
	[[ $(id -u) -eq 0 ]] || die "missing packages ${missing[*]}; run as root or install them"
	log "apt-get install ${missing[*]}"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -q >/dev/null
	apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
}

# stamp_get NAME prints the version recorded for NAME in the stamp file.
stamp_get() {
	[[ -f $STAMP ]] || return 0
	awk -v n="$1" '$1 == n { $1 = ""; sub(/^ /, ""); print; exit }' "$STAMP"
}

# stamp_set NAME VERSION records VERSION for NAME.
stamp_set() {
	mkdir -p "$BIN"
	local tmp="$STAMP.tmp.$$"
	{
		[[ -f $STAMP ]] && awk -v n="$1" '$1 != n' "$STAMP"
		printf '%s %s\n' "$1" "$2"
	} >"$tmp"
	mv -f "$tmp" "$STAMP"
}

# ensure_bin NAME VERSION CMD... runs CMD (which must produce $BIN/NAME) unless
# $BIN/NAME exists and was built for VERSION.
ensure_bin() {
	local name="$1" version="$2"
	shift 2
	if [[ -x $BIN/$name && "$(stamp_get "$name")" == "$version" ]]; then
		return 0
	fi
	log "building $name ($version)"
	mkdir -p "$BIN"
	"$@" || die "building $name failed"
	[[ -x $BIN/$name ]] || die "building $name did not produce $BIN/$name"
	stamp_set "$name" "$version"
}

# pid_alive PIDFILE BINARY: the pid in PIDFILE is a live process running BINARY.
pid_alive() {
	local pidfile="$1" binary="$2" pid exe
	[[ -f $pidfile ]] || return 1
	pid="$(cat "$pidfile" 2>/dev/null)" || return 1
	[[ $pid =~ ^[0-9]+$ ]] || return 1
	kill -0 "$pid" 2>/dev/null || return 1
	# Guard against pid reuse: the process must be the binary we started
	# (after a rebuild the old inode shows as "BINARY (deleted)").
	exe="$(readlink "/proc/$pid/exe" 2>/dev/null)" || return 1
	[[ $exe == "$binary" || $exe == "$binary (deleted)" ]]
}

# tcp_open PORT: something accepts TCP connections on 127.0.0.1:PORT.
tcp_open() {
	(exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

CHOSEN_PORTS=""

# port_taken PORT: something listens on PORT, or this run already gave it to
# another service (which may not be listening yet).
port_taken() {
	tcp_open "$1" || [[ " $CHOSEN_PORTS " == *" $1 "* ]]
}

# choose_port VAR PIDFILE BINARY: keep port $VAR if our service (PIDFILE,
# BINARY) runs or the port is free; otherwise, unless VAR came from the
# environment, move VAR to the next free port above it.
choose_port() {
	local var="$1" pidfile="$2" binary="$3" port i
	port="${!var}"
	if pid_alive "$pidfile" "$binary" || ! port_taken "$port"; then
		CHOSEN_PORTS+=" $port"
		return 0
	fi
	[[ " $PORTS_FROM_ENV " == *" $var "* ]] &&
		die "port $port ($var) is in use by another process; set $var to a free port"
	for ((i = 1; i <= 100; i++)); do
		if ! port_taken $((port + i)); then
			warn "port $port is in use by another process; $var=$((port + i)) for this stack (saved in $PORTS_FILE)"
			printf -v "$var" '%s' $((port + i))
			CHOSEN_PORTS+=" $((port + i))"
			return 0
		fi
	done
	die "no free port in $port..$((port + 100)) for $var"
}

# stop_pid NAME PIDFILE BINARY [SECONDS]: TERM, wait up to SECONDS (15), then
# KILL. buildkitd's graceful stop waits for running builds, so a KILL is
# normal when a build is in flight; cleanup_buildkit_leftovers then removes
# its containers and mounts.
stop_pid() {
	local name="$1" pidfile="$2" binary="$3" secs="${4:-15}" pid i
	if ! pid_alive "$pidfile" "$binary"; then
		rm -f "$pidfile"
		return 0
	fi
	pid="$(cat "$pidfile")"
	log "stopping $name (pid $pid)"
	kill -TERM "$pid" 2>/dev/null || true
	for ((i = 0; i < secs * 10; i++)); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
	done
	if kill -0 "$pid" 2>/dev/null; then
		warn "$name did not exit within ${secs}s of TERM; sending KILL"
		kill -KILL "$pid" 2>/dev/null || true
		for ((i = 0; i < 50; i++)); do
			kill -0 "$pid" 2>/dev/null || break
			sleep 0.1
		done
	fi
	rm -f "$pidfile"
}

# start_bg NAME PIDFILE LOGFILE BINARY ARGS...: start BINARY in a session of
# its own (no SIGHUP/SIGINT from the caller's terminal) with stdio detached
# from the caller (so make/CI don't wait on it), appending to LOGFILE. The
# process writes its own pid before exec'ing BINARY, so the pid file is right
# even if setsid has to fork.
start_bg() {
	start_bg_exe "$1" "$2" "$3" "$4" "${@:4}"
}

# start_bg_exe NAME PIDFILE LOGFILE EXE CMD...: start_bg for a CMD that ends
# by exec'ing EXE in the same process (unshare ... sh -c '... exec EXE'), so
# the pid file names EXE once it runs; pid_alive checks EXE.
start_bg_exe() {
	local name="$1" pidfile="$2" logfile="$3" exe="$4" i
	shift 4
	mkdir -p "$(dirname "$pidfile")" "$(dirname "$logfile")"
	rm -f "$pidfile"
	printf '\n==== %s: starting %s at %s\n' "$name" "$*" "$(date -u +%FT%TZ)" >>"$logfile"
	# shellcheck disable=SC2016 # $$, $0 and $@ belong to the inner bash
	setsid bash -c 'echo $$ >"$0.tmp" && mv -f "$0.tmp" "$0" && exec "$@"' "$pidfile" "$@" \
		</dev/null >>"$logfile" 2>&1 &
	for ((i = 0; i < 100; i++)); do
		pid_alive "$pidfile" "$exe" && break
		sleep 0.05
	done
	pid_alive "$pidfile" "$exe" || {
		tail -n 30 "$logfile" >&2 || true
		die "$name failed to start (log: $logfile)"
	}
	log "started $name (pid $(cat "$pidfile")), log $logfile"
}

# wait_until NAME SECONDS PIDFILE BINARY LOGFILE CMD...: poll CMD until it
# succeeds; fail early (with the log's tail) if the process dies.
wait_until() {
	local name="$1" secs="$2" pidfile="$3" binary="$4" logfile="$5" i
	shift 5
	for ((i = 0; i < secs * 5; i++)); do
		if "$@" >/dev/null 2>&1; then
			return 0
		fi
		if ! pid_alive "$pidfile" "$binary"; then
			tail -n 50 "$logfile" >&2 || true
			die "$name exited during startup (log: $logfile)"
		fi
		sleep 0.2
	done
	tail -n 50 "$logfile" >&2 || true
	die "$name did not become ready within ${secs}s (log: $logfile)"
}

# write_if_changed FILE: write stdin to FILE; return 0 if the content changed.
write_if_changed() {
	local file="$1" tmp
	tmp="$(mktemp "$file.XXXXXX")"
	cat >"$tmp"
	if [[ -f $file ]] && cmp -s "$tmp" "$file"; then
		rm -f "$tmp"
		return 1
	fi
	chmod 644 "$tmp"
	mv -f "$tmp" "$file"
	return 0
}

# cleanup_buildkit_leftovers: after buildkitd has stopped. It normally removes
# its build containers and unmounts its snapshots on exit, but after a KILL or
# a crash runc containers (bundles under its root) and overlay mounts can be
# left behind, which would break the next start or an `rm -rf .stack`.
# Removes those containers (killing their processes) and unmounts, deepest
# first. Touches nothing outside $STACK/buildkit, or outside ROOT for
# `cleanup_buildkit_leftovers ROOT PIDFILE` (the stack's extra workers,
# BUILDSVC_WORKERS in up.sh).
cleanup_buildkit_leftovers() {
	local root="${1:-$STACK/buildkit}" pidfile="${2:-$RUN/buildkitd.pid}" id m
	if pid_alive "$pidfile" "$BIN/buildkitd"; then
		warn "buildkitd ($pidfile) is running; not cleaning up its containers and mounts"
		return 0
	fi
	if command -v runc >/dev/null 2>&1; then
		while read -r id; do
			[[ -n $id ]] || continue
			log "removing leftover build container $id"
			runc delete --force "$id" >/dev/null 2>&1 || warn "could not remove runc container $id"
		done < <(runc list 2>/dev/null | awk -v p="$root/" 'NR > 1 && index($4, p) == 1 { print $1 }')
	fi
	while read -r m; do
		[[ -n $m ]] || continue
		log "unmounting leftover $m"
		umount "$m" 2>/dev/null || umount -l "$m" || warn "could not unmount $m"
	done < <(awk -v root="$root" 'index($2, root "/") == 1 || $2 == root { print $2 }' /proc/self/mounts | sort -r)
}

# load_env: source .stack/env written by up.sh.
load_env() {
	[[ -f $STACK/env ]] || die "$STACK/env is missing; run scripts/up.sh (make up) first"
	# shellcheck source=/dev/null
	source "$STACK/env"
}
