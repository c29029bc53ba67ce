#!/bin/bash
# The daemon's life cycle, black-box: no DNS gap on the node.
#   a. SIGHUP reloads the config file: an added upstream takes new names
#      while cached names stay cached; a broken file keeps the running
#      configuration and says file:line; a steady dnsperf run loses nothing
#   b. upstreams from resolv-conf follow the file, no signal needed
#   c. SIGTERM with queries in flight to a slow upstream: every one answered
#      (UDP and TCP), the snapshot written, exit 0 within shutdown-timeout
#   d. handover: a second stubborn with the same control-socket takes over
#      the very same sockets and the cache, three times under load (UDP
#      dnsperf and a pipelining TCP client): nothing lost, nothing SERVFAIL
#   e. a handover to a binary that fails leaves the old one serving
#   f. systemd socket activation (systemd-socket-activate), UDP and TCP
#   g. sd_notify: READY=1, RELOADING=1, STOPPING=1
#   h. privileges: the daemon runs as nobody, not root
. "$(dirname "$0")/lib.sh"

now_ms() { echo $(($(date +%s%N) / 1000000)); }
json() {
	python3 -c 'import json,sys
d = json.load(open(sys.argv[1]))
print(eval(sys.argv[2]))' "$1" "$2" 2>/dev/null || echo "?"
}
metrics_body() { curl -s --noproxy '*' -m 3 "http://127.0.0.1:$1/metrics"; }
# run_stubborn LOG ARGS...: a stubborn of our own (not start_stubborn's
# port), in the background; sets RS_PID.
run_stubborn() {
	local log=$1
	shift
	if [ -n "$VALGRIND" ]; then
		valgrind -q --vgdb=no --error-exitcode=99 --leak-check=full \
		    --errors-for-leak-kinds=definite,indirect \
		    --log-file="$log.vg" "$STUBBORN" "$@" 2>"$log" &
	else
		"$STUBBORN" "$@" 2>"$log" &
	fi
	RS_PID=$!
	T_PIDS="$T_PIDS $RS_PID"
}
vg_clean() {
	if [ -n "$VALGRIND" ]; then
		if [ -s "$1.vg" ]; then not_ok "valgrind clean ($1)"; cat "$1.vg"; else ok "valgrind clean ($1)"; fi
	fi
}

start_fakeup A || exit 1
start_fakeup B || exit 1
TAG=l$$

# --- a. SIGHUP ------------------------------------------------------------------
MET=$(pick_port)
CONF="$T_TMP/a.conf"
cat >"$CONF" <<EOF
upstream = 127.0.0.1:$FK_PORT_A
metrics = 127.0.0.1:$MET
policy = sequential
EOF
start_stubborn --config "$CONF" || { not_ok "a: stubborn starts"; t_done; }
for i in 1 2 3 4 5; do q "c$i-$TAG.example.com" A >/dev/null; done
a0=$(fk_count A "c[0-9]-$TAG")
expect_eq "a: five names cached via A" 5 "$a0"
for i in $(seq 1 200); do echo "c$((i % 5 + 1))-$TAG.example.com A"; done >"$T_TMP/a.perf"
dnsperf -s 127.0.0.1 -p "$STUB_PORT" -d "$T_TMP/a.perf" -l 3 -Q 500 -t 2 \
    >"$T_TMP/a.dnsperf" 2>&1 &
DP=$!
sleep 1 # dnsperf is running before the reload
cat >"$CONF" <<EOF
upstream = 127.0.0.1:$FK_PORT_B
upstream = 127.0.0.1:$FK_PORT_A
metrics = 127.0.0.1:$MET
policy = sequential
EOF
kill -HUP "$STUB_PID"
check "a: the reload is logged" wait_log "$STUB_LOG" 'configuration reloaded'
check "a: still running after SIGHUP" kill -0 "$STUB_PID"
# The workers pick the new route up from their event loops.
sleep "$(awk -v s="$SLOW" 'BEGIN { print 0.1 * s }')"
for i in 1 2 3 4 5; do q "c$i-$TAG.example.com" A >/dev/null; done
expect_eq "a: cached names still answered from the cache (A saw nothing more)" \
    "$a0" "$(fk_count A "c[0-9]-$TAG")"
for i in 1 2 3; do q "n$i-$TAG.example.com" A >/dev/null; done
expect_eq "a: new names go to the added upstream" "3 0" \
    "$(fk_count B "n[0-9]-$TAG") $(fk_count A "n[0-9]-$TAG")"
# A broken file: the running configuration stays, the log names file:line.
printf 'upstream = 127.0.0.1:%s\nthis is not a setting\n' "$FK_PORT_B" >"$CONF"
kill -HUP "$STUB_PID"
check "a: the broken reload is refused and logged" wait_log "$STUB_LOG" 'reload failed'
check "a: alive after a broken reload" kill -0 "$STUB_PID"
expect_match "a: the error names the file and line" \
    "reload failed.*$(basename "$CONF"):2: missing '='" "$(cat "$STUB_LOG")"
expect_eq "a: still answering (from the cache)" NOERROR "$(q "c1-$TAG.example.com" A | dig_status)"
wait "$DP"
expect_match "a: dnsperf across both reloads lost nothing" \
    "Queries lost: +0 " "$(cat "$T_TMP/a.dnsperf")"
body=$(metrics_body "$MET")
expect_match "a: /metrics counts the good reload" 'stubborn_reloads_total\{result="ok"\} 1' "$body"
expect_match "a: /metrics counts the failed reload" 'stubborn_reloads_total\{result="failed"\} 1' "$body"
stop_stubborn

# --- b. resolv-conf follows the host ----------------------------------------
# resolv.conf has no ports: two fakeups on port 53 of their own addresses.
R1=127.0.0.$((100 + RANDOM % 50)) R2=127.0.0.$((150 + RANDOM % 50))
"$FAKEUP" --listen "$R1:53" --log "$T_TMP/r1.log" 2>/dev/null &
T_PIDS="$T_PIDS $!"
"$FAKEUP" --listen "$R2:53" --log "$T_TMP/r2.log" 2>/dev/null &
T_PIDS="$T_PIDS $!"
: >"$T_TMP/r1.log"
: >"$T_TMP/r2.log"
if wait_dns "$R1" 53 && wait_dns "$R2" 53; then
	RESOLV="$T_TMP/resolv.conf"
	echo "nameserver $R1" >"$RESOLV"
	start_stubborn --resolv-conf "$RESOLV" || { not_ok "b: stubborn starts"; t_done; }
	q "b1-$TAG.example.com" A >/dev/null
	expect_eq "b: upstream from resolv-conf" 1 "$(grep -ci "b1-$TAG" "$T_TMP/r1.log")"
	# NetworkManager and friends write a new file and rename it.
	echo "nameserver $R2" >"$RESOLV.new" && mv "$RESOLV.new" "$RESOLV"
	t0=$(now_ms) moved=""
	for i in $(seq 1 50); do
		q "b2-$i-$TAG.example.com" A >/dev/null
		if grep -qi "b2-$i-$TAG" "$T_TMP/r2.log"; then moved=$(($(now_ms) - t0)); break; fi
		sleep 0.2 # polling the file is once a second
	done
	check "b: new queries go to the new server within 5 s, no signal (${moved:-never} ms)" \
	    test -n "$moved" -a "${moved:-99999}" -le $((5000 * SLOW))
	check "b: the change is logged" grep -q 'resolv-conf changed' "$STUB_LOG"
	stop_stubborn
else
	not_ok "b: fakeups on port 53 of $R1 and $R2"
fi

# --- c. the drain answers --------------------------------------------------------
fk_ctl A "mode delay 1000" >/dev/null
SNAP="$T_TMP/c.snap"
start_stubborn --upstream "127.0.0.1:$FK_PORT_A" --upstream-timeout 3000 \
    --shutdown-timeout $((3000 * SLOW)) --snapshot "$SNAP" --snapshot-interval 0 ||
    { not_ok "c: stubborn starts"; t_done; }
DIGS=""
for i in 1 2 3 4 5; do
	q "d$i-$TAG.example.com" A +time=$((5 * SLOW)) >"$T_TMP/c.$i" &
	DIGS="$DIGS $!"
done
q "dt-$TAG.example.com" A +tcp +time=$((5 * SLOW)) >"$T_TMP/c.tcp" &
DIGS="$DIGS $!"
for _ in $(seq 1 50); do
	[ "$(fk_count A "d[0-9t]-$TAG")" -ge 6 ] && break
	sleep 0.05 # the six queries reach the slow upstream
done
t0=$(now_ms)
kill -TERM "$STUB_PID"
wait_pid "$STUB_PID" $((10 * SLOW))
el=$(($(now_ms) - t0))
# shellcheck disable=SC2086 # a list of PIDs
wait $DIGS
n=0
for i in 1 2 3 4 5; do [ "$(dig_status <"$T_TMP/c.$i")" = NOERROR ] && n=$((n + 1)); done
expect_eq "c: SIGTERM with 5 UDP queries in flight: all 5 answered" 5 "$n"
expect_eq "c: ... and the TCP one" NOERROR "$(dig_status <"$T_TMP/c.tcp")"
expect_eq "c: exit 0" 0 "$WAIT_RC"
check "c: within shutdown-timeout ($el ms)" test "$el" -le $((3500 * SLOW))
check "c: the snapshot was written at the end" test -s "$SNAP"
fk_ctl A "mode normal" >/dev/null

# --- d. handover under load ---------------------------------------------------------
CTL="$T_TMP/ctl.sock"
PORT=$(pick_port) MET=$(pick_port)
ARGS=(--listen "127.0.0.1:$PORT" --upstream "127.0.0.1:$FK_PORT_A" --workers 2
    --control-socket "$CTL" --metrics "127.0.0.1:$MET" --client-qps 100000)
run_stubborn "$T_TMP/h0.log" "${ARGS[@]}"
OLD=$RS_PID
wait_dns 127.0.0.1 "$PORT" "$OLD" || { not_ok "d: stubborn starts"; t_done; }
for i in $(seq 1 200); do echo "h$i-$TAG.example.com A"; done >"$T_TMP/d.warm"
dnsperf -s 127.0.0.1 -p "$PORT" -d "$T_TMP/d.warm" -n 1 -Q 1000 >/dev/null 2>&1
# Half the load cached, half new names as it goes.
for i in $(seq 1 200); do echo "h$i-$TAG.example.com A"; echo "u$i-$TAG.example.com A"; done >"$T_TMP/d.perf"
awk '{ print $1 }' "$T_TMP/d.warm" >"$T_TMP/d.tcp"
if [ -n "$VALGRIND" ]; then RATE=200 SECS=12 N=1 GAP=4; else RATE=3000 SECS=9 N=3 GAP=2; fi
dnsperf -s 127.0.0.1 -p "$PORT" -d "$T_TMP/d.perf" -l $SECS -Q $RATE -c 4 -t 3 \
    >"$T_TMP/d.dnsperf" 2>&1 &
DP=$!
python3 "$(dirname "$0")/tcpclient.py" --port "$PORT" --rate 100 --seconds $SECS \
    --names "$T_TMP/d.tcp" --timeout 3 >"$T_TMP/d.tcp.json" &
TC=$!
ok_handovers=0
for h in $(seq 1 $N); do
	sleep $GAP # load runs against the current process meanwhile
	a_before=$(fk_count A "h[0-9]+-$TAG")
	run_stubborn "$T_TMP/h$h.log" "${ARGS[@]}"
	NEW=$RS_PID
	wait_pid "$OLD" $((15 * SLOW))
	if [ "$WAIT_RC" = 0 ] && kill -0 "$NEW" 2>/dev/null; then
		ok_handovers=$((ok_handovers + 1))
	else
		echo "# d: handover $h: old exit $WAIT_RC; new alive: $(kill -0 "$NEW" 2>/dev/null && echo yes || echo no)"
		sed 's/^/#   /' "$T_TMP/h$h.log" | tail -5
	fi
	vg_clean "$T_TMP/h$((h - 1)).log"
	# The cache came along: a cached name costs the upstream nothing.
	q1=$(dig @127.0.0.1 -p "$PORT" "h7-$TAG.example.com" A +tries=1 +time=$((3 * SLOW)) | dig_status)
	expect_eq "d: handover $h: a cached name answered from the warm cache" \
	    "NOERROR $a_before" "$q1 $(fk_count A "h[0-9]+-$TAG")"
	OLD=$NEW
done
expect_eq "d: $N handovers, each old process exited 0 and the new one serves" "$N" "$ok_handovers"
wait "$DP"
wait "$TC"
d=$(cat "$T_TMP/d.dnsperf")
echo "# d: dnsperf: $(printf '%s\n' "$d" | grep -E 'Queries (sent|completed|lost)' | tr -s ' ' | tr '\n' ';')"
expect_match "d: UDP at $RATE qps across the handovers: 0 lost" "Queries lost: +0 " "$d"
expect_match "d: ... and no SERVFAIL" "NOERROR [0-9]+ \(100\.00%\)" "$d"
t=$T_TMP/d.tcp.json
echo "# d: tcp client: $(cat "$t")"
expect_eq "d: the pipelining TCP client: 0 lost, all NOERROR" "0 True" \
    "$(json "$t" 'd["lost"]') $(json "$t" 'd["rcodes"].get("NOERROR", 0) == d["answered"] == d["sent"]')"
check "d: the metrics endpoint moved along" \
    sh -c "curl -s --noproxy '*' -m 3 http://127.0.0.1:$MET/health | grep -q ok"

# --- e. a successor that fails leaves the old one serving -------------------------
run_stubborn "$T_TMP/e1.log" "${ARGS[@]}" --upstream-timeout 99999999
wait_pid "$RS_PID" $((10 * SLOW))
expect_eq "e: a successor with a bad config exits 2" 2 "$WAIT_RC"
BUSY=$(pick_port)
python3 -c 'import socket,sys,time
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1]))); s.listen(1); time.sleep(20)' "$BUSY" &
HOLD=$!
T_PIDS="$T_PIDS $HOLD"
for _ in $(seq 1 50); do
	ss -Hlnt "src 127.0.0.1:$BUSY" | grep -q . && break
	sleep 0.1
done
# The same config but a metrics port already in use: it fails after
# taking the sockets, before saying it serves.
run_stubborn "$T_TMP/e2.log" "${ARGS[@]/127.0.0.1:$MET/127.0.0.1:$BUSY}"
wait_pid "$RS_PID" $((10 * SLOW))
expect_eq "e: a successor that fails after taking the sockets exits 1" 1 "$WAIT_RC"
check "e: the old one still runs" kill -0 "$OLD"
expect_eq "e: ... and answers" NOERROR "$(dig @127.0.0.1 -p "$PORT" "e1-$TAG.example.com" A +tries=1 +time=3 | dig_status)"
check "e: it logged the abandoned handover" grep -q 'handover abandoned' "$T_TMP/h$N.log"
kill "$HOLD" 2>/dev/null
# A control-socket file with nobody behind it is replaced.
kill -TERM "$OLD"
wait_pid "$OLD" $((10 * SLOW))
expect_eq "e: stop: exit 0" 0 "$WAIT_RC"
vg_clean "$T_TMP/h$N.log"

# --- f. systemd socket activation ----------------------------------------------------
if command -v systemd-socket-activate >/dev/null; then
	for mode in udp tcp; do
		P=$(pick_port)
		if [ $mode = udp ]; then SA=(systemd-socket-activate --datagram -l "127.0.0.1:$P"); DIG=(); else SA=(systemd-socket-activate -l "127.0.0.1:$P"); DIG=(+tcp); fi
		"${SA[@]}" "$STUBBORN" --listen "127.0.0.1:$P" --upstream "127.0.0.1:$FK_PORT_A" \
		    --workers 2 2>"$T_TMP/f.$mode.log" &
		SAP=$!
		T_PIDS="$T_PIDS $SAP"
		sleep 0.3 # systemd-socket-activate binds, then waits for traffic
		out=$(dig @127.0.0.1 -p "$P" "f-$mode-$TAG.example.com" A +tries=3 +time=2 "${DIG[@]}")
		expect_eq "f: activated by a $mode socket: answers over $mode" NOERROR "$(printf '%s\n' "$out" | dig_status)"
		check "f: ... it used the socket it was given" grep -q 'socket activation" sockets=1' "$T_TMP/f.$mode.log"
		other=$([ $mode = udp ] && echo +tcp || echo +notcp)
		expect_eq "f: ... and answers over the other transport too" NOERROR \
		    "$(dig @127.0.0.1 -p "$P" "g-$mode-$TAG.example.com" A +tries=1 +time=2 $other | dig_status)"
		kill -TERM "$SAP"
		wait_pid "$SAP" 10
		expect_eq "f: $mode: exit 0" 0 "$WAIT_RC"
	done
else
	echo "SKIP - t_lifecycle: f: systemd-socket-activate is not installed"
fi

# --- g. sd_notify -----------------------------------------------------------------
NS="$T_TMP/notify.sock"
python3 -c 'import os,socket,sys,time
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM); s.bind(sys.argv[1]); s.settimeout(15)
os.chmod(sys.argv[1], 0o777)  # like systemd'"'"'s: the daemon is not root by then
out = open(sys.argv[2], "w")
end = time.time() + 15
try:
    while time.time() < end:
        m = s.recv(4096).decode()
        out.write(m.replace("\n", " ") + "\n"); out.flush()
        if "STOPPING=1" in m: break
except socket.timeout:
    pass' "$NS" "$T_TMP/notify.txt" &
NL=$!
T_PIDS="$T_PIDS $NL"
sleep 0.2 # the listener binds
export NOTIFY_SOCKET=$NS
start_stubborn --upstream "127.0.0.1:$FK_PORT_A" || { not_ok "g: starts"; t_done; }
unset NOTIFY_SOCKET
kill -HUP "$STUB_PID"
wait_log "$STUB_LOG" 'configuration reloaded' >/dev/null
h=$(ps -o user= -p "$STUB_PID" | tr -d ' ')
stop_stubborn
wait_pid "$NL" 5
expect_match "g: READY=1 once serving" "^READY=1 MAINPID=[0-9]+" "$(cat "$T_TMP/notify.txt")"
expect_match "g: RELOADING=1 at SIGHUP, READY=1 after" "RELOADING=1 MONOTONIC_USEC=[0-9]+ *.READY=1" \
    "$(tr '\n' '.' <"$T_TMP/notify.txt")"
expect_match "g: STOPPING=1 at SIGTERM" "STOPPING=1" "$(cat "$T_TMP/notify.txt")"

# --- h. privileges -----------------------------------------------------------------
# stubborn user if there is one, else nobody: never root.
want=nobody
getent passwd stubborn >/dev/null && want=stubborn
expect_eq "h: the daemon runs as $want (ps)" "$want" "$h"
expect_match "h: the drop is logged" "privileges dropped\" user=$want" "$(cat "$STUB_LOG")"

t_done
