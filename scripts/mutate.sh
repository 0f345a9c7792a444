#!/usr/bin/env bash
# Mutation testing with gremlins (github.com/go-gremlins/gremlins) over the
# unit tests of llb/, server/ and progress/: plain `go test` of the mutated
# package, no build tags, so integration/ (tag `integration`) never runs.
# Prints, per package, killed / lived / timed out / not viable / not covered,
# the efficacy and the mutant coverage, then every LIVED mutant (file:line:col,
# mutator) to act on. A report, not a gate: exits 0 when mutants live, non-zero
# only when gremlins could not run (or the unit tests fail before mutation).
#
# Environment:
#   MUTATE_PKGS      packages (dirs of the module), space or comma separated
#                    (default "llb server progress")
#   MUTATE_WORKERS   gremlins workers (default 1: 2 cores shared with other work)
#   MUTATE_TIMEOUT_COEFFICIENT
#                    a mutant's test run is TIMED OUT after this many times the
#                    unmutated coverage run (default 3, gremlins' own default)
#   MUTATE_REV       mutate a committed revision (git archive REV) instead of
#                    the working tree (tracked + untracked, not ignored, files)
#   MUTATE_FLAGS     extra `gremlins unleash` flags, e.g. "--invert-logical"
#   MUTATE_OUT       where the JSON reports, logs and summary go
#                    (default .stack/mutate, git-ignored)
#
# gremlins copies the whole module root once per worker, so it runs on a
# snapshot of the source files (no .git, no .stack with the stack's state)
# in a temporary directory; a concurrent edit of the tree cannot change a run.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
require_go
cd "$ROOT"

GREMLINS_VERSION="v0.6.0"
GREMLINS="$BIN/gremlins"

MUTATE_PKGS="${MUTATE_PKGS:-llb server progress}"
MUTATE_WORKERS="${MUTATE_WORKERS:-1}"
MUTATE_TIMEOUT_COEFFICIENT="${MUTATE_TIMEOUT_COEFFICIENT:-3}"
MUTATE_REV="${MUTATE_REV:-}"
MUTATE_FLAGS="${MUTATE_FLAGS:-}"
MUTATE_OUT="${MUTATE_OUT:-$STACK/mutate}"

[[ $MUTATE_WORKERS =~ ^[1-9][0-9]*$ ]] || die "MUTATE_WORKERS=$MUTATE_WORKERS is not a positive integer"
[[ $MUTATE_TIMEOUT_COEFFICIENT =~ ^[1-9][0-9]*$ ]] ||
	die "MUTATE_TIMEOUT_COEFFICIENT=$MUTATE_TIMEOUT_COEFFICIENT is not a positive integer"
command -v git >/dev/null 2>&1 || die "git is needed to snapshot the source files"
command -v jq >/dev/null 2>&1 || ensure_apt jq

# The module's own GOFLAGS plus -count=1: gremlins sets each mutant's timeout
# from the duration of its first (coverage) `go test`, which must therefore
# never be a cached result of a few milliseconds.
case " ${GOFLAGS:-} " in
*" -count="*) ;;
*) export GOFLAGS="${GOFLAGS:+$GOFLAGS }-count=1" ;;
esac

ensure_bin gremlins "$GREMLINS_VERSION" \
	env GOBIN="$BIN" GOFLAGS=-buildvcs=false go install "github.com/go-gremlins/gremlins/cmd/gremlins@$GREMLINS_VERSION"

# ---- snapshot of the sources ------------------------------------------------

# A short path under /tmp: unit tests put unix sockets in t.TempDir().
WORK="$(mktemp -d "${TMPDIR:-/tmp}/buildsvc-mutate.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
trap 'exit 130' INT TERM
SRC="$WORK/src"
mkdir -p "$SRC" "$WORK/tmp"

head_short="$(git rev-parse --short HEAD)"
if [[ -n $MUTATE_REV ]]; then
	rev_short="$(git rev-parse --short --verify "$MUTATE_REV^{commit}")" || die "MUTATE_REV=$MUTATE_REV is not a commit"
	git archive --format=tar "$rev_short" | tar -x -C "$SRC"
	source_label="commit $rev_short"
else
	# Tracked and untracked files that are not ignored, as they are now on
	# disk (a tracked file deleted in the work tree is left out).
	git ls-files -z --cached --others --exclude-standard |
		while IFS= read -r -d '' f; do
			[[ -f $f || -L $f ]] && printf '%s\0' "$f"
		done |
		tar --null -T - -cf - | tar -x -C "$SRC"
	source_label="working tree at $head_short"
	[[ -z "$(git status --porcelain --untracked-files=normal)" ]] || source_label+=" with uncommitted changes"
fi

# ---- packages ---------------------------------------------------------------

pkgs=()
for p in ${MUTATE_PKGS//,/ }; do
	p="${p#./}"
	p="${p%/...}"
	p="${p%/}"
	[[ -n $p && $p != /* && $p != *..* ]] || die "MUTATE_PKGS: $p is not a directory of the module"
	compgen -G "$SRC/$p/*.go" >/dev/null || die "MUTATE_PKGS: $p has no Go files"
	[[ " ${pkgs[*]} " == *" $p "* ]] || pkgs+=("$p")
done
((${#pkgs[@]} > 0)) || die "MUTATE_PKGS is empty"

mkdir -p "$MUTATE_OUT"
MUTATE_OUT="$(cd "$MUTATE_OUT" && pwd -P)" # gremlins runs in $SRC
for p in "${pkgs[@]}"; do
	rm -f "$MUTATE_OUT/${p//\//_}.json" "$MUTATE_OUT/${p//\//_}.log"
done

read -r -a extra_flags <<<"$MUTATE_FLAGS"

log "mutation testing of ${pkgs[*]} ($source_label): gremlins $GREMLINS_VERSION," \
	"$MUTATE_WORKERS worker(s), timeout coefficient $MUTATE_TIMEOUT_COEFFICIENT; reports in $MUTATE_OUT"

failed=()
declare -A took
t_all=$SECONDS
for p in "${pkgs[@]}"; do
	name="${p//\//_}"
	json="$MUTATE_OUT/$name.json"
	logf="$MUTATE_OUT/$name.log"
	log "gremlins unleash $p (log: $logf)"
	t0=$SECONDS
	rc=0
	# Each mutant runs `go test -failfast -timeout T <its package>` in a copy
	# of $SRC; no tags, no --integration (that would run ./... per mutant).
	(cd "$SRC" && TMPDIR="$WORK/tmp" "$GREMLINS" unleash \
		--workers "$MUTATE_WORKERS" \
		--timeout-coefficient "$MUTATE_TIMEOUT_COEFFICIENT" \
		--output "$json" \
		"${extra_flags[@]}" \
		"$SRC/$p") >"$logf" 2>&1 || rc=$?
	took[$p]=$((SECONDS - t0))
	if ((rc == 0)) && [[ ! -s $json ]] && grep -q 'No results to report' "$logf"; then
		warn "gremlins found nothing to mutate in $p"
		printf '{"files": []}\n' >"$json"
	fi
	if ((rc != 0)) || [[ ! -s $json ]]; then
		tail -n 40 "$logf" >&2 || true
		warn "gremlins failed on $p (exit $rc, ${took[$p]}s); log: $logf"
		failed+=("$p")
		continue
	fi
	log "$p done in ${took[$p]}s"
done
wall=$((SECONDS - t_all))

# ---- report -----------------------------------------------------------------

# counts P: "killed lived timed_out not_viable not_covered" from the JSON
# (gremlins' JSON has no timed-out total, so every status is counted from the
# mutation list).
counts() {
	jq -r '[.files[].mutations[].status] as $s
		| [("KILLED", "LIVED", "TIMED OUT", "NOT VIABLE", "NOT COVERED") as $k
			| [$s[] | select(. == $k)] | length] | @tsv' "$1"
}

# Efficacy = killed / (killed + lived); mutant coverage = (killed + lived) /
# (killed + lived + not covered): gremlins' own definitions, so timed-out and
# not-viable mutants are in neither.
pct() { # NUM DEN: the percentage to one decimal, "-" when DEN is 0
	awk -v n="$1" -v d="$2" 'BEGIN { if (d > 0) printf "%.1f", 100 * n / d; else printf "-" }'
}
pcts() { # NUM DEN: the same with a % sign
	local v
	v="$(pct "$1" "$2")"
	[[ $v == - ]] && printf -- '-' || printf '%s%%' "$v"
}

summary="$MUTATE_OUT/summary.tsv"
fmt='%-10s %7s %6s %9s %10s %11s %9s %9s %6s\n'
{
	printf '\nMutation testing, %s, gremlins %s, %s worker(s), %s\n' \
		"$source_label" "$GREMLINS_VERSION" "$MUTATE_WORKERS" "$(date -u +%F)"
	# shellcheck disable=SC2059 # $fmt is the table's format
	printf "$fmt" package killed lived "timed out" "not viable" "not covered" efficacy "mcover" time
}
printf 'package\tkilled\tlived\ttimed_out\tnot_viable\tnot_covered\tefficacy\tmutant_coverage\tseconds\n' >"$summary"
tk=0 tl=0 tt=0 tv=0 tn=0
for p in "${pkgs[@]}"; do
	json="$MUTATE_OUT/${p//\//_}.json"
	if [[ " ${failed[*]} " == *" $p "* ]]; then
		# shellcheck disable=SC2059
		printf "$fmt" "$p" FAILED - - - - - - "${took[$p]}s"
		continue
	fi
	IFS=$'\t' read -r k l t v n < <(counts "$json")
	tk=$((tk + k)) tl=$((tl + l)) tt=$((tt + t)) tv=$((tv + v)) tn=$((tn + n))
	eff="$(pct "$k" $((k + l)))"
	cov="$(pct $((k + l)) $((k + l + n)))"
	# shellcheck disable=SC2059
	printf "$fmt" "$p" "$k" "$l" "$t" "$v" "$n" "$(pcts "$k" $((k + l)))" "$(pcts $((k + l)) $((k + l + n)))" "${took[$p]}s"
	printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$p" "$k" "$l" "$t" "$v" "$n" "$eff" "$cov" "${took[$p]}" >>"$summary"
done
if ((${#pkgs[@]} - ${#failed[@]} > 1)); then
	# shellcheck disable=SC2059
	printf "$fmt" total "$tk" "$tl" "$tt" "$tv" "$tn" \
		"$(pcts "$tk" $((tk + tl)))" "$(pcts $((tk + tl)) $((tk + tl + tn)))" "${wall}s"
fi

for p in "${pkgs[@]}"; do
	[[ " ${failed[*]} " == *" $p "* ]] && continue
	json="$MUTATE_OUT/${p//\//_}.json"
	mapfile -t lived < <(jq -r --arg p "$p" '.files[] | .file_name as $f | .mutations[]
		| select(.status == "LIVED") | [$f, .line, .column, .type] | @tsv' "$json" |
		sort -t $'\t' -k1,1 -k2,2n -k3,3n |
		awk -F'\t' -v p="$p" '{ printf "  %s/%s:%s:%s %s\n", p, $1, $2, $3, $4 }')
	printf '\nLIVED in %s (%d):\n' "$p" "${#lived[@]}"
	((${#lived[@]} == 0)) && printf '  (none)\n'
	((${#lived[@]} == 0)) || printf '%s\n' "${lived[@]}"
done
printf '\nwall time %ss; JSON reports, logs and summary.tsv in %s\n' "$wall" "$MUTATE_OUT"

((${#failed[@]} == 0)) || die "gremlins did not complete for: ${failed[*]}"
