#!/usr/bin/env bash
# Start the local stack (idempotent): registry with htpasswd auth, buildkitd,
# git daemon, and the build server; and for private sources (scripts/private.sh):
# an internal CA, a git smart-HTTP server over TLS with a token, an sshd for
# git over ssh, private repositories served by both, and a second registry
# over TLS with credentials of its own. Installs and builds what is missing;
# services that are already running are left alone (the build server is
# rebuilt every time and restarted when its binary changed; a service whose
# generated config changed is restarted).
#
# Environment: REGISTRY_PORT (15000), GIT_PORT (19418), SERVER_PORT (17070),
# METRICS_PORT (17071, the server's /metrics), SSH_PORT (12222, sshd),
# REGISTRY2_PORT (15001), GIT_HTTPS_PORT (443, never moved: see
# scripts/private.sh), POSTGRES_PORT (15432, scripts/postgres.sh: PostgreSQL
# for the history store's tests), STACK_NO_SERVER=1 to skip
# building and starting the build server. A port
# not set in the environment that another process holds (e.g. the stack of
# another clone) is moved to the next free one and kept in .stack/ports;
# scripts and tests read the addresses from .stack/env.
#
# The stack's shape: BUILDSVC_WORKERS=N (1 to 9, default 1) buildkitds in
# the server's worker pool, BUILDSVC_REPLICAS=M (1 to 9, default 1) build
# servers. Worker 1 is the stack's own (.stack/buildkit, buildkitd.sock);
# worker i > 1 is the same binary and config with its own root, socket,
# pid file and log (.stack/buildkit-i, buildkitd-i.sock, buildkitd-i.toml,
# run/buildkitd-i.pid, logs/buildkitd-i.log); every server gets all N
# sockets in --buildkit-addr. With M > 1 every replica gets --database-url
# (the stack's PostgreSQL, one database for all of them) and has its own
# data dir (.stack/server-i), log (logs/server-i.log) and ports
# (SERVER_PORT_i, METRICS_PORT_i, MODPROXY_PORT_i in .stack/ports: the
# first's plus 10*(i-1) unless moved); replica 1 is the stack's server as
# before (.stack/server, logs/server.log). With M = 1 the server keeps its
# history in bbolt. The shape is kept in .stack/shape: a later `make up`
# (demo.sh, test.sh, bench.sh run it too) without these variables keeps the
# shape that is up; `make down` forgets it, so the next `make up` is one
# of each again; BUILDSVC_WORKERS=1 BUILDSVC_REPLICAS=1 goes back at once.
# .stack/env: BUILDKIT_ADDR and BUILD_SERVER_ADDR are the first worker and
# replica, BUILDKIT_ADDRS and BUILD_SERVER_ADDRS all of them (space
# separated).
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
# shellcheck source=scripts/private.sh
source "$(dirname "${BASH_SOURCE[0]}")/private.sh"
# shellcheck source=scripts/postgres.sh
source "$(dirname "${BASH_SOURCE[0]}")/postgres.sh"

mkdir -p "$STACK" "$BIN" "$RUN" "$LOGS"

# ---------------------------------------------------------------- shape
SHAPE_FILE="$STACK/shape"
# shape_value KEY ENVVAR: ENVVAR if set, else KEY in $SHAPE_FILE, else 1.
shape_value() {
	local v="${!2:-}"
	if [[ -z $v && -f $SHAPE_FILE ]]; then
		v="$(awk -F= -v k="$1" '$1 == k { print $2; exit }' "$SHAPE_FILE")"
	fi
	v="${v:-1}"
	[[ $v =~ ^[1-9]$ ]] || die "$2=$v: want a number from 1 to 9"
	printf '%s\n' "$v"
}
WORKERS="$(shape_value WORKERS BUILDSVC_WORKERS)"
REPLICAS="$(shape_value REPLICAS BUILDSVC_REPLICAS)"
if ((WORKERS > 1)) && [[ ${BUILDSVC_BUILDER_MODE:-persistent} == ephemeral ]]; then
	die "BUILDSVC_BUILDER_MODE=ephemeral runs each build on a buildkitd of its own: it takes BUILDSVC_WORKERS=1"
fi
if ((WORKERS == 1 && REPLICAS == 1)); then
	rm -f "$SHAPE_FILE"
else
	printf 'WORKERS=%s\nREPLICAS=%s\n' "$WORKERS" "$REPLICAS" | write_if_changed "$SHAPE_FILE" || true
	log "shape: $WORKERS buildkitd worker(s), $REPLICAS server replica(s) (kept in $SHAPE_FILE until make down)"
fi
# sfx I: the suffix of worker or replica I's files: none for 1, -I else.
sfx() {
	(($1 == 1)) || printf -- '-%s' "$1"
}

# ---------------------------------------------------------------- ports
choose_port REGISTRY_PORT "$RUN/registry.pid" "$BIN/registry"
choose_port GIT_PORT "$RUN/git-daemon.pid" "$(git --exec-path 2>/dev/null || echo /nonexistent)/git-daemon"
choose_port SERVER_PORT "$RUN/server.pid" "$BIN/buildsvc-server"
# The server's metrics port, chosen like the ones above: from the
# environment, else the one this stack last used, else the default.
if [[ -n ${METRICS_PORT:-} ]]; then
	[[ $METRICS_PORT =~ ^[0-9]+$ ]] || die "METRICS_PORT=$METRICS_PORT is not a port"
	PORTS_FROM_ENV+=" METRICS_PORT"
elif [[ -f $PORTS_FILE ]] && METRICS_PORT="$(awk -F= '$1 == "METRICS_PORT" && $2 ~ /^[0-9]+$/ { print $2; exit }' "$PORTS_FILE")" && [[ -n $METRICS_PORT ]]; then
	:
else
	METRICS_PORT=17071
fi
choose_port METRICS_PORT "$RUN/server.pid" "$BIN/buildsvc-server"
MODPROXY_PORT="${MODPROXY_PORT:-$((METRICS_PORT + 1))}"
[[ $MODPROXY_PORT =~ ^[0-9]+$ ]] || die "MODPROXY_PORT=$MODPROXY_PORT is not a port"
choose_port MODPROXY_PORT "$RUN/server.pid" "$BIN/buildsvc-server"
# The web page (--web-listen), next to the module proxy.
WEB_PORT="${WEB_PORT:-$((METRICS_PORT + 2))}"
[[ $WEB_PORT =~ ^[0-9]+$ ]] || die "WEB_PORT=$WEB_PORT is not a port"
choose_port WEB_PORT "$RUN/server.pid" "$BIN/buildsvc-server"
# Replica i > 1 (BUILDSVC_REPLICAS): SERVER_PORT_i, METRICS_PORT_i and
# MODPROXY_PORT_i, the ones this stack last used, else the first
# replica's plus 10*(i-1); moved like the others.
replica_ports=""
for ((i = 2; i <= REPLICAS; i++)); do
	for p in SERVER_PORT METRICS_PORT MODPROXY_PORT WEB_PORT; do
		var="${p}_$i"
		v=""
		[[ -f $PORTS_FILE ]] && v="$(awk -F= -v k="$var" '$1 == k && $2 ~ /^[0-9]+$/ { print $2; exit }' "$PORTS_FILE")"
		printf -v "$var" '%s' "${v:-$((${!p} + 10 * (i - 1)))}"
		choose_port "$var" "$RUN/server-$i.pid" "$BIN/buildsvc-server"
		replica_ports+="$var=${!var}"$'\n'
	done
done
# SSH_PORT, REGISTRY2_PORT and GIT_HTTPS_PORT (443 unless set, not moved).
private_ports
derive_addrs
METRICS_ADDR="127.0.0.1:$METRICS_PORT"
{
	printf 'REGISTRY_PORT=%s\nGIT_PORT=%s\nSERVER_PORT=%s\nMETRICS_PORT=%s\nSSH_PORT=%s\nREGISTRY2_PORT=%s\n' \
		"$REGISTRY_PORT" "$GIT_PORT" "$SERVER_PORT" "$METRICS_PORT" "$SSH_PORT" "$REGISTRY2_PORT"
	printf '%s' "$replica_ports"
} | write_if_changed "$PORTS_FILE" || true
# The replicas' addresses (replica 1 is BUILD_SERVER_ADDR, METRICS_ADDR,
# MODPROXY_PORT).
SRV_PORTS=("$SERVER_PORT") SRV_METRICS_PORTS=("$METRICS_PORT") SRV_MODPROXY_PORTS=("$MODPROXY_PORT") SRV_WEB_PORTS=("$WEB_PORT")
for ((i = 2; i <= REPLICAS; i++)); do
	v="SERVER_PORT_$i" m="METRICS_PORT_$i" x="MODPROXY_PORT_$i" w="WEB_PORT_$i"
	SRV_PORTS+=("${!v}") SRV_METRICS_PORTS+=("${!m}") SRV_MODPROXY_PORTS+=("${!x}") SRV_WEB_PORTS+=("${!w}")
done
BUILD_SERVER_ADDRS="$(printf '127.0.0.1:%s ' "${SRV_PORTS[@]}")"
BUILD_SERVER_ADDRS="${BUILD_SERVER_ADDRS% }"

# ---------------------------------------------------------------- packages
ensure_apt runc busybox-static git ca-certificates openssl openssh-server curl
require_go

# ---------------------------------------------------------------- binaries
TOOLS="$ROOT/tools/buildkit"
tools_version() { (cd "$TOOLS" && go list -m -f '{{.Version}}' github.com/moby/buildkit); }
ensure_buildkit() {
	local tv mv
	tv="$(tools_version)"
	[[ $tv == "$BUILDKIT_VERSION" ]] || die "tools/buildkit/go.mod has buildkit $tv, scripts/lib.sh pins $BUILDKIT_VERSION"
	mv="$(awk '$1 == "github.com/moby/buildkit" { print $2; exit }' "$ROOT/go.mod")"
	[[ -z $mv || $mv == "$BUILDKIT_VERSION" ]] ||
		warn "main module requires buildkit $mv but the daemon is $BUILDKIT_VERSION"
	local gov h
	gov="$(go env GOVERSION)"
	ensure_bin buildkitd "$BUILDKIT_VERSION $gov" tools_build buildkitd github.com/moby/buildkit/cmd/buildkitd
	ensure_bin buildctl "$BUILDKIT_VERSION $gov" tools_build buildctl github.com/moby/buildkit/cmd/buildctl
	# Small helpers from the same module; keyed on their source and go.sum.
	h="$(cat "$TOOLS/go.sum" "$TOOLS"/cmd/htpasswd/*.go "$TOOLS"/cmd/checkconfig/*.go | sha256sum | cut -c1-16)"
	ensure_bin htpasswd "src-$h $gov" tools_build htpasswd ./cmd/htpasswd
	ensure_bin checkconfig "src-$h $gov" tools_build checkconfig ./cmd/checkconfig
	h="$(cat "$TOOLS/go.mod" "$TOOLS"/cmd/githttps/*.go | sha256sum | cut -c1-16)"
	ensure_bin githttps "src-$h $gov" tools_build githttps ./cmd/githttps
}
# tools_build NAME PACKAGE: go build PACKAGE of the tools module into $BIN/NAME.
tools_build() {
	(cd "$TOOLS" && go build -ldflags "-X github.com/moby/buildkit/version.Version=$BUILDKIT_VERSION" -o "$BIN/$1" "$2")
}
ensure_buildkit
ensure_bin registry "$REGISTRY_VERSION" \
	env GOBIN="$BIN" go install "github.com/distribution/distribution/v3/cmd/registry@$REGISTRY_VERSION"
ensure_bin crane "$CRANE_VERSION" \
	env GOBIN="$BIN" go install "github.com/google/go-containerregistry/cmd/crane@$CRANE_VERSION"

# ---------------------------------------------------------------- registry
REG_DIR="$STACK/registry"
REG_PID="$RUN/registry.pid"
REG_LOG="$LOGS/registry.log"
mkdir -p "$REG_DIR/data"
chmod 700 "$REG_DIR"
PASSWORD_FILE="$REG_DIR/password"
if [[ ! -s $PASSWORD_FILE ]]; then
	log "generating the registry password ($PASSWORD_FILE)"
	(
		umask 077
		head -c 32 /dev/urandom | base64 -w0 | tr -d '/+=' | cut -c1-32 >"$PASSWORD_FILE"
	)
fi
chmod 600 "$PASSWORD_FILE"
HTPASSWD="$REG_DIR/htpasswd"
reg_changed=0
if [[ ! -s $HTPASSWD || $PASSWORD_FILE -nt $HTPASSWD ]] ||
	! grep -q "^$REGISTRY_USER:[$]2a[$]04[$]" "$HTPASSWD"; then
	(
		umask 077
		"$BIN/htpasswd" "$REGISTRY_USER" "$PASSWORD_FILE" >"$HTPASSWD.tmp"
	)
	mv -f "$HTPASSWD.tmp" "$HTPASSWD"
	reg_changed=1
fi
if [[ ! -s $REG_DIR/http-secret ]]; then
	(
		umask 077
		head -c 32 /dev/urandom | base64 -w0 >"$REG_DIR/http-secret"
	)
fi
if write_if_changed "$REG_DIR/config.yml"; then reg_changed=1; fi <<EOF
# Generated by scripts/up.sh; edits are overwritten.
version: 0.1
log:
  level: info
storage:
  filesystem:
    rootdirectory: $REG_DIR/data
  delete:
    enabled: true
http:
  addr: $REGISTRY_ADDR
  secret: $(cat "$REG_DIR/http-secret")
auth:
  htpasswd:
    realm: buildsvc-local
    path: $HTPASSWD
EOF
chmod 600 "$REG_DIR/config.yml"

if pid_alive "$REG_PID" "$BIN/registry" && ((reg_changed)); then
	log "registry config changed; restarting"
	stop_pid registry "$REG_PID" "$BIN/registry"
fi
if ! pid_alive "$REG_PID" "$BIN/registry"; then
	tcp_open "$REGISTRY_PORT" && die "port $REGISTRY_PORT is in use by another process (set REGISTRY_PORT)"
	OTEL_TRACES_EXPORTER=none start_bg registry "$REG_PID" "$REG_LOG" "$BIN/registry" serve "$REG_DIR/config.yml"
fi
wait_until registry 30 "$REG_PID" "$BIN/registry" "$REG_LOG" tcp_open "$REGISTRY_PORT"

# ---------------------------------------------------------------- docker config
mkdir -p "$DOCKER_CONFIG_DIR"
chmod 700 "$DOCKER_CONFIG_DIR"
AUTH="$(printf '%s:%s' "$REGISTRY_USER" "$(cat "$PASSWORD_FILE")" | base64 -w0)"
write_if_changed "$DOCKER_CONFIG_DIR/config.json" <<EOF || true
{
	"auths": {
		"$REGISTRY_ADDR": {
			"auth": "$AUTH"
		}
	}
}
EOF
chmod 600 "$DOCKER_CONFIG_DIR/config.json"
# The registry answers with auth, and only with it.
wait_until "registry login" 15 "$REG_PID" "$BIN/registry" "$REG_LOG" \
	env DOCKER_CONFIG="$DOCKER_CONFIG_DIR" "$BIN/crane" catalog --insecure "$REGISTRY_ADDR"

# ---------------------------------------------------------------- internal CA, registry2
# The internal CA (pki/internal-ca.*) signs the certificate of the private
# git server and of registry2; the stack CA (pki/ca.*, below) stays the
# build server's own. registry2 is over TLS with user "team" and is not in
# $DOCKER_CONFIG_DIR: its credentials come only from build requests.
ensure_internal_ca
ensure_registry2

# ---------------------------------------------------------------- buildkitd
# Worker 1 is the stack's own; workers 2..BUILDSVC_WORKERS the same binary
# and config, each with the files of its suffix (sfx).
BK_LOG="$LOGS/buildkitd.log"
BK_CONF="$STACK/buildkitd.toml"
BK_ADDRS=() BK_PIDS=() BK_LOGS=()
for ((i = 1; i <= WORKERS; i++)); do
	s="$(sfx "$i")"
	BK_ADDRS+=("unix://$STACK/buildkitd$s.sock")
	BK_PIDS+=("$RUN/buildkitd$s.pid")
	BK_LOGS+=("$LOGS/buildkitd$s.log")
done
BUILDKIT_ADDRS="${BK_ADDRS[*]}"
# The server's --buildkit-addr: the pool, comma-separated.
BK_POOL="$(IFS=,; printf '%s' "${BK_ADDRS[*]}")"
# bk_config ROOT ADDR OTEL_SOCKET: the local variant of deploy/buildkitd.toml:
# state and socket under .stack, plus the loopback registry over plain HTTP.
bk_config() {
	printf '# Generated by scripts/up.sh from deploy/buildkitd.toml; edits are overwritten.\n\n'
	sed -e "s#^root = .*#root = \"$1\"#" \
		-e "s#^\([[:space:]]*\)address = \[.*#\1address = [ \"$2\" ]#" \
		"$ROOT/deploy/buildkitd.toml"
	cat <<EOF

# ---- local stack ----
[otel]
  socketPath = "$3"

[registry."$REGISTRY_ADDR"]
  http = true
  insecure = true

# registry2: TLS with a certificate from the stack's internal CA. BuildKit
# talks plain HTTP to a loopback registry unless told otherwise, hence
# http = false.
[registry."$REGISTRY2_ADDR"]
  http = false
  ca = [ "$INTERNAL_CA" ]
EOF
}
# buildkitd's own git fetches over HTTPS must trust the internal CA. BuildKit
# runs git with HOME=/dev/null and no system gitconfig, so only the bundle
# libcurl has compiled in counts: /etc/ssl/certs/ca-certificates.crt. The
# host's store is left alone (the builder image copies it, and tests need a
# builder that does not trust the internal CA): buildkitd runs in a mount
# namespace of its own where $BK_CA_BUNDLE (host bundle + internal CA) is
# bind-mounted over that file. In Kubernetes the same is done by mounting
# the CA bundle into the buildkitd pod at that path.
ca_changed=0
write_ca_bundle && ca_changed=1
for ((i = 1; i <= WORKERS; i++)); do
	s="$(sfx "$i")"
	name="buildkitd$s"
	bk_root="$STACK/buildkit$s"
	bk_sock="$STACK/buildkitd$s.sock"
	bk_otel="$STACK/buildkitd$s-otel.sock"
	bk_conf_file="$STACK/buildkitd$s.toml"
	bk_pid="${BK_PIDS[i - 1]}"
	# A unix socket's path fits in sun_path: 107 bytes and a NUL.
	for f in "$bk_sock" "$bk_otel"; do
		(($(printf '%s' "$f" | wc -c) <= 107)) ||
			die "$name's socket $f is longer than a unix socket path may be (107 bytes): use a clone with a shorter path"
	done
	mkdir -p "$bk_root"
	bk_conf="$(bk_config "$bk_root" "${BK_ADDRS[i - 1]}" "$bk_otel")"
	grep -qxF "root = \"$bk_root\"" <<<"$bk_conf" || die "could not rewrite root in deploy/buildkitd.toml"
	grep -qF "address = [ \"${BK_ADDRS[i - 1]}\" ]" <<<"$bk_conf" || die "could not rewrite grpc address in deploy/buildkitd.toml"
	bk_changed=$ca_changed
	write_if_changed "$bk_conf_file" <<<"$bk_conf" && bk_changed=1
	"$BIN/checkconfig" "$bk_conf_file" >/dev/null || die "generated $bk_conf_file is invalid"

	if pid_alive "$bk_pid" "$BIN/buildkitd" && ((bk_changed)); then
		log "$name config or CA bundle changed; restarting"
		stop_pid "$name" "$bk_pid" "$BIN/buildkitd"
	elif pid_alive "$bk_pid" "$BIN/buildkitd" && ! buildkitd_sees_bundle "$bk_pid"; then
		log "$name does not see $BK_CA_BUNDLE (started outside its mount namespace); restarting"
		stop_pid "$name" "$bk_pid" "$BIN/buildkitd"
	fi
	if ! pid_alive "$bk_pid" "$BIN/buildkitd"; then
		[[ $(id -u) -eq 0 ]] || die "buildkitd (OCI worker, overlayfs) must run as root"
		cleanup_buildkit_leftovers "$bk_root" "$bk_pid"
		rm -f "$bk_sock"
		# unshare and sh exec in the same process: the pid file names buildkitd.
		# shellcheck disable=SC2016 # $1 and $@ belong to the inner sh
		start_bg_exe "$name" "$bk_pid" "${BK_LOGS[i - 1]}" "$BIN/buildkitd" \
			unshare --mount --propagation private \
			sh -c 'mount --bind "$1" "$2" && mount -o remount,bind,ro "$2" && shift 2 && exec "$@"' \
			sh "$BK_CA_BUNDLE" "$SYSTEM_CA_BUNDLE" "$BIN/buildkitd" --config "$bk_conf_file"
	fi
done
for ((i = 1; i <= WORKERS; i++)); do
	wait_until "buildkitd$(sfx "$i")" 60 "${BK_PIDS[i - 1]}" "$BIN/buildkitd" "${BK_LOGS[i - 1]}" \
		"$BIN/buildctl" --addr "${BK_ADDRS[i - 1]}" debug workers
done

# ---------------------------------------------------------------- git daemon
GIT_PID="$RUN/git-daemon.pid"
GIT_LOG="$LOGS/git-daemon.log"
GIT_DAEMON="$(git --exec-path)/git-daemon"
[[ -x $GIT_DAEMON ]] || die "git-daemon not found at $GIT_DAEMON"
mkdir -p "$GIT_BASE_DIR"

# sample.git: one reproducible commit of testdata/sampleapp on branch main.
# It is reset to that commit whenever it differs (tests make their own repos).
ensure_sample_repo() {
	local bare="$GIT_BASE_DIR/sample.git" tmp want have
	tmp="$(mktemp -d)"
	# shellcheck disable=SC2064 # expand $tmp now
	trap "rm -rf '$tmp'" RETURN
	cp -a "$ROOT/testdata/sampleapp/." "$tmp/"
	(
		cd "$tmp"
		export GIT_AUTHOR_NAME="buildsvc" GIT_AUTHOR_EMAIL="buildsvc@example.com" \
			GIT_COMMITTER_NAME="buildsvc" GIT_COMMITTER_EMAIL="buildsvc@example.com" \
			GIT_AUTHOR_DATE="2024-01-01T00:00:00Z" GIT_COMMITTER_DATE="2024-01-01T00:00:00Z" \
			GIT_CONFIG_NOSYSTEM=1 GIT_CONFIG_GLOBAL=/dev/null
		git init -q -b main .
		git add -A
		git -c commit.gpgsign=false commit -q -m "sampleapp"
	)
	want="$(git -C "$tmp" rev-parse HEAD)"
	if [[ ! -d $bare ]]; then
		git init -q --bare -b main "$bare"
	fi
	have="$(git -C "$bare" rev-parse -q --verify refs/heads/main 2>/dev/null || true)"
	if [[ $have != "$want" ]]; then
		log "sample.git: main -> $want"
		git -C "$tmp" push -q --force "$bare" main:main
	fi
	git -C "$bare" symbolic-ref HEAD refs/heads/main
}
ensure_sample_repo

GIT_ARGS=(--export-all --reuseaddr --verbose
	--base-path="$GIT_BASE_DIR" --listen=127.0.0.1 --port="$GIT_PORT" "$GIT_BASE_DIR")
if write_if_changed "$RUN/git-daemon.args" < <(printf '%s\n' "${GIT_ARGS[@]}") &&
	pid_alive "$GIT_PID" "$GIT_DAEMON"; then
	log "git daemon flags changed; restarting"
	stop_pid git-daemon "$GIT_PID" "$GIT_DAEMON"
fi
if ! pid_alive "$GIT_PID" "$GIT_DAEMON"; then
	tcp_open "$GIT_PORT" && die "port $GIT_PORT is in use by another process (set GIT_PORT)"
	start_bg git-daemon "$GIT_PID" "$GIT_LOG" "$GIT_DAEMON" "${GIT_ARGS[@]}"
fi
wait_until git-daemon 15 "$GIT_PID" "$GIT_DAEMON" "$GIT_LOG" git ls-remote "$GIT_BASE_URL/sample.git"

# ---------------------------------------------------------------- private git
# Bare repos in $GIT_PRIVATE_DIR (not served by git daemon): private.git,
# privmod.git (tag v1.0.0), private-plain.git. Served over HTTPS with basic
# auth (user x-access-token, a token) and over ssh (key only, git-shell).
ensure_private_repos
ensure_git_https
check_git_https
ensure_sshd
check_git_ssh
verify_privateapp
for f in "${BK_PIDS[@]}"; do
	check_buildkitd_git_https "$f"
done

# ---------------------------------------------------------------- PKI and callers
# The stack's server runs secured like production: TLS with a CA of the
# stack's own, bearer tokens for two tenants ("dev" and "other") and an
# admin, and a client certificate for mTLS (tenant "dev"). Made once, kept.
PKI="$STACK/pki"
ensure_apt openssl
mkdir -p "$PKI"
chmod 700 "$PKI"
pki_cert() { # NAME SUBJECT EXTENSIONS: a key and a certificate signed by the stack's CA
	local name=$1 subj=$2 ext=$3
	[[ -s $PKI/$name.crt && -s $PKI/$name.key && $PKI/$name.crt -nt $PKI/ca.crt ]] && return 0
	log "pki: $name"
	openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "$subj" \
		-keyout "$PKI/$name.key" -out "$PKI/$name.csr" 2>/dev/null
	openssl x509 -req -in "$PKI/$name.csr" -CA "$PKI/ca.crt" -CAkey "$PKI/ca.key" -CAcreateserial \
		-days 825 -sha256 -extfile <(printf '%s\n' "$ext") -out "$PKI/$name.crt" 2>/dev/null
	rm -f "$PKI/$name.csr"
	chmod 600 "$PKI/$name.key"
}
if [[ ! -s $PKI/ca.crt || ! -s $PKI/ca.key ]]; then
	log "pki: a CA for the local stack"
	openssl req -x509 -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 3650 \
		-subj "/CN=buildsvc local stack CA" -addext "basicConstraints=critical,CA:TRUE" \
		-addext "keyUsage=critical,keyCertSign,cRLSign" -keyout "$PKI/ca.key" -out "$PKI/ca.crt" 2>/dev/null
	chmod 600 "$PKI/ca.key"
fi
pki_cert server "/CN=buildsvc-server" "subjectAltName=IP:127.0.0.1,DNS:localhost
extendedKeyUsage=serverAuth"
pki_cert client-dev "/CN=dev-mtls" "subjectAltName=URI:spiffe://buildsvc.local/tenant/dev/mtls
extendedKeyUsage=clientAuth"
for who in dev other admin; do
	if [[ ! -s $PKI/$who.token ]]; then
		(
			umask 077
			head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$PKI/$who.token"
		)
	fi
	chmod 600 "$PKI/$who.token"
done
token_hash() { printf '%s' "$(cat "$PKI/$1.token")" | sha256sum | cut -d' ' -f1; }
write_if_changed "$PKI/callers.yaml" <<EOF || true
# Generated by scripts/up.sh: who may call the stack's build server.
callers:
  - name: dev
    tenant: dev
    token_sha256: $(token_hash dev)
  - name: dev-mtls
    tenant: dev
    cert_san_uri: spiffe://buildsvc.local/tenant/dev/mtls
  - name: other
    tenant: other
    token_sha256: $(token_hash other)
  - name: admin
    admin: true
    token_sha256: $(token_hash admin)
EOF
chmod 600 "$PKI/callers.yaml"

# ---------------------------------------------------------------- postgres
# For the PostgreSQL history store's tests and benchmark (DATABASE_URL),
# and the history the server replicas share when BUILDSVC_REPLICAS > 1;
# a single build server keeps its history in bbolt.
postgres_up

# ---------------------------------------------------------------- build server
BUILDER_IMAGE="$(builder_image)"
BUILDER_MODE="${BUILDSVC_BUILDER_MODE:-persistent}"
# The module proxy: HTTPS (the go command sends its netrc credential only
# over HTTPS) with the internal CA's certificate, which the builds' download
# step trusts (--ca-bundle).
MODULE_PROXY_URL="https://localhost:$MODPROXY_PORT"
BASE_IMAGE="$(base_image)"
SRV_LOG="$LOGS/server.log"
SRV_BIN="$BIN/buildsvc-server"
if [[ ${STACK_NO_SERVER:-} == 1 ]]; then
	log "STACK_NO_SERVER=1: not building or starting the build server"
else
	[[ -d $ROOT/cmd/server && -d $ROOT/cmd/cli ]] ||
		die "cmd/server or cmd/cli does not exist yet (set STACK_NO_SERVER=1 to start the rest)"
	log "building the build server and CLI"
	(cd "$ROOT" && go build -o "$SRV_BIN.new" ./cmd/server) ||
		die "go build ./cmd/server failed (set STACK_NO_SERVER=1 to start the rest)"
	(cd "$ROOT" && go build -o "$BIN/buildsvc" ./cmd/cli) ||
		die "go build ./cmd/cli failed (set STACK_NO_SERVER=1 to start the rest)"
	srv_changed=0
	if [[ -x $SRV_BIN ]] && cmp -s "$SRV_BIN.new" "$SRV_BIN"; then
		rm -f "$SRV_BIN.new"
	else
		mv -f "$SRV_BIN.new" "$SRV_BIN"
		srv_changed=1
	fi
	# Its git hosts and registries are on 127.0.0.1: the host policy of the
	# server's own connections (resolving refs, checking and reading back
	# images, verifying builds) allows loopback, the git daemon's port,
	# sshd's and the two registries' (https is on 443). It trusts the
	# internal CA of the https git host and knows sshd's host key;
	# credentials come with each request (buildsvc build --git-token-file,
	# --git-ssh-key-file).
	# srv_args I: SRV_ARGS of replica I (1: the stack's server, as before
	# the replicas; with more than one, every replica has --database-url).
	# One key seals the page's sessions for every replica (and across
	# restarts).
	[[ -s $PKI/web-session.key ]] || (umask 077 && head -c 32 /dev/urandom >"$PKI/web-session.key")
	srv_args() {
		local i="$1" s mp
		s="$(sfx "$i")"
		mp="${SRV_MODPROXY_PORTS[i - 1]}"
		SRV_ARGS=(--listen "127.0.0.1:${SRV_PORTS[i - 1]}" --buildkit-addr "$BK_POOL"
			--docker-config "$DOCKER_CONFIG_DIR" --builder-image "$BUILDER_IMAGE" --base-image "$BASE_IMAGE"
			--goproxy "$(go env GOPROXY)" --allow-insecure-git --data-dir "$STACK/server$s"
			--allow-loopback-hosts --allowed-ports "$GIT_PORT,$SSH_PORT,$REGISTRY_PORT,$REGISTRY2_PORT"
			--ca-bundle "$INTERNAL_CA" --ssh-known-hosts "$GIT_SSH_KNOWN_HOSTS"
			--metrics-listen "127.0.0.1:${SRV_METRICS_PORTS[i - 1]}"
			--web-listen "127.0.0.1:${SRV_WEB_PORTS[i - 1]}" --web-session-key-file "$PKI/web-session.key"
			--tls-cert "$PKI/server.crt" --tls-key "$PKI/server.key" --tls-client-ca "$PKI/ca.crt"
			--callers "$PKI/callers.yaml" --build-user 65534:65534
			--module-proxy-listen "127.0.0.1:$mp" --module-proxy-url "https://localhost:$mp"
			--module-proxy-tls-cert "$INTERNAL_CERT" --module-proxy-tls-key "$INTERNAL_KEY"
			--build-cache-store)
		# BUILDSVC_BUILDER_MODE=ephemeral: each build on a fresh buildkitd of
		# the stack's binary and config (its own state under .stack/server),
		# trusting the internal CA like the stack's own.
		case $BUILDER_MODE in
		persistent) ;;
		ephemeral)
			SRV_ARGS+=(--builder-mode ephemeral --buildkitd-binary "$BIN/buildkitd"
				--buildkitd-config "$BK_CONF" --buildkitd-ca-bundle "$BK_CA_BUNDLE")
			;;
		*) die "BUILDSVC_BUILDER_MODE=$BUILDER_MODE: want persistent or ephemeral" ;;
		esac
		if ((REPLICAS > 1)); then
			SRV_ARGS+=(--database-url "$DATABASE_URL")
		fi
	}
	for ((i = 1; i <= REPLICAS; i++)); do
		s="$(sfx "$i")"
		srv_args "$i"
		# Restart also when the flags changed (ports, Go version, shape).
		changed=$srv_changed
		write_if_changed "$RUN/server$s.args" < <(printf '%s\n' "${SRV_ARGS[@]}") && changed=1
		if pid_alive "$RUN/server$s.pid" "$SRV_BIN" && ((changed)); then
			log "build server$s binary or flags changed; restarting"
			stop_pid "server$s" "$RUN/server$s.pid" "$SRV_BIN" 40
		fi
		if ! pid_alive "$RUN/server$s.pid" "$SRV_BIN"; then
			for p in "${SRV_PORTS[i - 1]}" "${SRV_METRICS_PORTS[i - 1]}" "${SRV_WEB_PORTS[i - 1]}"; do
				tcp_open "$p" && die "port $p (build server$s) is in use by another process (see $PORTS_FILE)"
			done
			start_bg "server$s" "$RUN/server$s.pid" "$LOGS/server$s.log" "$SRV_BIN" "${SRV_ARGS[@]}"
		fi
	done
	for ((i = 1; i <= REPLICAS; i++)); do
		s="$(sfx "$i")"
		wait_until "build server$s" 30 "$RUN/server$s.pid" "$SRV_BIN" "$LOGS/server$s.log" tcp_open "${SRV_PORTS[i - 1]}"
	done
fi

# ---------------------------------------------------------------- shrink
# Replicas and workers beyond the shape (a smaller BUILDSVC_REPLICAS or
# BUILDSVC_WORKERS than the last time), once the servers no longer list them.
for f in "$RUN"/server-*.pid; do
	i="${f##*/server-}" i="${i%.pid}"
	if [[ ! -e $f || ! $i =~ ^[0-9]+$ ]] || ((i <= REPLICAS)); then
		continue
	fi
	stop_pid "server-$i" "$f" "$SRV_BIN" 40
	rm -f "$RUN/server-$i.args"
done
for f in "$RUN"/buildkitd-*.pid; do
	i="${f##*/buildkitd-}" i="${i%.pid}"
	if [[ ! -e $f || ! $i =~ ^[0-9]+$ ]] || ((i <= WORKERS)); then
		continue
	fi
	stop_pid "buildkitd-$i" "$f" "$BIN/buildkitd"
	cleanup_buildkit_leftovers "$STACK/buildkit-$i" "$f"
	rm -f "$STACK/buildkitd-$i.sock" "$STACK/buildkitd-$i-otel.sock"
done

# ---------------------------------------------------------------- env
env_vars=(
	STACK_DIR="$STACK"
	BUILD_SERVER_ADDR="$BUILD_SERVER_ADDR"
	# Every replica (BUILDSVC_REPLICAS), the first being BUILD_SERVER_ADDR.
	BUILD_SERVER_ADDRS="$BUILD_SERVER_ADDRS"
	METRICS_ADDR="$METRICS_ADDR"
	# The web page of the first replica, and a link that signs the dev
	# tenant in (its token is exchanged for a session cookie and dropped
	# from the address bar). The stack's CA signs the certificate.
	WEB_ADDR="127.0.0.1:$WEB_PORT"
	WEB_URL="https://127.0.0.1:$WEB_PORT/session?token=$(cat "$PKI/dev.token")"
	BUILDKIT_ADDR="$BUILDKIT_ADDR"
	# Every worker of the servers' pool (BUILDSVC_WORKERS), the first being BUILDKIT_ADDR.
	BUILDKIT_ADDRS="$BUILDKIT_ADDRS"
	BUILDER_MODE="$BUILDER_MODE"
	MODULE_PROXY_URL="$MODULE_PROXY_URL"
	REGISTRY_ADDR="$REGISTRY_ADDR"
	REGISTRY_USER="$REGISTRY_USER"
	REGISTRY_PASSWORD_FILE="$PASSWORD_FILE"
	DOCKER_CONFIG="$DOCKER_CONFIG_DIR"
	GIT_BASE_URL="$GIT_BASE_URL"
	GIT_BASE_DIR="$GIT_BASE_DIR"
	BUILDER_IMAGE="$BUILDER_IMAGE"
	BASE_IMAGE="$BASE_IMAGE"
	# Read by the CLI: TLS with the stack's CA, the "dev" tenant's token.
	BUILDSVC_TLS_CA="$PKI/ca.crt"
	BUILDSVC_TOKEN_FILE="$PKI/dev.token"
	BUILDSVC_TOKEN_FILE_OTHER="$PKI/other.token"
	BUILDSVC_ADMIN_TOKEN_FILE="$PKI/admin.token"
	# mTLS as the "dev" tenant (instead of a token: --tls-cert/--tls-key).
	BUILDSVC_MTLS_CERT="$PKI/client-dev.crt"
	BUILDSVC_MTLS_KEY="$PKI/client-dev.key"
	# Private sources (scripts/private.sh). The internal CA signs the git
	# HTTPS server's and registry2's certificates.
	INTERNAL_CA="$INTERNAL_CA"
	GIT_HTTPS_URL="$GIT_HTTPS_URL"
	GIT_HTTPS_USER="$GIT_HTTPS_USER"
	GIT_HTTPS_TOKEN_FILE="$GIT_HTTPS_TOKEN_FILE"
	GIT_PRIVATE_DIR="$GIT_PRIVATE_DIR"
	SSH_PORT="$SSH_PORT"
	GIT_SSH_URL="$GIT_SSH_URL"
	GIT_SSH_KEY="$GIT_SSH_KEY"
	GIT_SSH_KNOWN_HOSTS="$GIT_SSH_KNOWN_HOSTS"
	GIT_SSH_KNOWN_HOSTS_WRONG="$GIT_SSH_KNOWN_HOSTS_WRONG"
	REGISTRY2_ADDR="$REGISTRY2_ADDR"
	REGISTRY2_USER="$REGISTRY2_USER"
	REGISTRY2_PASSWORD_FILE="$REGISTRY2_PASSWORD_FILE"
	# PostgreSQL (scripts/postgres.sh), trust authentication on 127.0.0.1.
	DATABASE_URL="$DATABASE_URL"
)
{
	printf '# Generated by scripts/up.sh. Source it: . .stack/env\n'
	for kv in "${env_vars[@]}"; do
		printf 'export %s=%q\n' "${kv%%=*}" "${kv#*=}"
	done
} | write_if_changed "$STACK/env" || true

server_line="$BUILD_SERVER_ADDR  (log $SRV_LOG)"
for ((i = 2; i <= REPLICAS; i++)); do
	server_line+=$'\n'"                127.0.0.1:${SRV_PORTS[i - 1]}  (log $LOGS/server-$i.log)"
done
((REPLICAS > 1)) && server_line+=$'\n'"                $REPLICAS replicas sharing the history in $DATABASE_URL"
[[ ${STACK_NO_SERVER:-} == 1 ]] && server_line="not started (STACK_NO_SERVER=1)"
buildkitd_line="$BUILDKIT_ADDR  (log $BK_LOG)"
for ((i = 2; i <= WORKERS; i++)); do
	buildkitd_line+=$'\n'"                ${BK_ADDRS[i - 1]}  (log ${BK_LOGS[i - 1]})"
done
cat <<EOF
Local stack is up (state in $STACK, env in $STACK/env):
  build server  $server_line
                TLS (CA $PKI/ca.crt); tokens: dev $PKI/dev.token, other $PKI/other.token, admin $PKI/admin.token
  metrics       http://$METRICS_ADDR/metrics
  web page      https://127.0.0.1:$WEB_PORT/  (sign in as dev: WEB_URL in .stack/env)
  buildkitd     $buildkitd_line
  registry      http://$REGISTRY_ADDR  user $REGISTRY_USER, password in $PASSWORD_FILE, DOCKER_CONFIG=$DOCKER_CONFIG_DIR
  git daemon    $GIT_BASE_URL/<name>.git  serving $GIT_BASE_DIR  (e.g. $GIT_BASE_URL/sample.git)
  internal CA   $INTERNAL_CA  (git HTTPS and registry2; buildkitd trusts it via $BK_CA_BUNDLE)
  git https     $GIT_HTTPS_URL/<name>.git  user $GIT_HTTPS_USER, token in $GIT_HTTPS_TOKEN_FILE  (log $GH_LOG)
  git ssh       $GIT_SSH_URL/<name>.git  key $GIT_SSH_KEY  (log $SSHD_LOG)
                known_hosts $GIT_SSH_KNOWN_HOSTS, a wrong one $GIT_SSH_KNOWN_HOSTS_WRONG
                private repos in $GIT_PRIVATE_DIR: private.git (needs privmod.git), privmod.git (v1.0.0), private-plain.git
  registry2     https://$REGISTRY2_ADDR  user $REGISTRY2_USER, password in $REGISTRY2_PASSWORD_FILE (not in DOCKER_CONFIG)
  postgres      $DATABASE_URL  (log $PG_LOG)
  images        $BUILDER_IMAGE
                $BASE_IMAGE
EOF
