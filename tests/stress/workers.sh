#!/bin/bash
# Many workers at once under ThreadSanitizer: the TSan build of stubborn
# (build-tsan/stubborn) with 4 workers, more than this machine's cores,
# against three fake upstreams on loopback, while everything that shares
# state between threads happens together for about 15 s:
#   - UDP load over 8 source ports (cache hits, misses, NXDOMAIN, names that
#     expire every second or are refreshed ahead, truncated answers fetched
#     again over TCP, a zone forwarded over tcp://), and a TCP client load;
#   - bursts of one new name from 16 sockets against a slow upstream
#     (coalesced misses in every worker);
#   - an upstream that flaps between answering, SERVFAIL and silence, alone
#     in its zone (circuits open, probes, half-open, holds, stale answers)
#     and beside a good one at the root (hedging, failover);
#   - SIGHUP reloads alternating two configurations (new routes and pools
#     that inherit the old ones' health), a snapshot saved every second,
#     /metrics scrapes and control-socket commands (stats, dump, upstreams,
#     flushes, reload, log-level);
# then, at tcp-max-connections 1, new TCP connections that each displace
# the idle one before, whichever worker holds it.
# Fails on any ThreadSanitizer report, on a client left unanswered, when a
# path above did not run, and unless SIGTERM ends the daemon with status 0.
# BUILD_TSAN names the TSan build (build-tsan), BUILD the one whose fakeup
# is used (build); STRESS_SECONDS the load's length (15).
. "$(dirname "$0")/../integration/lib.sh"
BUILD_TSAN=${BUILD_TSAN:-build-tsan}
case "$BUILD_TSAN" in /*) ;; *) BUILD_TSAN="$ROOT/$BUILD_TSAN" ;; esac
STUBBORN="$BUILD_TSAN/stubborn"
HERE=$(cd "$(dirname "$0")" && pwd)
SECS=${STRESS_SECONDS:-15}
TAG=s$$

for f in "$STUBBORN" "$FAKEUP"; do
	[ -x "$f" ] || { not_ok "$f is built"; t_done; }
done

now_ms() { echo $(($(date +%s%N) / 1000000)); }
# ctl COMMAND...: one control-socket request, the reply on stdout.
ctl() {
	python3 - "$CTL" "$*" <<'PY'
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.settimeout(5)
s.connect(sys.argv[1])
s.sendall(sys.argv[2].encode() + b"\n")
out = b""
while True:
    b = s.recv(65536)
    if not b:
        break
    out += b
sys.stdout.write(out.decode(errors="replace"))
PY
}

start_fakeup A || t_done
start_fakeup F || t_done
start_fakeup S --mode "delay:150" || t_done

PORT=$(pick_port)
MET=$(pick_port)
CTL="$T_TMP/ctl.sock"
SNAP="$T_TMP/cache.snap"
LOG="$T_TMP/stubborn.log"
# Two configurations that SIGHUP alternates between: the root's servers
# swap order and policy, the zones stay; each reload sets the log level.
conf() {
	cat <<EOF
listen = 127.0.0.1:$PORT
workers = 4
metrics = 127.0.0.1:$MET
control-socket = $CTL
snapshot = $SNAP
snapshot-interval = 1
upstream-timeout = 300
stale-client-timeout = 50
stale-recheck = 1
failure-hold-min = 1
failure-hold-max = 2
probe-max-interval = 1000
circuit-failures = 2
refresh-ahead = 50
keep-warm = keep-$TAG.example.com A
ratelimit-loopback = yes
client-qps = 1000000
client-qps-cookie = 1000000
cache-qps = 10000000
log-queries = yes
log-queries-sample = 1
log-level = info
forward-zone = flap.test 127.0.0.1:$FK_PORT_F
forward-zone = slow.test 127.0.0.1:$FK_PORT_S
forward-zone = tcp.test tcp://127.0.0.1:$FK_PORT_A
EOF
	if [ "$1" = 1 ]; then
		printf 'upstream = 127.0.0.1:%s\nupstream = 127.0.0.1:%s\n' \
		    "$FK_PORT_A" "$FK_PORT_F"
		echo 'policy = fastest'
	else
		printf 'upstream = 127.0.0.1:%s\nupstream = 127.0.0.1:%s\n' \
		    "$FK_PORT_F" "$FK_PORT_A"
		echo 'policy = round-robin'
	fi
}
conf 1 >"$T_TMP/1.conf"
conf 2 >"$T_TMP/2.conf"
cp "$T_TMP/1.conf" "$T_TMP/stubborn.conf"

# halt_on_error=0: one run collects every report; exitcode 66 at exit says
# there was one, and the log has them all.
TSAN_OPTIONS="halt_on_error=0 exitcode=66 second_deadlock_stack=1 ${TSAN_OPTIONS:-}" \
    "$STUBBORN" --config "$T_TMP/stubborn.conf" 2>"$LOG" &
PID=$!
T_PIDS="$T_PIDS $PID"
if ! wait_dns 127.0.0.1 "$PORT" "$PID"; then
	not_ok "the TSan build of stubborn starts"
	cat "$LOG"
	t_done
fi
ok "the TSan build starts with 4 workers"

# The UDP mix: hot names (hits after the first), names that expire every
# second (stale) or are asked late in their 4 s (refreshed ahead),
# NXDOMAIN, the flapping zone, the slow zone, the zone over tcp://,
# truncated answers (TCP to the upstream) and a name kept warm.
qf="$T_TMP/udp.txt"
{
	for i in $(seq 1 40); do
		echo "hot$i-$TAG.example.com A"
		echo "hot$i-$TAG.example.com AAAA"
	done
	for i in $(seq 1 20); do
		echo "ttl1.e$i-$TAG.example.com A"
		echo "ttl4.r$i-$TAG.example.com A"
		echo "nx-$i-$TAG.example.com A"
		echo "ttl1.f$i-$TAG.flap.test A"
		echo "f$i-$TAG.flap.test A"
		echo "s$i-$TAG.slow.test A"
		echo "t$i-$TAG.tcp.test A"
	done
	for i in $(seq 1 5); do echo "big-$i-$TAG.example.com TXT"; done
	echo "keep-$TAG.example.com A"
} >"$qf"
awk '$1 ~ /^hot|^ttl1/' "$qf" >"$T_TMP/tcp.txt"

dnsperf -s 127.0.0.1 -p "$PORT" -d "$qf" -l "$SECS" -Q 300 -c 8 -q 64 -t 3 \
    >"$T_TMP/udp.out" 2>&1 &
DP=$!
dnsperf -s 127.0.0.1 -p "$PORT" -d "$T_TMP/tcp.txt" -m tcp -l "$SECS" -Q 60 \
    -c 4 -q 16 -t 3 >"$T_TMP/tcp.out" 2>&1 &
DT=$!
python3 "$HERE/burst.py" --port "$PORT" --rounds $((SECS * 2)) --sockets 16 \
    --zone slow.test --tag "$TAG" --gap 0.3 --timeout 3 >"$T_TMP/burst.json" &
BU=$!
T_PIDS="$T_PIDS $DP $DT $BU"

# Everything else, on a schedule of 250 ms ticks, while the load runs: a
# canary query every tick (the daemon answers throughout), a scrape and a
# control command every other tick, the flapping upstream's mode every 6th,
# a reload every 8th.
modes=(normal servfail normal drop)
flushes=(flush-zone\ slow.test flush-zone\ flap.test flush-negative flush\ hot1-$TAG.example.com flush-all)
canary_fail=0 canary=0 scrapes=0 scrape_fail=0 ctls=0 ctl_fail=0 hups=0
t_end=$(($(now_ms) + SECS * 1000))
tick=0
while [ "$(now_ms)" -lt "$t_end" ]; do
	tick=$((tick + 1))
	canary=$((canary + 1))
	st=$(dig @127.0.0.1 -p "$PORT" "hot1-$TAG.example.com" A +tries=1 +time=2 2>&1 | dig_status)
	[ "$st" = NOERROR ] || { canary_fail=$((canary_fail + 1)); echo "# canary $tick: ${st:-no answer}"; }
	if [ $((tick % 2)) = 0 ]; then
		scrapes=$((scrapes + 1))
		curl -s --noproxy '*' -m 3 "http://127.0.0.1:$MET/metrics" |
		    grep -q '^stubborn_cache_entries ' || scrape_fail=$((scrape_fail + 1))
		ctls=$((ctls + 1))
		case $((tick / 2 % 6)) in
		0) r=$(ctl stats) ;;
		1) r=$(ctl dump) ;;
		2) r=$(ctl upstreams) ;;
		3) r=$(ctl json dump flap.test) ;;
		4) r=$(ctl "${flushes[$((tick / 12 % ${#flushes[@]}))]}") ;;
		*) if [ $((tick / 12 % 2)) = 0 ]; then r=$(ctl reload); else r=$(ctl log-level info); fi ;;
		esac
		case "$r" in ok* | '{"ok":true'*) ;; *)
			ctl_fail=$((ctl_fail + 1))
			echo "# control reply: $(printf '%s' "$r" | head -c 200)" ;;
		esac
	fi
	if [ $((tick % 6)) = 0 ]; then
		fk_ctl F "mode ${modes[$((tick / 6 % 4))]}" >/dev/null
	fi
	if [ $((tick % 8)) = 0 ]; then
		hups=$((hups + 1))
		cp "$T_TMP/$((hups % 2 + 1)).conf" "$T_TMP/stubborn.conf"
		kill -HUP "$PID"
	fi
	sleep 0.25 # the tick: other clients keep the daemon busy meanwhile
done
wait "$DP" "$DT" "$BU"
fk_ctl F "mode normal" >/dev/null

# Last, tcp-max-connections 1 (a reload): each new connection displaces
# the idle one before, on whichever worker it is, so the workers ask each
# other to make room.
{ cat "$T_TMP/1.conf"; echo "tcp-max-connections = 1"; } >"$T_TMP/stubborn.conf"
n0=$(grep -c 'configuration reloaded' "$LOG")
kill -HUP "$PID"
for _ in $(seq 1 50); do
	[ "$(grep -c 'configuration reloaded' "$LOG")" -gt "$n0" ] && break
	sleep 0.1 # the main thread reloads
done
churn=$(python3 "$ROOT/tests/integration/tcpchurn.py" --port "$PORT" \
    --connections 12 --timeout 3 --tag "churn-$TAG")

echo "# udp: $(grep -E 'Queries (sent|completed|lost)|Response codes' "$T_TMP/udp.out" | tr -s ' ' | tr '\n' ';')"
echo "# tcp: $(grep -E 'Queries (sent|completed|lost)|Response codes' "$T_TMP/tcp.out" | tr -s ' ' | tr '\n' ';')"
echo "# burst: $(cat "$T_TMP/burst.json")"
echo "# ticks=$tick canary=$canary scrapes=$scrapes controls=$ctls reloads=$hups"
num() { sed -n "s/^ *$1: *\([0-9]*\).*/\1/p" "$2"; }
sent=$(num 'Queries sent' "$T_TMP/udp.out")
lost=$(num 'Queries lost' "$T_TMP/udp.out")
check "UDP load: a real load was sent (${sent:-0} >= $((SECS * 100)))" \
    test "${sent:-0}" -ge $((SECS * 100))
# A query can outlive dnsperf's 3 s only if a worker stalled.
expect_eq "UDP load: no query unanswered after 3 s" 0 "${lost:-missing}"
tsent=$(num 'Queries sent' "$T_TMP/tcp.out")
tlost=$(num 'Queries lost' "$T_TMP/tcp.out")
check "TCP load: queries were sent (${tsent:-0} >= $((SECS * 20)))" \
    test "${tsent:-0}" -ge $((SECS * 20))
expect_eq "TCP load: no query unanswered after 3 s" 0 "${tlost:-missing}"
b=$(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(d["lost"], d["rcodes"].get("NOERROR", 0) == d["sent"])' "$T_TMP/burst.json" 2>/dev/null)
expect_eq "coalesced bursts: every query answered NOERROR" "0 True" "$b"
expect_eq "canary answered NOERROR on every tick ($canary)" 0 "$canary_fail"
expect_eq "every /metrics scrape answered ($scrapes)" 0 "$scrape_fail"
expect_eq "every control command answered ok ($ctls)" 0 "$ctl_fail"
expect_eq "tcp-max-connections 1: 12 connections served, each displacing the one before" \
    "served 12 displaced 11" "$churn"
check "reloads happened ($hups) and were applied" \
    test "$hups" -ge 1 -a "$(grep -c 'configuration reloaded' "$LOG")" -ge 1
check "snapshots were saved while serving" \
    test "$(grep -c 'cache saved.*when=interval' "$LOG")" -ge $((SECS / 3))
check "the flapping upstream's circuit opened and closed again" \
    sh -c "grep -q 'circuit open' '$LOG' && grep -q 'circuit closed' '$LOG'"
# The paths that share state between threads did run.
curl -s --noproxy '*' -m 5 "http://127.0.0.1:$MET/metrics" >"$T_TMP/metrics"
m() { awk -v k="stubborn_$1" '$1 == k { print $2 }' "$T_TMP/metrics"; }
for c in queries_total{transport=\"udp\"} queries_total{transport=\"tcp\"} \
    coalesced_total stale_answers_total refreshes_total \
    failure_cache_hits_total upstream_tcp_fallbacks_total \
    upstream_timeouts_total replies_total{rcode=\"servfail\"}; do
	echo "# $c $(m "$c")"
done
for c in coalesced_total stale_answers_total refreshes_total \
    upstream_tcp_fallbacks_total upstream_timeouts_total; do
	check "exercised: $c > 0" test "$(m $c | cut -d. -f1)" -gt 0
done
# The load stays far below upstream-qps: a client query shed for the budget
# means workers saw a server's bucket empty when it was not (a race when
# several first reach a new server at once).
expect_eq "no client query shed for the upstream budget" 0 \
    "$(m 'shed_total{kind="client"}')"

kill -TERM "$PID"
wait_pid "$PID" 30
expect_eq "SIGTERM: exit 0 (66 would mean a ThreadSanitizer report)" 0 "$WAIT_RC"
reports=$(grep -c 'WARNING: ThreadSanitizer' "$LOG")
expect_eq "no ThreadSanitizer report" 0 "$reports"
if [ "$reports" != 0 ]; then
	# The first reports whole, then where each one was.
	awk '/WARNING: ThreadSanitizer/ { n++ } n && n <= 3' "$LOG" | grep -v '^ts=' | head -150
	grep -A3 'SUMMARY: ThreadSanitizer' "$LOG" | grep SUMMARY | sort | uniq -c
fi
t_done
