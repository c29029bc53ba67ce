#!/bin/bash
# Serve-stale side by side: stubborn and Unbound (serve-expired), each
# forwarding to the same fakeup upstream on 127.0.0.1.  Run by hand; it is
# not part of `make check`.
#
# Scenario (tests/integration/t_stale.sh part a): 20 names with TTL 2 are
# cached through the daemon, they expire (3 s), the upstream goes silent
# (fakeup "mode drop"); then
#   - the first query for one of them: latency, rcode, EDE, TTL, address
#   - BENCH_RATE (100) qps over the same 20 names for BENCH_SECONDS (4):
#     p50/p90/p99/max, lost, NOERROR, right address, EDE 3 count
# Unbound: serve-expired yes, serve-expired-client-timeout 400,
# serve-expired-ttl 86400, serve-expired-reply-ttl 30, ede yes.
# stubborn: defaults (stale-client-timeout 400, stale-ttl 30).
#
# Knobs: BENCH_RATE, BENCH_SECONDS, BENCH_THREADS (2), BENCH_DAEMONS
# ("stubborn unbound").  Everything listens on 127.0.0.1; nothing is sent
# anywhere else.
[ -n "${BASH_VERSION:-}" ] || exec bash "$0" "$@"

. "$(dirname "$0")/lib.sh"
# shellcheck disable=SC2034  # T_NAME is used by lib.sh
T_NAME=bench-stale

RATE=${BENCH_RATE:-100}
SECS=${BENCH_SECONDS:-4}
THREADS=${BENCH_THREADS:-2}
DAEMONS=${BENCH_DAEMONS:-stubborn unbound}
NNAMES=20

for tool in unbound python3 dig; do
	command -v "$tool" >/dev/null || { echo "bench: $tool is not installed"; exit 1; }
done
[ -x "$STUBBORN" ] && [ -x "$FAKEUP" ] || { echo "bench: build first (make all)"; exit 1; }

# The rate-paced helper lives in t_stale.sh (one copy): extract it.
STALELOAD="$T_TMP/staleload.py"
sed -n "/^cat >\"\\\$STALELOAD\" <<'PYEOF'\$/,/^PYEOF\$/{//!p}" \
    "$ROOT/tests/integration/t_stale.sh" >"$STALELOAD"
python3 -m py_compile "$STALELOAD" 2>/dev/null && [ -s "$STALELOAD" ] ||
    { echo "bench: cannot extract the load helper from t_stale.sh"; exit 1; }

now_ms() { echo $(($(date +%s%N) / 1000000)); }
json() {
	python3 -c 'import json,sys
d = json.load(open(sys.argv[1]))
v = eval(sys.argv[2])
print("-" if v is None else v)' "$1" "$2" 2>/dev/null || echo "?"
}
ans() { awk -v f="$1" '/^;; ANSWER SECTION:/ { s = 1; next } s && NF == 0 { exit }
	s && $4 == "A" { print $f; exit }'; }

start_fakeup up || exit 1

# start_daemon NAME: sets D_PORT, D_PID.
start_daemon() {
	case $1 in
	stubborn)
		start_stubborn --upstream "127.0.0.1:$FK_PORT_up" \
		    --workers "$THREADS" --log-level warn || return 1
		D_PORT=$STUB_PORT D_PID=$STUB_PID
		NOTE[stubborn]="$("$STUBBORN" --version), $THREADS workers, defaults (stale-client-timeout 400 ms, stale-ttl 30, upstream-timeout 1000 ms, circuit-failures 3)"
		;;
	unbound)
		D_PORT=$(pick_port)
		start_unbound 127.0.0.1 "$D_PORT" "$THREADS" example "\
	qname-minimisation: no
	serve-expired: yes
	serve-expired-client-timeout: 400
	serve-expired-ttl: 86400
	serve-expired-reply-ttl: 30
	ede: yes" \
		    "127.0.0.1@$FK_PORT_up" || { echo "bench: unbound did not start"; return 1; }
		D_PID=$UB_PID
		NOTE[unbound]="unbound $(unbound_version), $THREADS threads, serve-expired yes, client-timeout 400, expired-ttl 86400, reply-ttl 30, ede yes"
		;;
	esac
}

stop_daemon() {
	kill -TERM "$D_PID" 2>/dev/null
	wait_pid "$D_PID" 10
}

declare -A NOTE RES FIRST
for d in $DAEMONS; do
	echo "bench: --- $d ---"
	fk_ctl up "mode normal" >/dev/null
	start_daemon "$d" || continue
	tag=$d$$
	names="$T_TMP/names.$d"
	: >"$names"
	bad=0
	for i in $(seq 1 $NNAMES); do
		n=ttl2.s$i-$tag.stale.example
		out=$(dig @127.0.0.1 -p "$D_PORT" "$n" A +tries=1 +time=3 2>&1)
		a=$(printf '%s\n' "$out" | ans 5)
		[ -n "$a" ] || bad=$((bad + 1))
		echo "$n $a" >>"$names"
	done
	t_cached=$(now_ms)
	[ "$bad" -gt 0 ] && echo "bench: $d: $bad of $NNAMES names not cached"
	d_ms=$((t_cached + 3000 - $(now_ms)))
	[ "$d_ms" -gt 0 ] && sleep "$(awk -v d="$d_ms" 'BEGIN { printf "%.3f", d / 1000 }')"
	fk_ctl up "mode drop" >/dev/null
	n1=$(head -n1 "$names" | cut -d' ' -f1)
	out=$(dig @127.0.0.1 -p "$D_PORT" "$n1" A +tries=1 +time=5 2>&1)
	st=$(printf '%s\n' "$out" | dig_status)
	ede=$(printf '%s\n' "$out" | sed -n 's/.*EDE: \([0-9]*\).*/\1/p' | head -n1)
	addr_ok=no
	[ "$(printf '%s\n' "$out" | ans 5)" = "$(head -n1 "$names" | cut -d' ' -f2)" ] && addr_ok=yes
	FIRST[$d]=$(printf '%6s ms  %-8s EDE %-4s TTL %-4s addr %s' \
	    "$(printf '%s\n' "$out" | sed -n 's/^;; Query time: \([0-9]*\) msec.*/\1/p')" \
	    "${st:-none}" "${ede:--}" "$(printf '%s\n' "$out" | ans 2)" "$addr_ok")
	echo "bench: $d first stale query: ${FIRST[$d]}"
	f="$T_TMP/load.$d.json"
	python3 "$STALELOAD" --port "$D_PORT" --rate "$RATE" --seconds "$SECS" \
	    --timeout 2 --names "$names" >"$f"
	RES[$d]=$(printf '%5s/%-5s %7s %6s %6s  %8s %8s %8s %8s  %5s' \
	    "$(json "$f" 'd["lost"]')" "$(json "$f" 'd["sent"]')" \
	    "$(json "$f" 'd["rcodes"].get("NOERROR", 0)')" \
	    "$(json "$f" 'd["wrong_addr"]')" \
	    "$(json "$f" 'd["ede"].get("3", 0)')" \
	    "$(json "$f" 'd["latency_ms"]["p50"]')" \
	    "$(json "$f" 'd["latency_ms"]["p90"]')" \
	    "$(json "$f" 'd["latency_ms"]["p99"]')" \
	    "$(json "$f" 'd["latency_ms"]["max"]')" \
	    "$(json "$f" 'd["over_50ms"]')")
	echo "bench: $d load: rcodes $(json "$f" 'd["rcodes"]'), TTL $(json "$f" 'd["ttl_min"]')..$(json "$f" 'd["ttl_max"]'), slowest $(json "$f" '" ".join("%s@%.2fs=%sms" % (s["name"].split(".")[1], s["t"], s["ms"]) for s in d["slow"][:5])')"
	echo "bench: $d upstream queries for its names during the outage phase: $(($(fk_count up "$tag") - NNAMES))"
	stop_daemon
done

echo
echo "bench: $(nproc) CPUs; $NNAMES names with TTL 2 cached, expired, upstream silent (drop)"
echo "first query after expiry (dig):"
for d in $DAEMONS; do
	[ -n "${FIRST[$d]:-}" ] && printf '  %-9s %s\n' "$d" "${FIRST[$d]}"
done
echo "then $RATE qps over the same $NNAMES names for $SECS s (latency over answered queries):"
printf '  %-9s %-11s %7s %6s %6s  %8s %8s %8s %8s  %5s\n' daemon lost/sent NOERROR wrong 'EDE 3' 'p50 ms' 'p90 ms' 'p99 ms' 'max ms' '>50ms'
for d in $DAEMONS; do
	[ -n "${RES[$d]:-}" ] && printf '  %-9s %s\n' "$d" "${RES[$d]}"
done
for d in $DAEMONS; do
	[ -n "${NOTE[$d]:-}" ] && echo "  $d: ${NOTE[$d]}"
done
exit 0
