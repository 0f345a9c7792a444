#!/usr/bin/env bash
# buildkitd-certs.sh: the certificates of buildkitd's mutual TLS, made with
# openssl: a CA, buildkitd's server certificate and the build server's
# client certificate, each signed by that CA.
#
# Usage: scripts/buildkitd-certs.sh [--san NAME]... [--client-cn NAME] [--days N] [DIR]
#
#   DIR              where the files go; default deploy/certs (git-ignored)
#                    [$BUILDKITD_CERTS_DIR]
#   --san NAME       a DNS name or IP address buildkitd is reached at; repeat it
#                    for more. Default: buildkitd, localhost, 127.0.0.1
#                    [$BUILDKITD_SANS, comma- or space-separated]
#   --client-cn NAME common name of the client certificate; default
#                    buildsvc-server [$BUILDKITD_CLIENT_CN]
#   --days N         validity of the two leaf certificates; default 825 (the CA:
#                    3650) [$BUILDKITD_CERT_DAYS]
#
# Files in DIR (keys are mode 0600, certificates 0644, DIR itself 0700):
#
#   ca.crt ca.key                the CA. buildkitd checks client certificates
#                                against ca.crt (--tlscacert), the server checks
#                                buildkitd's (--buildkit-ca). ca.key only makes
#                                certificates: keep it off the machines that run them.
#   buildkitd.crt buildkitd.key  buildkitd's certificate: --tlscert, --tlskey
#   client.crt client.key        the build server's: --buildkit-cert, --buildkit-key
#
# It is idempotent: a file that is still right is kept. The CA is kept while it
# has 30 days left; a leaf certificate is kept while it has 30 days left, is
# signed by the CA, matches its key and has the names asked for (the server
# certificate's names are recorded in buildkitd.san). Anything else is made
# again, and a new CA makes both leaf certificates again. To start over, remove
# DIR. The keys are ECDSA P-256.
#
# See docs/quickstart.md (docker compose) and docs/operations.md.

set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
DIR="${BUILDKITD_CERTS_DIR:-$ROOT/deploy/certs}"
CLIENT_CN="${BUILDKITD_CLIENT_CN:-buildsvc-server}"
DAYS="${BUILDKITD_CERT_DAYS:-825}"
CA_DAYS=3650
RENEW_SECONDS=$((30 * 24 * 3600))
SANS=()
if [[ -n ${BUILDKITD_SANS:-} ]]; then
	read -r -a SANS <<<"${BUILDKITD_SANS//,/ }"
fi

usage() {
	sed -n '6,17p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
	exit "${1:-2}"
}
die() {
	printf 'buildkitd-certs: %s\n' "$*" >&2
	exit 1
}
say() { printf 'buildkitd-certs: %s\n' "$*" >&2; }

sans_from_flags=()
dir_set=""
while (($#)); do
	case $1 in
	--san)
		(($# >= 2)) || usage
		sans_from_flags+=("$2")
		shift 2
		;;
	--san=*)
		sans_from_flags+=("${1#--san=}")
		shift
		;;
	--client-cn)
		(($# >= 2)) || usage
		CLIENT_CN=$2
		shift 2
		;;
	--client-cn=*)
		CLIENT_CN=${1#--client-cn=}
		shift
		;;
	--days)
		(($# >= 2)) || usage
		DAYS=$2
		shift 2
		;;
	--days=*)
		DAYS=${1#--days=}
		shift
		;;
	-h | --help) usage 0 ;;
	-*) usage ;;
	*)
		[[ -z $dir_set ]] || usage
		DIR=$1
		dir_set=1
		shift
		;;
	esac
done
((${#sans_from_flags[@]})) && SANS=("${sans_from_flags[@]}")
((${#SANS[@]})) || SANS=(buildkitd localhost 127.0.0.1)
[[ $DAYS =~ ^[1-9][0-9]*$ ]] || die "--days $DAYS: want a positive number of days"
[[ -n $CLIENT_CN && $CLIENT_CN != */* ]] || die "--client-cn '$CLIENT_CN': want a name without /"
command -v openssl >/dev/null || die "openssl is not installed (Debian/Ubuntu: apt-get install openssl)"

# The subjectAltName value of the server certificate: IP: for addresses
# (IPv4, or anything with a colon), DNS: for names.
san_ext=""
for s in "${SANS[@]}"; do
	[[ $s =~ ^[A-Za-z0-9.:_*-]+$ ]] || die "--san '$s': want a DNS name or an IP address"
	if [[ $s =~ ^[0-9]+\.[0-9]+\.[0-9]+\.[0-9]+$ || $s == *:* ]]; then
		san_ext+="${san_ext:+,}IP:$s"
	else
		san_ext+="${san_ext:+,}DNS:$s"
	fi
done

umask 077
mkdir -p "$DIR"
chmod 0700 "$DIR"
DIR="$(cd "$DIR" && pwd -P)"
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT

# valid FILE: the certificate parses and has 30 days left.
valid() { openssl x509 -in "$1" -noout -checkend "$RENEW_SECONDS" >/dev/null 2>&1; }
# matches CERT KEY: the key is the certificate's (both public keys equal).
matches() {
	local a b
	a="$(openssl x509 -in "$1" -noout -pubkey 2>/dev/null)" || return 1
	b="$(openssl pkey -in "$2" -pubout 2>/dev/null)" || return 1
	[[ -n $a && $a == "$b" ]]
}
# signed CERT: the CA signed it.
signed() { openssl verify -CAfile "$DIR/ca.crt" "$1" >/dev/null 2>&1; }
# subject_cn CERT: its common name.
subject_cn() { openssl x509 -in "$1" -noout -subject -nameopt multiline 2>/dev/null | sed -n 's/^ *commonName *= *//p'; }

newkey() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }
serial() { printf '0x%s' "$(openssl rand -hex 16)"; }

# sign NAME CN EXTENSIONS: a key and a certificate signed by the CA, written
# next to each other only when both are made.
sign() {
	local name=$1 cn=$2 ext=$3
	newkey "$TMP/$name.key"
	openssl req -new -key "$TMP/$name.key" -subj "/CN=$cn" -out "$TMP/$name.csr" 2>/dev/null
	printf '%s\n' "$ext" >"$TMP/$name.ext"
	openssl x509 -req -in "$TMP/$name.csr" -CA "$DIR/ca.crt" -CAkey "$DIR/ca.key" \
		-set_serial "$(serial)" -days "$DAYS" -sha256 -extfile "$TMP/$name.ext" \
		-out "$TMP/$name.crt" 2>/dev/null
	install -m 0600 "$TMP/$name.key" "$DIR/$name.key"
	install -m 0644 "$TMP/$name.crt" "$DIR/$name.crt"
}

# ---------------------------------------------------------------- CA
new_ca=0
if [[ -f $DIR/ca.crt && -f $DIR/ca.key ]] && valid "$DIR/ca.crt" && matches "$DIR/ca.crt" "$DIR/ca.key"; then
	say "kept $DIR/ca.crt"
else
	newkey "$TMP/ca.key"
	cat >"$TMP/ca.cnf" <<-'EOF'
		[req]
		distinguished_name = dn
		x509_extensions = v3_ca
		prompt = no
		[dn]
		CN = buildsvc buildkitd CA
		[v3_ca]
		basicConstraints = critical, CA:TRUE, pathlen:0
		keyUsage = critical, keyCertSign, cRLSign
		subjectKeyIdentifier = hash
	EOF
	openssl req -new -x509 -key "$TMP/ca.key" -config "$TMP/ca.cnf" -days "$CA_DAYS" -sha256 \
		-set_serial "$(serial)" -out "$TMP/ca.crt" 2>/dev/null
	install -m 0600 "$TMP/ca.key" "$DIR/ca.key"
	install -m 0644 "$TMP/ca.crt" "$DIR/ca.crt"
	new_ca=1
	say "made $DIR/ca.crt"
fi

# keep NAME: the certificate and key NAME.crt, NAME.key can stay. A key this
# user cannot read (given to a container's user, see docs/quickstart.md) is
# taken to match: making it again would undo that.
keep() {
	local crt=$DIR/$1.crt key=$DIR/$1.key
	((!new_ca)) && [[ -f $crt && -f $key ]] && valid "$crt" && signed "$crt" || return 1
	if [[ ! -r $key ]]; then
		say "cannot read $key (owned by $(stat -c %u "$key" 2>/dev/null || echo another user)); kept it unchecked"
		return 0
	fi
	matches "$crt" "$key"
}

# ---------------------------------------------------------------- buildkitd
if keep buildkitd && [[ -f $DIR/buildkitd.san && $(<"$DIR/buildkitd.san") == "$san_ext" ]]; then
	say "kept $DIR/buildkitd.crt ($san_ext)"
else
	sign buildkitd buildkitd "basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = $san_ext"
	printf '%s\n' "$san_ext" >"$DIR/buildkitd.san"
	chmod 0644 "$DIR/buildkitd.san"
	say "made $DIR/buildkitd.crt ($san_ext)"
fi

# ---------------------------------------------------------------- client
if keep client && [[ $(subject_cn "$DIR/client.crt") == "$CLIENT_CN" ]]; then
	say "kept $DIR/client.crt (CN $CLIENT_CN)"
else
	sign client "$CLIENT_CN" "basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = clientAuth"
	say "made $DIR/client.crt (CN $CLIENT_CN)"
fi
