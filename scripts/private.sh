# shellcheck shell=bash
# shellcheck disable=SC2034 # the variables are for up.sh and .stack/env
# The local stack's "private sources", sourced by scripts/up.sh after lib.sh.
# Never run on its own. Everything listens on 127.0.0.1 only:
#
#   pki/internal-ca.*       an INTERNAL CA (not the stack CA of pki/ca.*, which
#                           is for the build server's own gRPC TLS), and
#   pki/internal-server.*   a server certificate from it (IP:127.0.0.1, DNS:localhost)
#   git-private/            bare repos private.git, privmod.git (tag v1.0.0),
#                           private-plain.git, each reset to one reproducible commit
#   git-https/token         the git HTTPS server's token (user x-access-token);
#                           bin/githttps (tools/buildkit/cmd/githttps) serves
#                           git-private/ as https://127.0.0.1/<name>.git on 443
#   ssh/                    sshd's host key, config and authorized_keys (one client
#                           key forced to git-shell), known_hosts and a WRONG one
#   registry2/              a second registry over TLS (internal CA), htpasswd
#                           user "team"; deliberately not in $DOCKER_CONFIG_DIR
#   buildkit-ca-bundle.crt  the host's CA bundle plus the internal CA, which
#                           buildkitd sees as /etc/ssl/certs/ca-certificates.crt
#
# Generated secrets (token, registry2 password, keys) are made once and kept.

INTERNAL_CA="$STACK/pki/internal-ca.crt"
INTERNAL_CA_KEY="$STACK/pki/internal-ca.key"
INTERNAL_CERT="$STACK/pki/internal-server.crt"
INTERNAL_KEY="$STACK/pki/internal-server.key"
SYSTEM_CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt
BK_CA_BUNDLE="$STACK/buildkit-ca-bundle.crt"

GIT_PRIVATE_DIR="$STACK/git-private"
GIT_HTTPS_DIR="$STACK/git-https"
GIT_HTTPS_USER="x-access-token"
GIT_HTTPS_TOKEN_FILE="$GIT_HTTPS_DIR/token"
GH_PID="$RUN/git-https.pid"
GH_LOG="$LOGS/git-https.log"

SSH_DIR="$STACK/ssh"
SSHD=/usr/sbin/sshd
SSHD_PID="$RUN/sshd.pid"
SSHD_LOG="$LOGS/sshd.log"
GIT_SSH_KEY="$SSH_DIR/client_key"
GIT_SSH_KNOWN_HOSTS="$SSH_DIR/known_hosts"
GIT_SSH_KNOWN_HOSTS_WRONG="$SSH_DIR/known_hosts.wrong"

REG2_DIR="$STACK/registry2"
REG2_PID="$RUN/registry2.pid"
REG2_LOG="$LOGS/registry2.log"
REGISTRY2_USER="team"
REGISTRY2_PASSWORD_FILE="$REG2_DIR/password"

# Fixed identity and dates: the same sources always give the same commits.
PRIVATE_GIT_ENV=(GIT_AUTHOR_NAME=buildsvc GIT_AUTHOR_EMAIL=buildsvc@example.com
	GIT_COMMITTER_NAME=buildsvc GIT_COMMITTER_EMAIL=buildsvc@example.com
	GIT_AUTHOR_DATE=2024-01-01T00:00:00Z GIT_COMMITTER_DATE=2024-01-01T00:00:00Z
	GIT_CONFIG_NOSYSTEM=1 GIT_CONFIG_GLOBAL=/dev/null)

# One scratch directory for this run (credentials files, a module cache),
# removed on exit, also when a check dies.
PRIVATE_TMP=""
private_tmp() {
	if [[ -z $PRIVATE_TMP ]]; then
		PRIVATE_TMP="$(mktemp -d "${TMPDIR:-/tmp}/buildsvc-private.XXXXXX")"
		trap 'rm -rf "$PRIVATE_TMP"' EXIT
	fi
}

# private_port VAR DEFAULT: VAR from the environment (validated, recorded in
# PORTS_FROM_ENV), else the one this stack last used ($PORTS_FILE), else DEFAULT.
private_port() {
	local var="$1" def="$2" v
	if [[ -n ${!var:-} ]]; then
		[[ ${!var} =~ ^[0-9]+$ ]] || die "$var=${!var} is not a port"
		PORTS_FROM_ENV+=" $var"
	elif [[ -f $PORTS_FILE ]] && v="$(awk -F= -v k="$var" '$1 == k && $2 ~ /^[0-9]+$/ { print $2; exit }' "$PORTS_FILE")" && [[ -n $v ]]; then
		printf -v "$var" '%s' "$v"
	else
		printf -v "$var" '%s' "$def"
	fi
}

# private_ports chooses SSH_PORT (12222) and REGISTRY2_PORT (15001) like the
# stack's other ports, and checks GIT_HTTPS_PORT (443, never moved).
private_ports() {
	private_port SSH_PORT 12222
	private_port REGISTRY2_PORT 15001
	choose_port SSH_PORT "$SSHD_PID" "$SSHD"
	choose_port REGISTRY2_PORT "$REG2_PID" "$BIN/registry"
	# Port 443 is not a default to move away from: the go command fetches a
	# module path like 127.0.0.1/privmod.git from https://127.0.0.1/ (443)
	# and nothing else, so the stack fails instead when 443 is taken.
	GIT_HTTPS_PORT="${GIT_HTTPS_PORT:-443}"
	[[ $GIT_HTTPS_PORT =~ ^[0-9]+$ ]] || die "GIT_HTTPS_PORT=$GIT_HTTPS_PORT is not a port"
	# Taken, and not by our server on that same port?
	if ! { pid_alive "$GH_PID" "$BIN/githttps" && grep -qxF "127.0.0.1:$GIT_HTTPS_PORT" "$RUN/git-https.args" 2>/dev/null; } &&
		port_taken "$GIT_HTTPS_PORT"; then
		die "port $GIT_HTTPS_PORT (the git HTTPS server) is in use by another process: $(port_owner "$GIT_HTTPS_PORT"). Port 443 is required by default because go fetches a module path like 127.0.0.1/privmod.git only from https://127.0.0.1/ (port 443); free it, or set GIT_HTTPS_PORT (the stack then only serves git there and module fetches of 127.0.0.1/... need a git insteadOf rewrite)"
	fi
	CHOSEN_PORTS+=" $GIT_HTTPS_PORT"
	REGISTRY2_ADDR="127.0.0.1:$REGISTRY2_PORT"
	GIT_HTTPS_URL="https://127.0.0.1"
	[[ $GIT_HTTPS_PORT == 443 ]] || GIT_HTTPS_URL+=":$GIT_HTTPS_PORT"
	GIT_SSH_URL="ssh://root@127.0.0.1:$SSH_PORT$GIT_PRIVATE_DIR"
}

# port_owner PORT: which process listens on 127.0.0.1:PORT (best effort).
port_owner() {
	local o
	o="$(ss -Hltnp "sport = :$1" 2>/dev/null | grep -o 'users:(.*)' | head -n 1)" || true
	printf '%s\n' "${o:-unknown process}"
}

# random_secret FILE hex|b64: make FILE (0600) with a random secret once.
random_secret() {
	local file="$1" kind="$2"
	if [[ ! -s $file ]]; then
		log "generating $file"
		(
			umask 077
			if [[ $kind == hex ]]; then
				head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$file"
			else
				head -c 32 /dev/urandom | base64 -w0 | tr -d '/+=' | cut -c1-32 >"$file"
			fi
		)
	fi
	chmod 600 "$file"
}

file_sha() { sha256sum "$1" | cut -c1-64; }

# ---------------------------------------------------------------- internal CA
# ensure_internal_ca: the internal CA (made once) and a server certificate
# from it, reissued when missing, older than the CA or expiring in 30 days.
ensure_internal_ca() {
	local pki="$STACK/pki" csr
	mkdir -p "$pki"
	chmod 700 "$pki"
	if [[ ! -s $INTERNAL_CA || ! -s $INTERNAL_CA_KEY ]]; then
		log "pki: an internal CA for the stack's private git and registry servers"
		openssl req -x509 -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 3650 \
			-subj "/CN=buildsvc local internal CA" -addext "basicConstraints=critical,CA:TRUE" \
			-addext "keyUsage=critical,keyCertSign,cRLSign" \
			-keyout "$INTERNAL_CA_KEY" -out "$INTERNAL_CA" 2>/dev/null
		chmod 600 "$INTERNAL_CA_KEY"
	fi
	if [[ ! -s $INTERNAL_CERT || ! -s $INTERNAL_KEY || ! $INTERNAL_CERT -nt $INTERNAL_CA ]] ||
		! openssl x509 -checkend 2592000 -noout -in "$INTERNAL_CERT" >/dev/null 2>&1; then
		log "pki: internal-server (127.0.0.1, localhost) from the internal CA"
		csr="$pki/internal-server.csr"
		openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=127.0.0.1" \
			-keyout "$INTERNAL_KEY" -out "$csr" 2>/dev/null
		openssl x509 -req -in "$csr" -CA "$INTERNAL_CA" -CAkey "$INTERNAL_CA_KEY" -CAcreateserial \
			-days 825 -sha256 -out "$INTERNAL_CERT" 2>/dev/null -extfile <(printf '%s\n' \
				"subjectAltName=IP:127.0.0.1,DNS:localhost" "extendedKeyUsage=serverAuth" \
				"basicConstraints=critical,CA:FALSE" "keyUsage=critical,digitalSignature")
		rm -f "$csr"
		chmod 600 "$INTERNAL_KEY"
	fi
	openssl verify -CAfile "$INTERNAL_CA" "$INTERNAL_CERT" >/dev/null ||
		die "$INTERNAL_CERT does not verify against $INTERNAL_CA"
}

# write_ca_bundle: the host's bundle plus the internal CA, for buildkitd.
# Returns 0 if it changed.
write_ca_bundle() {
	[[ -s $SYSTEM_CA_BUNDLE ]] || die "$SYSTEM_CA_BUNDLE is missing (package ca-certificates)"
	cat "$SYSTEM_CA_BUNDLE" "$INTERNAL_CA" | write_if_changed "$BK_CA_BUNDLE"
}

# buildkitd_sees_bundle PIDFILE: the running buildkitd's mount namespace has
# the current bundle at /etc/ssl/certs/ca-certificates.crt.
buildkitd_sees_bundle() {
	local pid
	pid="$(cat "$1")" || return 1
	cmp -s "/proc/$pid/root$SYSTEM_CA_BUNDLE" "$BK_CA_BUNDLE"
}

# git_https_env: `env` arguments for a git that trusts the internal CA for
# the git HTTPS server and sends the token (nothing from the host's git
# config; GIT_SSL_CAINFO, which some machines set, would override sslCAInfo).
git_https_env() {
	local auth
	auth="$(printf '%s:%s' "$GIT_HTTPS_USER" "$(cat "$GIT_HTTPS_TOKEN_FILE")" | base64 -w0)"
	GIT_HTTPS_ENV=(-u GIT_SSL_CAINFO -u GIT_SSL_CAPATH GIT_CONFIG_NOSYSTEM=1 GIT_CONFIG_GLOBAL=/dev/null GIT_TERMINAL_PROMPT=0
		GIT_CONFIG_COUNT=2
		GIT_CONFIG_KEY_0="http.$GIT_HTTPS_URL/.sslCAInfo" GIT_CONFIG_VALUE_0="$INTERNAL_CA"
		GIT_CONFIG_KEY_1="http.$GIT_HTTPS_URL/.extraHeader" GIT_CONFIG_VALUE_1="Authorization: Basic $auth")
}

# ---------------------------------------------------------------- registry2
# ensure_registry2: a second registry over TLS (internal CA) with htpasswd
# user "team". Its credentials are not in $DOCKER_CONFIG_DIR: they come only
# from build requests.
ensure_registry2() {
	local htpasswd="$REG2_DIR/htpasswd" changed=0 dc
	mkdir -p "$REG2_DIR/data"
	chmod 700 "$REG2_DIR"
	random_secret "$REGISTRY2_PASSWORD_FILE" b64
	if [[ ! -s $htpasswd || $REGISTRY2_PASSWORD_FILE -nt $htpasswd ]] ||
		! grep -q "^$REGISTRY2_USER:[$]2a[$]04[$]" "$htpasswd"; then
		(
			umask 077
			"$BIN/htpasswd" "$REGISTRY2_USER" "$REGISTRY2_PASSWORD_FILE" >"$htpasswd.tmp"
		)
		mv -f "$htpasswd.tmp" "$htpasswd"
		changed=1
	fi
	random_secret "$REG2_DIR/http-secret" b64
	# The certificate's hash is in the file so that a new certificate
	# restarts the registry like a config change.
	if write_if_changed "$REG2_DIR/config.yml"; then changed=1; fi <<EOF
# Generated by scripts/up.sh; edits are overwritten.
# certificate sha256 $(file_sha "$INTERNAL_CERT")
version: 0.1
log:
  level: info
storage:
  filesystem:
    rootdirectory: $REG2_DIR/data
  delete:
    enabled: true
http:
  addr: $REGISTRY2_ADDR
  secret: $(cat "$REG2_DIR/http-secret")
  tls:
    certificate: $INTERNAL_CERT
    key: $INTERNAL_KEY
    minimumtls: tls1.2
auth:
  htpasswd:
    realm: buildsvc-team
    path: $htpasswd
EOF
	chmod 600 "$REG2_DIR/config.yml"

	if pid_alive "$REG2_PID" "$BIN/registry" && ((changed)); then
		log "registry2 config changed; restarting"
		stop_pid registry2 "$REG2_PID" "$BIN/registry"
	fi
	if ! pid_alive "$REG2_PID" "$BIN/registry"; then
		tcp_open "$REGISTRY2_PORT" && die "port $REGISTRY2_PORT is in use by another process (set REGISTRY2_PORT)"
		OTEL_TRACES_EXPORTER=none start_bg registry2 "$REG2_PID" "$REG2_LOG" "$BIN/registry" serve "$REG2_DIR/config.yml"
	fi
	wait_until registry2 30 "$REG2_PID" "$BIN/registry" "$REG2_LOG" tcp_open "$REGISTRY2_PORT"

	# Over TLS trusting only the internal CA: team's credentials list it,
	# no credentials do not.
	private_tmp
	dc="$PRIVATE_TMP/registry2-docker"
	mkdir -p "$dc/team" "$dc/none"
	(
		umask 077
		printf '{"auths":{"%s":{"auth":"%s"}}}\n' "$REGISTRY2_ADDR" \
			"$(printf '%s:%s' "$REGISTRY2_USER" "$(cat "$REGISTRY2_PASSWORD_FILE")" | base64 -w0)" >"$dc/team/config.json"
	)
	printf '{}\n' >"$dc/none/config.json"
	wait_until "registry2 login" 15 "$REG2_PID" "$BIN/registry" "$REG2_LOG" \
		env DOCKER_CONFIG="$dc/team" SSL_CERT_FILE="$INTERNAL_CA" "$BIN/crane" catalog "$REGISTRY2_ADDR"
	if env DOCKER_CONFIG="$dc/none" SSL_CERT_FILE="$INTERNAL_CA" "$BIN/crane" catalog "$REGISTRY2_ADDR" >/dev/null 2>&1; then
		die "registry2 ($REGISTRY2_ADDR) answers without credentials"
	fi
	rm -rf "$dc"
}

# ---------------------------------------------------------------- repositories
# fixture_repo NAME SRC [TAG]: bare $GIT_PRIVATE_DIR/NAME with one
# reproducible commit of SRC on main (and TAG, lightweight, on it); reset
# whenever it differs.
fixture_repo() {
	local name="$1" src="$2" tag="${3:-}" bare="$GIT_PRIVATE_DIR/$1" work want have
	private_tmp
	work="$PRIVATE_TMP/repo-$name"
	rm -rf "$work"
	mkdir -p "$work"
	cp -a "$src/." "$work/"
	(
		cd "$work" || exit 1
		export "${PRIVATE_GIT_ENV[@]}"
		git init -q -b main .
		git add -A
		git -c commit.gpgsign=false commit -q -m "${name%.git}"
		[[ -z $tag ]] || git tag "$tag"
	)
	want="$(git -C "$work" rev-parse HEAD)"
	[[ -d $bare ]] || git init -q --bare -b main "$bare"
	have="$(git -C "$bare" rev-parse -q --verify refs/heads/main 2>/dev/null || true)"
	if [[ $have != "$want" ]]; then
		log "$name: main -> $want"
		git -C "$work" push -q --force "$bare" main:main
	fi
	if [[ -n $tag ]]; then
		have="$(git -C "$bare" rev-parse -q --verify "refs/tags/$tag" 2>/dev/null || true)"
		if [[ $have != "$want" ]]; then
			log "$name: tag $tag -> $want"
			git -C "$work" push -q --force "$bare" "refs/tags/$tag:refs/tags/$tag"
		fi
	fi
	git -C "$bare" symbolic-ref HEAD refs/heads/main
	rm -rf "$work"
}

# ensure_private_repos: privmod.git (module 127.0.0.1/privmod.git, v1.0.0),
# private.git (testdata/privateapp, which needs privmod) and
# private-plain.git (no dependencies, for the git credentials alone).
ensure_private_repos() {
	local plain
	mkdir -p "$GIT_PRIVATE_DIR"
	chmod 700 "$GIT_PRIVATE_DIR"
	fixture_repo privmod.git "$ROOT/testdata/privmod" v1.0.0
	fixture_repo private.git "$ROOT/testdata/privateapp"
	private_tmp
	plain="$PRIVATE_TMP/private-plain"
	mkdir -p "$plain"
	printf 'module example.com/privateplain\n\ngo 1.22\n' >"$plain/go.mod"
	cat >"$plain/main.go" <<'EOF'
// Command privateplain has no dependencies: building it needs only the
// credentials of the private git repository it is in.
package main

import "fmt"

func main() {
	fmt.Println("private-plain ok")
}
EOF
	fixture_repo private-plain.git "$plain"
	rm -rf "$plain"
}

# ---------------------------------------------------------------- git over HTTPS
# ensure_git_https: bin/githttps on 127.0.0.1:$GIT_HTTPS_PORT serving
# $GIT_PRIVATE_DIR, restarted when its flags, binary or certificate change.
ensure_git_https() {
	local args changed=0
	mkdir -p "$GIT_HTTPS_DIR"
	chmod 700 "$GIT_HTTPS_DIR"
	random_secret "$GIT_HTTPS_TOKEN_FILE" hex
	args=(-addr "127.0.0.1:$GIT_HTTPS_PORT" -cert "$INTERNAL_CERT" -key "$INTERNAL_KEY"
		-root "$GIT_PRIVATE_DIR" -user "$GIT_HTTPS_USER" -token-file "$GIT_HTTPS_TOKEN_FILE")
	# The token is read per request; the certificate and binary are not.
	if write_if_changed "$RUN/git-https.args" < <(printf '%s\n' "${args[@]}" \
		"# cert $(file_sha "$INTERNAL_CERT")" "# bin $(stamp_get githttps)"); then
		changed=1
	fi
	if pid_alive "$GH_PID" "$BIN/githttps" && ((changed)); then
		log "git HTTPS server flags, binary or certificate changed; restarting"
		stop_pid git-https "$GH_PID" "$BIN/githttps"
	fi
	if ! pid_alive "$GH_PID" "$BIN/githttps"; then
		tcp_open "$GIT_HTTPS_PORT" &&
			die "port $GIT_HTTPS_PORT is in use by another process: $(port_owner "$GIT_HTTPS_PORT") (the git HTTPS server needs it)"
		start_bg git-https "$GH_PID" "$GH_LOG" "$BIN/githttps" "${args[@]}"
	fi
	wait_until git-https 15 "$GH_PID" "$BIN/githttps" "$GH_LOG" \
		curl -sS -o /dev/null --cacert "$INTERNAL_CA" "$GIT_HTTPS_URL/"
}

# http_status URL [CURL ARGS...]: the HTTP status of a GET trusting the internal CA.
http_status() {
	local url="$1"
	shift
	curl -sS -o /dev/null -w '%{http_code}' --cacert "$INTERNAL_CA" "$@" "$url"
}

# check_git_https: 401 with a challenge without or with wrong credentials,
# and host git lists private.git with the token.
check_git_https() {
	local url="$GIT_HTTPS_URL/private.git/info/refs?service=git-upload-pack" s hdr want out err
	s="$(http_status "$url")"
	[[ $s == 401 ]] || die "git HTTPS without credentials: HTTP $s, want 401"
	hdr="$(curl -sS -D - -o /dev/null --cacert "$INTERNAL_CA" "$url" | tr -d '\r' | grep -i '^www-authenticate:' || true)"
	[[ $hdr == *"Basic realm="* ]] || die "git HTTPS 401 has no 'WWW-Authenticate: Basic realm=...' header (got: ${hdr:-none})"
	s="$(http_status "$url" -u "$GIT_HTTPS_USER:wrong-token")"
	[[ $s == 401 ]] || die "git HTTPS with a wrong token: HTTP $s, want 401"
	git_https_env
	want="$(git -C "$GIT_PRIVATE_DIR/private.git" rev-parse refs/heads/main)"
	out="$(env "${GIT_HTTPS_ENV[@]}" git ls-remote "$GIT_HTTPS_URL/private.git" refs/heads/main 2>&1)" ||
		die "git ls-remote $GIT_HTTPS_URL/private.git with the token failed: $out"
	[[ $out == "$want"$'\t'refs/heads/main ]] || die "git ls-remote $GIT_HTTPS_URL/private.git: got '$out', want $want"
	if err="$(env -u GIT_SSL_CAINFO -u GIT_SSL_CAPATH GIT_CONFIG_NOSYSTEM=1 GIT_CONFIG_GLOBAL=/dev/null GIT_TERMINAL_PROMPT=0 \
		GIT_CONFIG_COUNT=1 GIT_CONFIG_KEY_0="http.$GIT_HTTPS_URL/.sslCAInfo" GIT_CONFIG_VALUE_0="$INTERNAL_CA" \
		git ls-remote "$GIT_HTTPS_URL/private.git" 2>&1)"; then
		die "git ls-remote $GIT_HTTPS_URL/private.git without the token succeeded"
	fi
	[[ $err == *"could not read Username"* || $err == *"Authentication failed"* ]] ||
		die "git ls-remote without the token failed, but not for want of credentials: $err"
}

# check_buildkitd_git_https PIDFILE: BuildKit runs git with an environment
# of its own (PATH, HOME=/dev/null, GIT_CONFIG_NOSYSTEM=1, ...; nothing like
# GIT_SSL_CAINFO), so only the CA bundle libcurl has compiled in counts. In
# buildkitd's mount namespace that is the bundle with the internal CA; on the
# host it is not (the host's store stays as it is).
check_buildkitd_git_https() {
	local pid auth out
	pid="$(cat "$1")"
	auth="$(printf '%s:%s' "$GIT_HTTPS_USER" "$(cat "$GIT_HTTPS_TOKEN_FILE")" | base64 -w0)"
	local e=(-i PATH="$PATH" HOME=/dev/null GIT_CONFIG_NOSYSTEM=1 GIT_CONFIG_GLOBAL=/dev/null
		GIT_TERMINAL_PROMPT=0 LC_ALL=C
		GIT_CONFIG_COUNT=1 GIT_CONFIG_KEY_0=http.extraHeader GIT_CONFIG_VALUE_0="Authorization: Basic $auth")
	out="$(nsenter -t "$pid" -m env "${e[@]}" git ls-remote "$GIT_HTTPS_URL/private.git" refs/heads/main 2>&1)" ||
		die "git over HTTPS in buildkitd's mount namespace failed: $out"
	if env "${e[@]}" git ls-remote "$GIT_HTTPS_URL/private.git" >/dev/null 2>&1; then
		warn "the host's own CA bundle trusts the internal CA: tests that need a builder which does not trust it will not work"
	fi
}

# verify_privateapp: the host's go fetches 127.0.0.1/privmod.git@v1.0.0 over
# HTTPS with the token (git trusting the internal CA, credentials from a
# netrc in a scratch HOME, a scratch module cache), computes private.git's
# go.sum, which must equal testdata/privateapp/go.sum (the module's hash
# depends only on its files), and builds and runs the program. Skipped when
# nothing it depends on changed since the last success.
verify_privateapp() {
	local stamp stampfile="$RUN/privateapp.verified" t out
	stamp="privmod $(git -C "$GIT_PRIVATE_DIR/privmod.git" rev-parse refs/tags/v1.0.0)"
	stamp+=" private $(git -C "$GIT_PRIVATE_DIR/private.git" rev-parse refs/heads/main)"
	stamp+=" $(go env GOVERSION) $GIT_HTTPS_URL"
	[[ -f $stampfile && "$(cat "$stampfile")" == "$stamp" ]] && return 0
	log "private.git: checking go.sum and building it with the host's go over $GIT_HTTPS_URL"
	private_tmp
	t="$PRIVATE_TMP/privateapp"
	rm -rf "$t"
	mkdir -p "$t/home" "$t/src"
	cp -a "$ROOT/testdata/privateapp/." "$t/src/"
	rm -f "$t/src/go.sum"
	(
		umask 077
		printf 'machine 127.0.0.1 login %s password %s\n' "$GIT_HTTPS_USER" "$(cat "$GIT_HTTPS_TOKEN_FILE")" >"$t/home/.netrc"
		{
			printf '[http "%s/"]\n\tsslCAInfo = %s\n' "$GIT_HTTPS_URL" "$INTERNAL_CA"
			# go asks git for https://127.0.0.1/...; on another port, rewrite.
			[[ $GIT_HTTPS_URL == https://127.0.0.1 ]] ||
				printf '[url "%s/"]\n\tinsteadOf = https://127.0.0.1/\n' "$GIT_HTTPS_URL"
		} >"$t/home/.gitconfig"
	)
	local goenv=(-u GIT_SSL_CAINFO -u GIT_SSL_CAPATH HOME="$t/home" GOENV=off GOTOOLCHAIN=local GOPATH="$t/gopath" GOMODCACHE="$t/modcache"
		GOCACHE="$(go env GOCACHE)" GOPROXY="$(go env GOPROXY)" GOPRIVATE=127.0.0.1
		GOFLAGS="-mod=mod -modcacherw -buildvcs=false" NETRC="$t/home/.netrc" SSL_CERT_FILE="$BK_CA_BUNDLE"
		GIT_CONFIG_NOSYSTEM=1 GIT_CONFIG_GLOBAL="$t/home/.gitconfig" GIT_TERMINAL_PROMPT=0)
	out="$(cd "$t/src" && env "${goenv[@]}" go mod tidy 2>&1)" ||
		die "go mod tidy of testdata/privateapp against $GIT_HTTPS_URL/privmod.git failed: $out"
	cmp -s "$t/src/go.mod" "$ROOT/testdata/privateapp/go.mod" ||
		die "go mod tidy changes testdata/privateapp/go.mod:"$'\n'"$(diff -u "$ROOT/testdata/privateapp/go.mod" "$t/src/go.mod" 2>&1)"
	cmp -s "$t/src/go.sum" "$ROOT/testdata/privateapp/go.sum" ||
		die "testdata/privateapp/go.sum is not the go.sum computed from privmod.git:"$'\n'"$(diff -uN --label committed --label computed "$ROOT/testdata/privateapp/go.sum" "$t/src/go.sum" 2>&1)"
	out="$(cd "$t/src" && env "${goenv[@]}" go build -mod=readonly -o "$t/privateapp" . 2>&1)" ||
		die "go build of private.git's sources failed: $out"
	out="$("$t/privateapp")"
	[[ $out == "privateapp: hello from privmod" ]] || die "privateapp printed '$out'"
	env "${goenv[@]}" go clean -modcache
	rm -rf "$t"
	printf '%s\n' "$stamp" >"$stampfile"
}

# ---------------------------------------------------------------- sshd
# ssh_git_cmd KNOWN_HOSTS: GIT_SSH_COMMAND with the client key, only that
# known_hosts file and no ssh config.
ssh_git_cmd() {
	printf 'ssh -F /dev/null -i %q -o UserKnownHostsFile=%q -o GlobalKnownHostsFile=/dev/null -o IdentitiesOnly=yes -o BatchMode=yes' \
		"$GIT_SSH_KEY" "$1"
}

# ensure_sshd: a real sshd on 127.0.0.1:$SSH_PORT (user root, key only), its
# one client key forced to git-shell; known_hosts for it and a wrong one.
ensure_sshd() {
	local conf="$SSH_DIR/sshd_config" k
	mkdir -p "$SSH_DIR"
	chmod 700 "$SSH_DIR"
	for k in host_key client_key wrong_host_key; do
		if [[ ! -s $SSH_DIR/$k || ! -s $SSH_DIR/$k.pub ]]; then
			log "ssh: generating $SSH_DIR/$k"
			rm -f "$SSH_DIR/$k" "$SSH_DIR/$k.pub"
			ssh-keygen -q -t ed25519 -N '' -C "buildsvc-stack-${k//_/-}" -f "$SSH_DIR/$k"
		fi
		chmod 600 "$SSH_DIR/$k"
	done
	# The client key may only run git-shell (upload-pack, receive-pack).
	# shellcheck disable=SC2016 # $SSH_ORIGINAL_COMMAND is for the login shell
	printf '%s %s\n' 'command="git-shell -c \"$SSH_ORIGINAL_COMMAND\"",no-port-forwarding,no-pty,no-agent-forwarding,no-X11-forwarding' \
		"$(cat "$GIT_SSH_KEY.pub")" | write_if_changed "$SSH_DIR/authorized_keys" || true
	chmod 600 "$SSH_DIR/authorized_keys"
	printf '[127.0.0.1]:%s %s\n' "$SSH_PORT" "$(cut -d' ' -f1,2 "$SSH_DIR/host_key.pub")" |
		write_if_changed "$GIT_SSH_KNOWN_HOSTS" || true
	printf '[127.0.0.1]:%s %s\n' "$SSH_PORT" "$(cut -d' ' -f1,2 "$SSH_DIR/wrong_host_key.pub")" |
		write_if_changed "$GIT_SSH_KNOWN_HOSTS_WRONG" || true
	local changed=0
	if write_if_changed "$conf"; then changed=1; fi <<EOF
# Generated by scripts/up.sh; edits are overwritten.
# host key $(cut -d' ' -f1,2 "$SSH_DIR/host_key.pub")
Port $SSH_PORT
ListenAddress 127.0.0.1
AddressFamily inet
HostKey $SSH_DIR/host_key
PidFile $SSHD_PID
AuthorizedKeysFile $SSH_DIR/authorized_keys
AllowUsers root
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
AllowTcpForwarding no
AllowAgentForwarding no
AllowStreamLocalForwarding no
X11Forwarding no
PermitTunnel no
PermitUserEnvironment no
PrintMotd no
LogLevel INFO
EOF
	[[ -x $SSHD ]] || die "$SSHD is missing (package openssh-server)"
	mkdir -p /run/sshd
	chmod 755 /run/sshd
	"$SSHD" -t -f "$conf" || die "sshd rejects $conf"
	if pid_alive "$SSHD_PID" "$SSHD" && ((changed)); then
		log "sshd config changed; restarting"
		stop_pid sshd "$SSHD_PID" "$SSHD"
	fi
	if ! pid_alive "$SSHD_PID" "$SSHD"; then
		tcp_open "$SSH_PORT" && die "port $SSH_PORT is in use by another process (set SSH_PORT)"
		# -D: stay in the foreground (start_bg keeps the pid); -E: log file.
		start_bg sshd "$SSHD_PID" "$SSHD_LOG" "$SSHD" -D -f "$conf" -E "$SSHD_LOG"
	fi
	wait_until sshd 15 "$SSHD_PID" "$SSHD" "$SSHD_LOG" \
		env GIT_SSH_COMMAND="$(ssh_git_cmd "$GIT_SSH_KNOWN_HOSTS")" GIT_CONFIG_NOSYSTEM=1 GIT_CONFIG_GLOBAL=/dev/null \
		git ls-remote "$GIT_SSH_URL/private.git"
}

# check_git_ssh: ls-remote over ssh gives private.git's commit; with the
# wrong known_hosts the host key is refused.
check_git_ssh() {
	local want out
	want="$(git -C "$GIT_PRIVATE_DIR/private.git" rev-parse refs/heads/main)"
	out="$(env GIT_SSH_COMMAND="$(ssh_git_cmd "$GIT_SSH_KNOWN_HOSTS")" GIT_CONFIG_NOSYSTEM=1 GIT_CONFIG_GLOBAL=/dev/null \
		git ls-remote "$GIT_SSH_URL/private.git" refs/heads/main 2>&1)" ||
		die "git ls-remote $GIT_SSH_URL/private.git failed: $out (log: $SSHD_LOG)"
	[[ $out == "$want"$'\t'refs/heads/main ]] || die "git ls-remote $GIT_SSH_URL/private.git: got '$out', want $want"
	if out="$(env GIT_SSH_COMMAND="$(ssh_git_cmd "$GIT_SSH_KNOWN_HOSTS_WRONG")" GIT_CONFIG_NOSYSTEM=1 GIT_CONFIG_GLOBAL=/dev/null \
		git ls-remote "$GIT_SSH_URL/private.git" 2>&1)"; then
		die "git over ssh with $GIT_SSH_KNOWN_HOSTS_WRONG succeeded"
	fi
	[[ $out == *"Host key verification failed"* ]] ||
		die "git over ssh with the wrong known_hosts failed, but not on the host key: $out"
}
