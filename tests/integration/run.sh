#!/bin/sh
# Runs every tests/integration/t_*.sh and prints a closing count line.
# BUILD names the build directory; VALGRIND=1 runs stubborn under valgrind;
# T_ONLY=pattern runs the matching files only.
cd "$(dirname "$0")" || exit 1
BUILD=${BUILD:-build}
export BUILD
passed=0
failed=0
for t in t_*.sh; do
	case "$t" in *${T_ONLY:-}*) ;; *) continue ;; esac
	# A hung test file must not hang the suite (valgrind runs are slower).
	limit=180
	[ -n "${VALGRIND:-}" ] && limit=900
	out=$(timeout -k 5 "$limit" bash "$t" 2>&1)
	echo "$out"
	p=$(printf '%s\n' "$out" | grep -c '^ok - ')
	f=$(printf '%s\n' "$out" | grep -c '^not ok - ')
	# A test file that died before reporting counts as a failure.
	[ "$p" -eq 0 ] && [ "$f" -eq 0 ] && f=1
	passed=$((passed + p))
	failed=$((failed + f))
done
echo "integration: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
