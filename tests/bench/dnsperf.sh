#!/bin/bash
# Side-by-side cache-hit throughput: stubborn and Unbound (and dnsmasq or
# dnsdist when they happen to be installed) forward to the same fakeup
# upstream on 127.0.0.1, each is warmed with the query set, then dnsperf
# runs unthrottled against each in turn, in the same run, on the same
# machine.  Prints the QPS of each and the ratio stubborn/unbound.
# Uncapped: every process may use every CPU.  Run it by hand (`make bench`
# runs tests/bench/compare.sh); it is not part of `make check`.
#
# Knobs: BENCH_SECONDS (3), BENCH_NAMES (1000 names, A and AAAA each),
# BENCH_ROUNDS (1; with more, the order alternates and the median run of
# each counts: on a small shared machine single runs vary by +-30%), BENCH_THREADS (2 stubborn workers / unbound threads).
# Everything listens on 127.0.0.1; nothing is sent anywhere else.
[ -n "${BASH_VERSION:-}" ] || exec bash "$0" "$@"

. "$(dirname "$0")/lib.sh"
T_NAME=bench

SECS=${BENCH_SECONDS:-3}
NAMES=${BENCH_NAMES:-1000}
ROUNDS=${BENCH_ROUNDS:-1}
THREADS=${BENCH_THREADS:-2}
DNSPERF_ARGS="-c 4 -T 2 -l $SECS"

for tool in dnsperf unbound; do
	command -v "$tool" >/dev/null || { echo "bench: $tool is not installed"; exit 1; }
done
[ -x "$STUBBORN" ] && [ -x "$FAKEUP" ] || { echo "bench: build first (make all)"; exit 1; }

qf="$T_TMP/queries.txt"
for i in $(seq 1 "$NAMES"); do
	printf 'h%d.bench.test A\nh%d.bench.test AAAA\n' "$i" "$i"
done >"$qf"
nq=$(wc -l <"$qf" | tr -d ' ')

# Long TTLs: nothing may expire during the run.
start_fakeup up --zone-ttl 3600 || exit 1

# ---- the servers ------------------------------------------------------------
declare -A PORT NOTE STOP
SERVERS=""

# dnsperf is one client address warming 2000 names at once: lift the
# per-client miss limit (200 qps) and the per-upstream budget (800 qps),
# both meant for real traffic, so every name is cached, as it is for the
# other servers, which have no such limits.  The run itself is cache hits.
start_stubborn --upstream "127.0.0.1:$FK_PORT_up" --workers "$THREADS" \
    --log-level warn --client-qps 1000000 --upstream-qps 1000000 || exit 1
PORT[stubborn]=$STUB_PORT
NOTE[stubborn]="$("$STUBBORN" --version), $THREADS workers"
SERVERS="stubborn"

UB_PORT=$(pick_port)
if start_unbound 127.0.0.1 "$UB_PORT" "$THREADS" test "\
	so-reuseport: yes
	msg-cache-size: 64m
	rrset-cache-size: 128m" "127.0.0.1@$FK_PORT_up"; then
	PORT[unbound]=$UB_PORT
	NOTE[unbound]="unbound $(unbound_version), $THREADS threads"
	SERVERS="$SERVERS unbound"
else
	echo "bench: unbound did not start"
fi

if command -v dnsmasq >/dev/null; then
	DM_PORT=$(pick_port)
	if start_dnsmasq 127.0.0.1 "$DM_PORT" "127.0.0.1#$FK_PORT_up" 10000 \
	    --keep-in-foreground --user=root; then
		PORT[dnsmasq]=$DM_PORT
		NOTE[dnsmasq]="dnsmasq $(dnsmasq_version), single-threaded"
		SERVERS="$SERVERS dnsmasq"
	fi
else
	echo "bench: dnsmasq is not installed, skipped"
fi
if command -v dnsdist >/dev/null; then
	DD_PORT=$(pick_port)
	if start_dnsdist 127.0.0.1 "$DD_PORT" "127.0.0.1:$FK_PORT_up" 100000; then
		PORT[dnsdist]=$DD_PORT
		NOTE[dnsdist]="dnsdist $(dnsdist_version)"
		SERVERS="$SERVERS dnsdist"
	fi
else
	echo "bench: dnsdist is not installed, skipped"
fi

# ---- warm, then measure ---------------------------------------------------------
# dnsperf SERVER [extra args]: prints its report.
perf() {
	local s=$1; shift
	timeout $((SECS + 30)) dnsperf -s 127.0.0.1 -p "${PORT[$s]}" -d "$qf" "$@" 2>&1
}
field() { sed -n "s/^ *$1: *\([0-9.]*\).*/\1/p" | head -n1; }

for s in $SERVERS; do
	# Every question once, throttled so nothing is dropped, then a check
	# pass: a warm server sends nothing upstream.
	perf "$s" -n 1 -Q 5000 -c 1 >"$T_TMP/warm.$s" 
	before=$(fk_count up)
	perf "$s" -n 1 -Q 5000 -c 1 >"$T_TMP/check.$s"
	after=$(fk_count up)
	echo "bench: $s warmed with $nq questions; a second pass sent $((after - before)) upstream"
done

declare -A RUNS BEST LAT LOST UP
for r in $(seq 1 "$ROUNDS"); do
	order=$SERVERS
	# Alternate the order on even rounds.
	[ $((r % 2)) -eq 0 ] && order=$(echo $SERVERS | tr ' ' '\n' | tac | tr '\n' ' ')
	for s in $order; do
		before=$(fk_count up)
		# shellcheck disable=SC2086
		out=$(perf "$s" $DNSPERF_ARGS)
		after=$(fk_count up)
		qps=$(echo "$out" | field 'Queries per second')
		lost=$(echo "$out" | field 'Queries lost')
		lat=$(echo "$out" | field 'Average Latency (s)')
		printf 'bench: round %d %-8s %10.0f qps  lost %s  avg latency %s s  upstream queries %d\n' \
		    "$r" "$s" "${qps:-0}" "${lost:-?}" "${lat:-?}" $((after - before))
		RUNS[$s]="${RUNS[$s]:-}${qps:-0} ${lat:-?} ${lost:-?} $((after - before))
"
	done
done
# The median run by QPS (the lower middle one for an even count).
for s in $SERVERS; do
	read -r BEST[$s] LAT[$s] LOST[$s] UP[$s] <<<"$(printf '%s' "${RUNS[$s]}" |
	    sort -n -k1,1 | awk '{ l[NR] = $0 } END { print l[int((NR + 1) / 2)] }')"
done

echo
echo "bench: median of $ROUNDS run(s); cache hits, $nq questions ($NAMES names x A, AAAA), dnsperf $DNSPERF_ARGS, no rate limit"
echo "bench: $(nproc) CPUs; dnsperf, the server and fakeup share them"
for s in $SERVERS; do
	printf '%-9s %10.0f qps  (lost %s, avg latency %s s, upstream queries %s)  [%s]\n' \
	    "$s" "${BEST[$s]}" "${LOST[$s]}" "${LAT[$s]}" "${UP[$s]}" "${NOTE[$s]}"
done
if [ -n "${BEST[unbound]:-}" ]; then
	awk -v a="${BEST[stubborn]}" -v b="${BEST[unbound]}" \
	    'BEGIN { if (b > 0) printf "ratio stubborn/unbound: %.2f\n", a / b }'
fi

# Stop everything by PID; unbound gets time to exit by itself.
kill -TERM "$STUB_PID" 2>/dev/null; wait "$STUB_PID" 2>/dev/null
kill -TERM "$UB_PID" 2>/dev/null
for _ in $(seq 1 50); do kill -0 "$UB_PID" 2>/dev/null || break; sleep 0.1; done
exit 0
