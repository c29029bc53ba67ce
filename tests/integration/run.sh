#!/bin/bash
# Runs every tests/integration/t_*.sh and prints a closing count line.
# BUILD names the build directory; VALGRIND=1 runs stubborn under valgrind;
# T_ONLY=pattern runs the matching files only; JOBS=N runs N files at once
# (default 4, on 2 cores too: they mostly wait on sockets and timers, even
# under valgrind, and each picks its own ports and addresses).
cd "$(dirname "$0")" || exit 1
BUILD=${BUILD:-build}
JOBS=${JOBS:-4}
export BUILD
out=$(mktemp -d "${TMPDIR:-/tmp}/stubborn-run.XXXXXX") || exit 1
trap 'rm -rf "$out"' EXIT INT TERM
# Ports claimed by the files of this run (lib.sh pick_port).
mkdir "$out/ports" || exit 1
export T_PORT_DIR="$out/ports"
# A hung test file must not hang the suite (valgrind runs are slower).
limit=180
[ -n "${VALGRIND:-}" ] && limit=900

files=""
for t in t_*.sh; do
	case "$t" in *${T_ONLY:-}*) files="$files $t" ;; esac
done
# Longest first, so two slow files do not end up last and alone.
files=$(for t in $files; do echo "$(wc -l <"$t") $t"; done | sort -rn |
    awk '{ print $2 }')
running=0
for t in $files; do
	if [ "$running" -ge "$JOBS" ]; then
		wait -n
		running=$((running - 1))
	fi
	(timeout -k 5 "$limit" bash "$t" >"$out/$t.log" 2>&1; echo $? >"$out/$t.rc") &
	running=$((running + 1))
done
wait
passed=0
failed=0
skipped=0
for t in t_*.sh; do
	[ -f "$out/$t.log" ] || continue
	cat "$out/$t.log"
	p=$(grep -c '^ok - ' "$out/$t.log")
	f=$(grep -c '^not ok - ' "$out/$t.log")
	s=$(grep -c '^SKIP - ' "$out/$t.log")
	# A test file that died before reporting counts as a failure.
	[ "$p" -eq 0 ] && [ "$f" -eq 0 ] && [ "$s" -eq 0 ] && f=1
	# ... and so does one that exited non-zero with nothing failed.
	[ "$f" -eq 0 ] && [ "$(cat "$out/$t.rc")" != 0 ] && f=1
	passed=$((passed + p))
	failed=$((failed + f))
	skipped=$((skipped + s))
done
echo "integration: $passed passed, $failed failed, $skipped skipped"
[ "$failed" -eq 0 ]
