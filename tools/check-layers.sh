#!/bin/sh
# Enforces DESIGN.md's module layering (config sits in layer 1 here, not 2:
# it calls only log, and upstream needs its address type): resolver/<m>.c may include only
# headers of modules in strictly lower layers (plus its own), so the call
# graph has no cycles.  Prints "layers: N passed, M failed".
cd "$(dirname "$0")/.." || exit 1
layer() {
	case "$1" in
	log | clock | stamp) echo 0 ;;
	rng | wire | acl | ratelimit | metrics | config) echo 1 ;;
	cache | msg | upstream | cookie | dnscrypt) echo 2 ;;
	snapshot | forward) echo 3 ;;
	listen) echo 4 ;;
	worker) echo 5 ;;
	main) echo 6 ;;
	*) echo unknown ;;
	esac
}
pass=0
fail=0
for f in resolver/*.c; do
	m=$(basename "$f" .c)
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
