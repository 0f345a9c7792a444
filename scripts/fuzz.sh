#!/usr/bin/env bash
# Runs every fuzz target for a short budget (FUZZTIME, default 4000x: four
# thousand inputs each, a few seconds), one `go test -fuzz` per target since
# -fuzz takes one package and one target. The default is a count, not a
# duration: with a duration, Go 1.26's fuzzing coordinator can fail a target
# with a bare "context deadline exceeded" when the deadline fires while a
# worker is busy (go.dev/issue/75804, fixed in Go 1.27), which a loaded CI
# machine hits; a count has no deadline to race.
# Starts no service. Fails if any target fails; a failing input is written
# to the package's testdata/fuzz/<FuzzName>/ by go test (docs/fuzzing.md).
#
#   FUZZTIME=5m bash scripts/fuzz.sh             # longer (a duration works too)
#   FUZZ_TARGETS=FuzzLogMasker bash scripts/fuzz.sh   # some targets only
#   FUZZ_PARALLEL=1 bash scripts/fuzz.sh         # fuzzing workers (default 2)
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
require_go
cd "$ROOT"

FUZZTIME="${FUZZTIME:-4000x}"
FUZZ_PARALLEL="${FUZZ_PARALLEL:-2}"
FUZZ_TARGETS="${FUZZ_TARGETS:-}"

# package target, one a line.
TARGETS="
./server FuzzParseRequest
./server FuzzLogMasker
./server FuzzParseCredentials
./progress FuzzFromSolveStatus
./cmd/server FuzzReadConfigFile
./buildfilter FuzzParse
"

failed=()
ran=0
t0=$SECONDS
while read -r pkg target; do
	[[ -n $pkg ]] || continue
	if [[ -n $FUZZ_TARGETS && ",${FUZZ_TARGETS// /,}," != *",$target,"* ]]; then
		continue
	fi
	log "fuzz $target in $pkg for $FUZZTIME"
	t=$SECONDS
	rc=0
	go test -run '^$' -fuzz "^${target}\$" -fuzztime "$FUZZTIME" -parallel "$FUZZ_PARALLEL" "$pkg" || rc=$?
	ran=$((ran + 1))
	if ((rc != 0)); then
		failed+=("$target ($pkg)")
		log "fuzz $target FAILED after $((SECONDS - t))s; the input is in $pkg/testdata/fuzz/$target/"
	else
		log "fuzz $target passed in $((SECONDS - t))s"
	fi
done <<<"$TARGETS"

((ran > 0)) || die "no fuzz target matches FUZZ_TARGETS=$FUZZ_TARGETS"
log "fuzzing: $ran target(s) in $((SECONDS - t0))s"
if ((${#failed[@]} > 0)); then
	die "fuzz targets failed: ${failed[*]}"
fi
