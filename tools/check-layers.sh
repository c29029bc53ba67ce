#!/bin/sh
# Enforces the module layering of README's module map: resolver/<m>.c may
# include only headers of modules in strictly lower layers (plus its own),
# so the call graph has no cycles.  Header-only modules (client, xport,
# check) have a layer too.  Prints "layers: N passed, M failed".
cd "$(dirname "$0")/.." || exit 1
layer() {
	case "$1" in
	log | clock | stamp | client | check) echo 0 ;;
	rng | wire | ratelimit | metrics | config | timer) echo 1 ;;
	cache | msg | upstream | cookie | upconn | dnscrypt) echo 2 ;;
	snapshot | route | reply) echo 3 ;;
	xport | inflight) echo 4 ;;
	attempt | xnet) echo 5 ;;
	engine) echo 6 ;;
	pipeline) echo 7 ;;
	listen) echo 8 ;;
	worker) echo 9 ;;
	control) echo 10 ;;
	main) echo 11 ;;
	*) echo unknown ;;
	esac
}
pass=0
fail=0
for f in resolver/*.c include/stubborn/*.h; do
	case "$f" in
	*.c) m=$(basename "$f" .c) ;;
	*) m=$(basename "$f" .h) ;;
	esac
	lm=$(layer "$m")
	if [ "$lm" = unknown ]; then
		echo "check-layers: $f: module $m is not in the layer table"
		fail=$((fail + 1))
		continue
	fi
	for h in $(sed -n 's/^#include "stubborn\/\([a-z_]*\)\.h".*/\1/p' "$f"); do
		[ "$h" = "$m" ] && continue
		lh=$(layer "$h")
		if [ "$lh" = unknown ] || [ "$lh" -ge "$lm" ]; then
			echo "check-layers: $f (layer $lm) includes $h.h (layer $lh)"
			fail=$((fail + 1))
		else
			pass=$((pass + 1))
		fi
	done
done
echo "layers: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
