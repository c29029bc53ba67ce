#!/bin/bash
# Upstream selection side by side: stubborn and Unbound, each forwarding to
# the same three fakeup upstreams on 127.0.0.1, under the same load of cache
# misses (tests/integration/loadgen.py, steady rate).  Run by hand; it is not
# part of `make check`.
#
#   1. A silent (drop), B 40 ms slower (delay 40), C fast, configured in that
#      order.  RATE qps for 12 s.  Shares of the upstream queries sent for
#      client queries after the first 3 s, lost, SERVFAIL, client p50/p99.
#   2. Recovery: A becomes fast (normal), C slow (delay 40); the same load for
#      up to 30 s: seconds until A carries > 50% of the upstream queries in
#      a 3-second window (from the fakeup logs, polled every second).
#
# Knobs: BENCH_RATE (150 qps), BENCH_THREADS (2 stubborn workers / unbound
# threads), BENCH_DAEMONS ("stubborn unbound").
# Everything listens on 127.0.0.1; nothing is sent anywhere else.
[ -n "${BASH_VERSION:-}" ] || exec bash "$0" "$@"

. "$(dirname "$0")/lib.sh"
# shellcheck disable=SC2034  # T_NAME is used by lib.sh
T_NAME=bench-pool
LOADGEN="python3 $ROOT/tests/integration/loadgen.py"

RATE=${BENCH_RATE:-150}
THREADS=${BENCH_THREADS:-2}
DAEMONS=${BENCH_DAEMONS:-stubborn unbound}
SKIP=3
SECS1=12
SECS2=30
NSKIP=$((SKIP * RATE))

for tool in unbound python3; do
	command -v "$tool" >/dev/null || { echo "bench: $tool is not installed"; exit 1; }
done
[ -x "$STUBBORN" ] && [ -x "$FAKEUP" ] || { echo "bench: build first (make all)"; exit 1; }

now_ms() { echo $(($(date +%s%N) / 1000000)); }

# fk_run NAME RUN [NMIN]: log lines of fakeup NAME for loadgen run RUN with
# query number >= NMIN (query N is sent N/RATE s after the run starts).
fk_run() {
	local log
	eval "log=\$FK_LOG_$1"
	awk -v run="$2" -v a="${3:-0}" '
	{ n = tolower($2)
	  if (n ~ ("^q[0-9]+-" run "\\.")) {
		k = substr(n, 2, index(n, "-") - 2) + 0
		if (k >= a) c++ } }
	END { print c + 0 }' "$log"
}

# window_A RUN: "S X Y": the first 3-s window [S, S+3) of sending time in
# which A got X of the Y upstream queries of run RUN with 2X > Y, or "none".
# LAST (optional) is the last whole second to consider.
window_A() {
	awk -v run="$1" -v r="$RATE" -v last="${2:-999999}" '
	{ n = tolower($2)
	  if (n ~ ("^q[0-9]+-" run "\\.")) {
		k = int((substr(n, 2, index(n, "-") - 2) + 0) / r)
		t[k]++; if (FILENAME ~ /fk-A\.log$/) a[k]++; if (k > m) m = k } }
	END {
		if (m > last) m = last
		for (s = 0; s + 2 <= m; s++) {
			x = a[s] + a[s+1] + a[s+2]; y = t[s] + t[s+1] + t[s+2]
			if (y > 0 && 2 * x > y) { printf "%d %d %d\n", s, x, y; exit }
		}
		print "none"
	}' "$FK_LOG_A" "$FK_LOG_B" "$FK_LOG_C"
}

json() {
	python3 -c 'import json,sys
d = json.load(open(sys.argv[1]))
v = eval(sys.argv[2])
print("-" if v is None else v)' "$1" "$2" 2>/dev/null || echo "?"
}
pct() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b ? 100 * a / b : 0 }'; }

start_fakeup A || exit 1
start_fakeup B || exit 1
start_fakeup C || exit 1

# start_daemon NAME: sets D_PORT, D_PID.
start_daemon() {
	case $1 in
	stubborn)
		start_stubborn --upstream "127.0.0.1:$FK_PORT_A" \
		    --upstream "127.0.0.1:$FK_PORT_B" --upstream "127.0.0.1:$FK_PORT_C" \
		    --workers "$THREADS" --log-level warn || return 1
		D_PORT=$STUB_PORT D_PID=$STUB_PID
		NOTE[stubborn]="$("$STUBBORN" --version), $THREADS workers, defaults (policy fastest, upstream-timeout 1000 ms)"
		;;
	unbound)
		D_PORT=$(pick_port)
		start_unbound 127.0.0.1 "$D_PORT" "$THREADS" example "\
	qname-minimisation: no" \
		    "127.0.0.1@$FK_PORT_A" "127.0.0.1@$FK_PORT_B" "127.0.0.1@$FK_PORT_C" || { echo "bench: unbound did not start"; return 1; }
		D_PID=$UB_PID
		NOTE[unbound]="unbound $(unbound_version), $THREADS threads, defaults"
		;;
	esac
}

stop_daemon() {
	kill -TERM "$D_PID" 2>/dev/null
	wait_pid "$D_PID" 10
}

declare -A NOTE RES1 RES2
for d in $DAEMONS; do
	echo "bench: --- $d ---"
	fk_ctl A "mode drop" >/dev/null
	fk_ctl B "mode delay 40" >/dev/null
	fk_ctl C "mode normal" >/dev/null
	start_daemon "$d" || continue

	# 1. silent, slow, fast.
	run=p1$d$$
	$LOADGEN --port "$D_PORT" --rate "$RATE" --seconds $SECS1 --skip-first $SKIP \
	    --run "$run" >"$T_TMP/1.$d.json"
	nA=$(fk_run A "$run" $NSKIP) nB=$(fk_run B "$run" $NSKIP) nC=$(fk_run C "$run" $NSKIP)
	tot=$((nA + nB + nC))
	f="$T_TMP/1.$d.json"
	RES1[$d]=$(printf '%6s%% %6s%% %6s%%  %5s  %5s/%-5s %8s %8s %8s  %5s' \
	    "$(pct $nC $tot)" "$(pct $nB $tot)" "$(pct $nA $tot)" \
	    "$(awk -v a=$tot -v b=$(( $(json "$f" 'd["after_skip"]["sent"]') )) 'BEGIN{printf "%.2f", b ? a/b : 0}')" \
	    "$(json "$f" 'd["lost"]')" "$(json "$f" 'd["sent"]')" \
	    "$(json "$f" 'd["rcodes"].get("SERVFAIL", 0)')" \
	    "$(json "$f" 'd["after_skip"]["latency_ms"]["p50"]')" \
	    "$(json "$f" 'd["after_skip"]["latency_ms"]["p99"]')" \
	    "$(json "$f" 'd["latency_ms"]["p99"]')")
	echo "bench: $d scenario 1: after ${SKIP}s upstream queries fast=$nC slow=$nB silent=$nA; client rcodes $(json "$f" 'd["rcodes"]')"

	# 2. recovery.
	run=p2$d$$
	fk_ctl A "mode normal" >/dev/null
	fk_ctl C "mode delay 40" >/dev/null
	$LOADGEN --port "$D_PORT" --rate "$RATE" --seconds $SECS2 \
	    --run "$run" >"$T_TMP/2.$d.json" &
	lg=$!
	t0=$(now_ms)
	rec=none
	while kill -0 "$lg" 2>/dev/null && [ $(($(now_ms) - t0)) -lt $(((SECS2 + 1) * 1000)) ]; do
		sleep 1
		# Whole seconds only: the current one is still being sent.
		rec=$(window_A "$run" $(( ($(now_ms) - t0) / 1000 - 1 )))
		if [ "$rec" != none ]; then sleep 1; break; fi
	done
	kill -INT "$lg" 2>/dev/null
	wait_pid "$lg" 15
	rec=$(window_A "$run")
	f="$T_TMP/2.$d.json"
	if [ "$rec" = none ]; then
		RES2[$d]=$(printf 'not within %ss' $SECS2)
	else
		set -- $rec
		RES2[$d]=$(printf '%ss (window [%s,%s) s: %s of %s = %s%%)' "$1" "$1" $(($1 + 3)) "$2" "$3" "$(pct $2 $3)")
	fi
	RES2[$d]="${RES2[$d]}; upstream queries A=$(fk_run A "$run") B=$(fk_run B "$run") C=$(fk_run C "$run"); lost $(json "$f" 'd["lost"]')/$(json "$f" 'd["sent"]'), SERVFAIL $(json "$f" 'd["rcodes"].get("SERVFAIL", 0)'), p50 $(json "$f" 'd["latency_ms"]["p50"]') ms, p99 $(json "$f" 'd["latency_ms"]["p99"]') ms"
	echo "bench: $d scenario 2: ${RES2[$d]}"
	stop_daemon
done

echo
echo "bench: $(nproc) CPUs; $RATE qps of unique names (cache misses); upstreams A silent, B +40 ms, C fast, configured A, B, C"
echo "scenario 1 ($SECS1 s; shares and p50/p99 over queries sent after ${SKIP} s; lost/SERVFAIL over the whole run)"
printf '%-9s %7s %7s %7s  %5s  %-11s %8s %8s %8s  %s\n' daemon fast slow silent 'up/q' lost/sent SERVFAIL 'p50 ms' 'p99 ms' 'p99 all'
for d in $DAEMONS; do
	[ -n "${RES1[$d]:-}" ] && printf '%-9s %s\n' "$d" "${RES1[$d]}"
done
echo "scenario 2 (A recovers, C slows; up to $SECS2 s): seconds after the switch until A carries > 50% in a 3-s window"
for d in $DAEMONS; do
	[ -n "${RES2[$d]:-}" ] && printf '%-9s %s\n' "$d" "${RES2[$d]}"
done
for d in $DAEMONS; do
	[ -n "${NOTE[$d]:-}" ] && echo "  $d: ${NOTE[$d]}"
done
exit 0
