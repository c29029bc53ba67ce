#!/bin/sh
# Config file checks (OpenBSD bgpd style).  For every tests/config/N.ok,
# runs `$BUILD/stubborn --config tests/config/N.conf --check-config` and
# compares with N.ok: its first line is the expected exit status, the rest
# the expected stdout+stderr (the print-back for a good file, the
# "stubborn: file:line: problem" line for a bad one).  A good file's
# print-back must also load again and print the same.  Then the shipped
# config/stubborn.conf must pass, its print-back must parse again, and it
# must mention every config key.
#
# The .conf files name their upstreams or a resolv-conf under tests/config,
# and good ones set workers, so nothing depends on the host.
#
# Usage: BUILD=build sh tests/config/run.sh   (from anywhere)

set -u
cd "$(dirname "$0")/../.." || exit 1
BUILD=${BUILD:-build}
BIN=$BUILD/stubborn
DIR=tests/config

if [ ! -x "$BIN" ]; then
	echo "tests/config/run.sh: $BIN is missing; run make first" >&2
	exit 1
fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/stubborn-config.XXXXXX") || exit 1
trap 'rm -rf "$tmp"' EXIT INT TERM

passed=0
failed=0

pass()
{
	passed=$((passed + 1))
}

# fail NAME WHY
fail()
{
	failed=$((failed + 1))
	echo "FAIL $1: $2"
}

# check_config FILE [FLAGS...]: runs --check-config; output in $tmp/out,
# exit status in $status.
check_config()
{
	conf=$1
	shift
	"$BIN" --config "$conf" --check-config "$@" >"$tmp/out" 2>&1
	status=$?
}

# reparses NAME PRINTBACK [FLAGS...]: the print-back loads as a config file
# and prints itself again.  Comment lines (where upstreams came from) are
# not part of the configuration and may differ.
reparses()
{
	name=$1
	printed=$2
	shift 2
	cp "$printed" "$tmp/again.conf"
	if ! "$BIN" --config "$tmp/again.conf" --check-config "$@" \
	    >"$tmp/again.out" 2>&1; then
		fail "$name" "print-back does not load: $(cat "$tmp/again.out")"
		return 1
	fi
	grep -v '^#' "$printed" >"$tmp/a"
	grep -v '^#' "$tmp/again.out" >"$tmp/b"
	if ! cmp -s "$tmp/a" "$tmp/b"; then
		fail "$name" "print-back of the print-back differs"
		diff -u "$tmp/a" "$tmp/b" | sed 's/^/    /'
		return 1
	fi
	return 0
}

for ok in "$DIR"/*.ok; do
	name=${ok%.ok}
	conf=$name.conf
	name=${name##*/}
	if [ ! -f "$conf" ]; then
		fail "$name" "$conf is missing"
		continue
	fi
	check_config "$conf"
	{
		echo "$status"
		cat "$tmp/out"
	} >"$tmp/got"
	if ! cmp -s "$ok" "$tmp/got"; then
		fail "$name" "output differs from $ok"
		diff -u "$ok" "$tmp/got" | sed 's/^/    /'
		continue
	fi
	if [ "$status" -eq 0 ]; then
		cp "$tmp/out" "$tmp/printed"
		reparses "$name" "$tmp/printed" || continue
	fi
	pass
done

# The shipped config, with upstreams from a resolv.conf we control.
ship=config/stubborn.conf
check_config "$ship" --resolv-conf "$DIR/resolv.local"
cp "$tmp/out" "$tmp/ship.out"
if [ "$status" -ne 0 ]; then
	fail "$ship" "--check-config exits $status: $(cat "$tmp/ship.out")"
elif grep -qv '^[a-z#]' "$tmp/ship.out"; then
	fail "$ship" "--check-config printed more than the configuration"
	sed 's/^/    /' "$tmp/ship.out"
else
	pass
	if reparses "$ship print-back" "$tmp/ship.out" \
	    --resolv-conf "$DIR/resolv.local"; then
		pass
	fi
	# Every key it prints must be documented in the shipped file.
	missing=
	# Keys whose value is "none" print as "# key: ...".
	for key in $(sed -n -e 's/^\([a-z-]*\) = .*/\1/p' \
	    -e 's/^# \([a-z-]*\): .*/\1/p' "$tmp/ship.out" | sort -u); do
		grep -q "^#\{0,1\}$key = " "$ship" || missing="$missing $key"
	done
	if [ -n "$missing" ]; then
		fail "$ship" "keys not documented:$missing"
	else
		pass
	fi
fi

# README's configuration table must have a row for every option --help
# lists, and the shipped file must mention every one that is a config key.
missing=
for opt in $("$BIN" --help | sed -n 's/^  --\([a-z0-9-]*\).*/\1/p'); do
	grep -q "^| \`$opt[ \`]" README.md || missing="$missing $opt"
done
if [ -n "$missing" ]; then
	fail README.md "options without a row in the configuration table:$missing"
else
	pass
fi

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
