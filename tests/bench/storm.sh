#!/bin/bash
# Retry storms (issue 5 acceptance numbers), run by `make storm` or by hand:
# sh tests/bench/storm.sh.  Everything listens on 127.0.0.1; the load comes
# from tests/integration/stormgen.py bound to 127.0.0.2..127.0.0.101 (100
# simulated client addresses, all loopback); nothing is sent anywhere else.
#
#   a. 50 cached names expire (TTL 2), the upstream goes silent (fakeup
#      mode drop), stubborn runs with --stale-recheck 5; 100 clients send
#      1,000 qps over those names for 20 s.  The upstream sees at most one
#      query per name per recheck interval plus probes (<= 50*ceil(20/5) +
#      3.5/s * 20 s = 270 fakeup log lines), every client query is answered
#      (<= 0.1% lost), client p99 <= 20 ms.
#   b. The upstream comes back (mode normal) while the load goes on: stale-
#      recheck + 2 s later at most 2 of the 50 names are still stale, both
#      asked once each (50 queries, EDE 3 counted) and as seen by the load
#      (names answered with EDE 3 to queries sent >= recheck + 2 s after).
#   c. One client floods 3,000 qps of unique names for 5 s (--client-qps 200)
#      while three others ask cached names at 100 qps each: the upstream sees
#      <= 1,500 of the flood's names; the three lose nothing, p99 <= 20 ms.
#      For information only, a fifth client asks 20 qps of unique names (cache
#      misses) meanwhile: do the flood's admitted queries crowd it out of the
#      upstream budget (SERVFAIL, EDE 22)?
#
# a and b run against Unbound too, for reference (serve-expired: yes,
# serve-expired-client-timeout: 400, forwarding to the same kind of fakeup);
# its PASS/FAIL lines are informative and do not change the exit status.
# The exit status is 1 when a stubborn criterion fails.
#
# Knobs: STORM_DAEMONS ("stubborn unbound"), STORM_RATE (1000), STORM_SECS
# (20), STORM_RECHECK (5), STORM_AFTER (10 s of load after the upstream is
# back), STORM_FLOOD (3000), STORM_FLOOD_SECS (5), STORM_CLIENT_QPS (200),
# STORM_STUBBORN_FLAGS (extra stubborn flags for a and b, e.g.
# "--probe-max-interval 1000").
[ -n "${BASH_VERSION:-}" ] || exec bash "$0" "$@"

. "$(dirname "$0")/lib.sh"
# shellcheck disable=SC2034  # T_NAME is used by lib.sh
T_NAME=storm
GEN="python3 $ROOT/tests/integration/stormgen.py"

DAEMONS=${STORM_DAEMONS:-stubborn unbound}
RATE=${STORM_RATE:-1000}
SECS=${STORM_SECS:-20}
RECHECK=${STORM_RECHECK:-5}
AFTER=${STORM_AFTER:-10}
FLOOD=${STORM_FLOOD:-3000}
FLOOD_SECS=${STORM_FLOOD_SECS:-5}
CQPS=${STORM_CLIENT_QPS:-200}
NAMES=50
NORMAL_RATE=100
MISS_RATE=20
P99_MAX=20
# Upstream queries allowed in a: one per name per recheck interval, plus
# probes and the first round of retries at 3.5 a second.
UP_MAX=$((NAMES * ((SECS + RECHECK - 1) / RECHECK) + (SECS * 7 + 1) / 2))
# Flood names allowed upstream in c: the burst (2 x client-qps), the rate
# over the flood, and 100 of margin.
FLOOD_MAX=$((2 * CQPS + CQPS * FLOOD_SECS + 100))

for tool in python3 curl; do
	command -v "$tool" >/dev/null || { echo "storm: $tool is not installed"; exit 1; }
done
[ -x "$STUBBORN" ] && [ -x "$FAKEUP" ] || { echo "storm: build first (make all)"; exit 1; }
[ $((SECS + AFTER)) -le 30 ] || { echo "storm: STORM_SECS + STORM_AFTER must be <= 30"; exit 1; }

STUB_FAILS=0
declare -A SUMMARY
# verdict DAEMON "criterion" ok-command...: prints PASS/FAIL.
verdict() {
	local d=$1 c=$2; shift 2
	if "$@"; then r=PASS; else
		r=FAIL; [ "$d" = stubborn ] && STUB_FAILS=$((STUB_FAILS + 1))
	fi
	echo "storm: $r [$d] $c"
	SUMMARY[$d]="${SUMMARY[$d]:-}$r [$d] $c"$'\n'
}
le() { awk -v a="$1" -v b="$2" 'BEGIN { exit !(a != "" && a != "null" && a != "?" && a + 0 <= b + 0) }'; }

# json FILE EXPR: a value from a JSON file (python expression on d).
json() {
	python3 -c 'import json,sys
d = json.load(open(sys.argv[1]))
v = eval(sys.argv[2])
print("null" if v is None else v)' "$1" "$2" 2>/dev/null || echo "?"
}

now_s() { date +%s.%N; }
# sleep_until EPOCH: sleeps until the wall clock reaches EPOCH (at most 60 s).
sleep_until() {
	local d
	d=$(awk -v t="$1" -v n="$(now_s)" 'BEGIN { d = t - n; if (d < 0) d = 0; if (d > 60) d = 60; printf "%.3f", d }')
	sleep "$d"
}

# circuit_events LOG EPOCH: stubborn's circuit changes, in s relative to EPOCH.
circuit_events() {
	python3 -c '
import datetime, re, sys
ref = float(sys.argv[2]); out = []
for ln in open(sys.argv[1], errors="replace"):
    m = re.search(r"ts=(\S+)Z .*msg=\"circuit ([a-z-]+)\"", ln)
    if m:
        t = datetime.datetime.strptime(m.group(1), "%Y-%m-%dT%H:%M:%S.%f")
        t = t.replace(tzinfo=datetime.timezone.utc).timestamp()
        out.append("%s %+.2fs" % (m.group(2), t - ref))
print(", ".join(out) or "none")' "$1" "$2" 2>/dev/null || echo "?"
}
metrics_body() { curl -s --noproxy '*' -m 3 "http://127.0.0.1:$MET_PORT/metrics"; }
# metric BODY REGEX: the value of the first series matching REGEX.
metric() {
	printf '%s\n' "$1" | grep -E "^$2 " | head -n1 | awk '{ print $NF }'
}
storm_metrics() {
	local b=$1
	echo "coalesced=$(metric "$b" stubborn_coalesced_total)" \
	    "stale_answers=$(metric "$b" stubborn_stale_answers_total)" \
	    "failure_cache_hits=$(metric "$b" stubborn_failure_cache_hits_total)" \
	    "ratelimited{refuse,drop,truncate,stale}=$(metric "$b" 'stubborn_ratelimited_total\{action="refuse"\}'),$(metric "$b" 'stubborn_ratelimited_total\{action="drop"\}'),$(metric "$b" 'stubborn_ratelimited_total\{action="truncate"\}'),$(metric "$b" 'stubborn_ratelimited_total\{action="stale"\}')" \
	    "shed{client,stale_refresh,refresh_ahead}=$(metric "$b" 'stubborn_shed_total\{kind="client"\}'),$(metric "$b" 'stubborn_shed_total\{kind="stale_refresh"\}'),$(metric "$b" 'stubborn_shed_total\{kind="refresh_ahead"\}')" \
	    "upstream_server_queries=$(printf '%s\n' "$b" | grep -E '^stubborn_upstream_server_queries_total' | awk '{ s += $NF } END { print s + 0 }')"
}

# start_daemon NAME FAKEUP [stubborn flags]: sets D_PORT, D_PID.
start_daemon() {
	local d=$1 fk=$2 port; shift 2
	eval "port=\$FK_PORT_$fk"
	case $d in
	stubborn)
		MET_PORT=$(pick_port)
		start_stubborn --upstream "127.0.0.1:$port" --metrics "127.0.0.1:$MET_PORT" \
		    --log-level info "$@" || return 1
		D_PORT=$STUB_PORT D_PID=$STUB_PID
		;;
	unbound)
		D_PORT=$(pick_port)
		start_unbound 127.0.0.1 "$D_PORT" 2 example "\
	qname-minimisation: no
	serve-expired: yes
	serve-expired-client-timeout: 400
	ede: yes
	ede-serve-expired: yes" \
		    "127.0.0.1@$port" || { echo "storm: unbound did not start"; return 1; }
		D_PID=$UB_PID
		;;
	esac
}

stop_daemon() {
	kill -TERM "$D_PID" 2>/dev/null
	wait_pid "$D_PID" 10
}

# --- a + b: a stale storm, then the upstream comes back ----------------------
scenario_ab() {
	local d=$1 fk=$2 run=ab$1$$ log names gen_start
	eval "log=\$FK_LOG_$fk"
	names="$T_TMP/names.$d"
	for i in $(seq 1 $NAMES); do echo "ttl2.n$i.$run.example."; done >"$names"
	fk_ctl "$fk" "mode normal" >/dev/null
	if [ "$d" = stubborn ]; then
		# shellcheck disable=SC2086  # extra flags split on purpose
		start_daemon stubborn "$fk" --stale-recheck "$RECHECK" ${STORM_STUBBORN_FLAGS:-} || return 1
	else
		start_daemon unbound "$fk" || return 1
	fi
	# Cache the 50 names (TTL 2), then let them expire behind a silent upstream.
	$GEN --port "$D_PORT" --seconds 1 --names "$names" \
	    --group prime:127.0.0.1:100:names >"$T_TMP/prime.$d.json"
	echo "storm: [$d] priming: $(json "$T_TMP/prime.$d.json" 'd["rcodes"]'), lost $(json "$T_TMP/prime.$d.json" 'd["lost"]')"
	fk_ctl "$fk" "mode drop" >/dev/null
	sleep 3
	local l0 l1 m1="" m2="" sw
	l0=$(wc -l <"$log")
	gen_start=$(now_s)
	$GEN --port "$D_PORT" --seconds $((SECS + AFTER)) --timeout 2 --names "$names" \
	    --run "$run" --records "$T_TMP/rec.$d" --windows \
	    --group all:127.0.0.2-127.0.0.101:$RATE:names >"$T_TMP/ab.$d.json" &
	local gen=$!
	sleep_until "$(awk -v t="$gen_start" -v s=$SECS 'BEGIN { printf "%.3f", t + s + 0.15 }')"
	l1=$(wc -l <"$log")
	[ "$d" = stubborn ] && m1=$(metrics_body)
	fk_ctl "$fk" "mode normal" >/dev/null
	sw=$(now_s)
	# b: stale-recheck + 2 s after the switch, each name once.
	sleep_until "$(awk -v t="$sw" -v r=$RECHECK 'BEGIN { printf "%.3f", t + r + 2 }')"
	$GEN --port "$D_PORT" --seconds 0.1 --timeout 2 --names "$names" \
	    --group once:127.0.0.1:$((NAMES * 10)):names >"$T_TMP/once.$d.json"
	wait_pid "$gen" $((SECS + AFTER + 15))
	[ "$d" = stubborn ] && m2=$(metrics_body)
	local f="$T_TMP/ab.$d.json" t0 swr
	t0=$(json "$f" 'd["t0_wall"]')
	[ "$t0" = "?" ] && { echo "storm: [$d] the load generator failed: $(head -c 300 "$f")"; stop_daemon; return 1; }
	swr=$(awk -v a="$sw" -v b="$t0" 'BEGIN { printf "%.3f", a - b }')
	$GEN --analyze "$T_TMP/rec.$d" --until "$swr" >"$T_TMP/a.$d.json"
	$GEN --analyze "$T_TMP/rec.$d" --since "$(awk -v s="$swr" -v r=$RECHECK 'BEGIN { printf "%.3f", s + r + 2 }')" \
	    >"$T_TMP/b.$d.json"
	local fa="$T_TMP/a.$d.json" sent lost p50 p99 mx up probes maxper
	sent=$(json "$fa" 'd["sent"]') lost=$(json "$fa" 'd["lost"]')
	p50=$(json "$fa" 'd["latency_ms"]["p50"]') p99=$(json "$fa" 'd["latency_ms"]["p99"]')
	mx=$(json "$fa" 'd["latency_ms"]["max"]')
	up=$((l1 - l0))
	sed -n "$((l0 + 1)),${l1}p" "$log" >"$T_TMP/up.$d"
	probes=$(grep -Ec '^[a-z]+ \. ' "$T_TMP/up.$d")
	maxper=$(grep -Ev '^[a-z]+ \. ' "$T_TMP/up.$d" | awk '{ print tolower($2) }' | sort | uniq -c | sort -rn | head -n1 | awk '{ print $1 + 0 }')
	echo "storm: [$d] a: ${swr}s of $RATE qps from 100 clients over $NAMES expired names, upstream silent:" \
	    "sent $sent, lost $lost, rcodes $(json "$fa" 'd["rcodes"]'), EDE $(json "$fa" 'd["ede"]'), latency p50 $p50 / p99 $p99 / max $mx ms"
	echo "storm: [$d] a: upstream saw $up queries ($probes probes '. NS', the rest for the names; at most ${maxper:-0} for one name)"
	[ -n "$m1" ] && echo "storm: [$d] a: /metrics at the switch: $(storm_metrics "$m1")"
	echo "storm: [$d] a: per second (sent/lost/p99 ms/stale answers): $(python3 -c '
import json, sys
d = json.load(open(sys.argv[1]))
print(" ".join("%d:%d/%d/%s/%d" % (w["t"], w["sent"], w["lost"], w["p99"], w["stale"])
      for w in d["groups"]["all"]["windows"]))' "$f" 2>/dev/null)"
	verdict "$d" "a: upstream queries while silent $up <= $UP_MAX ($NAMES names x ceil($SECS/$RECHECK) + probes)" \
	    test "$up" -le "$UP_MAX"
	verdict "$d" "a: client queries lost $lost of $sent <= 0.1%" \
	    test "$lost" != "?" -a $((${lost/\?/999999} * 1000)) -le "${sent/\?/0}"
	verdict "$d" "a: client p99 $p99 ms <= $P99_MAX ms" le "$p99" $P99_MAX

	# b
	local once_stale once_lost gen_stale rec
	once_stale=$(json "$T_TMP/once.$d.json" 'd["stale_name_count"]')
	once_lost=$(json "$T_TMP/once.$d.json" 'd["lost"]')
	gen_stale=$(json "$T_TMP/b.$d.json" 'd["stale_name_count"]')
	# Per name: seconds after the switch of the last query answered stale.
	rec=$(python3 -c '
import sys
sw = float(sys.argv[2]); last = {}
for ln in open(sys.argv[1]):
    t, g, n, rc, ede, lat = ln.rstrip("\n").split("\t")
    t = float(t)
    if t < sw:
        continue
    last.setdefault(n, None)
    if "3" in ede.split(","):
        last[n] = t - sw
v = sorted(x for x in last.values() if x is not None)
fresh = sum(1 for x in last.values() if x is None)
# The last answer of each name in the whole run: still stale at the end?
end, endt = {}, 0.0
for ln in open(sys.argv[1]):
    t, g, n, rc, ede, lat = ln.rstrip("\n").split("\t")
    if lat != "-":
        end[n] = "3" in ede.split(",")
        endt = max(endt, float(t) - sw)
per = {}
for ln in open(sys.argv[1]):
    t, g, n, rc, ede, lat = ln.rstrip("\n").split("\t")
    t = float(t) - sw
    if t >= 0 and "3" in ede.split(","):
        per.setdefault(int(t), set()).add(n)
print("last stale answer per name (s after the switch): median %s, max %s; never stale after the switch %d; still stale when the load ended at +%.2fs: %d; stale names per second: %s" % (
    "%.2f" % v[len(v) // 2] if v else "-", "%.2f" % v[-1] if v else "-", fresh,
    endt, sum(1 for x in end.values() if x),
    " ".join("%d:%d" % (s, len(per.get(s, ()))) for s in range(int(max(per) + 1 if per else 0)))))' "$T_TMP/rec.$d" "$swr" 2>/dev/null)
	echo "storm: [$d] b: upstream back at ${swr}s; $rec"
	echo "storm: [$d] b: each name asked once $((RECHECK + 2)) s after: $once_stale stale (EDE 3), lost $once_lost, rcodes $(json "$T_TMP/once.$d.json" 'd["rcodes"]'); load after the switch: rcodes $(json "$T_TMP/b.$d.json" 'd["rcodes"]'), lost $(json "$T_TMP/b.$d.json" 'd["lost"]'), p99 $(json "$T_TMP/b.$d.json" 'd["latency_ms"]["p99"]') ms"
	[ -n "$m2" ] && echo "storm: [$d] b: /metrics at the end: $(storm_metrics "$m2")"
	[ "$d" = stubborn ] && echo "storm: [$d] b: circuit changes (s relative to the switch): $(circuit_events "$STUB_LOG" "$sw")"
	echo "storm: [$d] b: upstream queries after the switch: $(($(wc -l <"$log") - l1))"
	verdict "$d" "b: names still stale $((RECHECK + 2)) s after the upstream is back, asked once each: $once_stale <= 2" \
	    le "$once_stale" 2
	verdict "$d" "b: names answered stale to load sent >= $((RECHECK + 2)) s after the upstream is back: $gen_stale <= 2" \
	    le "$gen_stale" 2
	stop_daemon
}

# --- c: one client floods unique names, three others ask cached names ---------
scenario_c() {
	local fk=$1 run=c$$ log names
	eval "log=\$FK_LOG_$fk"
	names="$T_TMP/names.c"
	for i in $(seq 1 30); do echo "c$i.$run.example."; done >"$names"
	fk_ctl "$fk" "mode normal" >/dev/null
	start_daemon stubborn "$fk" --client-qps "$CQPS" || return 1
	$GEN --port "$D_PORT" --seconds 1 --names "$names" \
	    --group prime:127.0.0.1:60:names >"$T_TMP/primec.json"
	local l0 f="$T_TMP/c.json" nup
	l0=$(wc -l <"$log")
	$GEN --port "$D_PORT" --seconds "$FLOOD_SECS" --timeout 2 --names "$names" --run "$run" \
	    --group flood:127.0.0.2:$FLOOD:unique \
	    --group n1:127.0.0.3:$NORMAL_RATE:names --group n2:127.0.0.4:$NORMAL_RATE:names \
	    --group n3:127.0.0.5:$NORMAL_RATE:names --group miss:127.0.0.6:$MISS_RATE:unique >"$f"
	sleep 1
	nup=$(grep -Eci -- "-$run-flood\\." "$log")
	echo "storm: [stubborn] c: flood $(json "$f" 'd["groups"]["flood"]["sent"]') queries of unique names at $FLOOD qps for ${FLOOD_SECS}s from 127.0.0.2 (--client-qps $CQPS):" \
	    "rcodes $(json "$f" 'd["groups"]["flood"]["rcodes"]'), EDE $(json "$f" 'd["groups"]["flood"]["ede"]'), lost $(json "$f" 'd["groups"]["flood"]["lost"]'), p99 $(json "$f" 'd["groups"]["flood"]["latency_ms"]["p99"]') ms; upstream saw $nup flood names ($(($(wc -l <"$log") - l0)) queries in all)"
	echo "storm: [stubborn] c: /metrics: $(storm_metrics "$(metrics_body)")"
	echo "storm: [stubborn] c: (information, no criterion) a fifth client asking $MISS_RATE qps of unique names (cache misses) from 127.0.0.6 meanwhile: sent $(json "$f" 'd["groups"]["miss"]["sent"]'), lost $(json "$f" 'd["groups"]["miss"]["lost"]'), rcodes $(json "$f" 'd["groups"]["miss"]["rcodes"]'), EDE $(json "$f" 'd["groups"]["miss"]["ede"]'), p99 $(json "$f" 'd["groups"]["miss"]["latency_ms"]["p99"]') ms"
	verdict stubborn "c: flood names sent upstream $nup <= $FLOOD_MAX (2 x $CQPS burst + $CQPS x ${FLOOD_SECS}s + 100)" \
	    test "$nup" -le "$FLOOD_MAX"
	local g sent lost bad p99
	for g in n1 n2 n3; do
		sent=$(json "$f" "d['groups']['$g']['sent']") lost=$(json "$f" "d['groups']['$g']['lost']")
		bad=$(json "$f" "d['groups']['$g']['answered'] - d['groups']['$g']['rcodes'].get('NOERROR', 0)")
		p99=$(json "$f" "d['groups']['$g']['latency_ms']['p99']")
		echo "storm: [stubborn] c: $g ($NORMAL_RATE qps of cached names): sent $sent, lost $lost, rcodes $(json "$f" "d['groups']['$g']['rcodes']"), p50 $(json "$f" "d['groups']['$g']['latency_ms']['p50']") / p99 $p99 / max $(json "$f" "d['groups']['$g']['latency_ms']['max']") ms"
		verdict stubborn "c: $g loses nothing (lost $lost, not NOERROR $bad, of $sent)" \
		    test "$lost" = 0 -a "$bad" = 0 -a "$sent" != 0
		verdict stubborn "c: $g p99 $p99 ms <= $P99_MAX ms" le "$p99" $P99_MAX
	done
	stop_daemon
}

echo "storm: $(nproc) CPUs; $("$STUBBORN" --version 2>&1 | head -n1); $(unbound -V 2>/dev/null | head -n1 | sed 's/^Version /unbound /')"
for d in $DAEMONS; do
	case $d in
	stubborn)
		start_fakeup S || exit 1
		echo "storm: --- stubborn (2 workers, --stale-recheck $RECHECK) ---"
		scenario_ab stubborn S || verdict stubborn "a/b ran" false
		start_fakeup SC || exit 1
		scenario_c SC || verdict stubborn "c ran" false
		;;
	unbound)
		command -v unbound >/dev/null || { echo "storm: unbound is not installed; skipped"; continue; }
		start_fakeup U || exit 1
		echo "storm: --- unbound (reference: 2 threads, serve-expired: yes, serve-expired-client-timeout: 400) ---"
		scenario_ab unbound U || echo "storm: [unbound] a/b did not run"
		;;
	esac
done

echo
echo "storm: summary"
for d in $DAEMONS; do printf '%s' "${SUMMARY[$d]:-}"; done
if [ "$STUB_FAILS" -gt 0 ]; then
	echo "storm: $STUB_FAILS stubborn criteria FAILED"
	exit 1
fi
echo "storm: every stubborn criterion passed"
exit 0
