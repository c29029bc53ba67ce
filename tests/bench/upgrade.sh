#!/bin/bash
# make upgrade-bench: what a node loses when its DNS server is upgraded under
# load, three ways, in one run on loopback:
#   handover     a new stubborn started with the running one's
#                control-socket takes its sockets and cache (SCM_RIGHTS)
#   stop-start   SIGTERM, wait for the exit, start the new stubborn (with a
#                snapshot, so its cache is warm): what `systemctl restart`
#                without a .socket unit does
#   reuseport    NodeLocal DNSCache's way: the new server binds the same
#                address with SO_REUSEPORT beside the old one, then the old
#                one gets SIGTERM.  stubborn refuses to share a listen
#                address with a live process (it would split the cache and
#                the limits), so Unbound 'so-reuseport: yes' stands in.
# Each run: dnsperf at UPG_RATE qps (half cached names, half new ones) plus a
# TCP client pipelining UPG_TCP_RATE qps, for UPG_SECS seconds, with
# UPG_N upgrades UPG_GAP seconds apart.  A query is lost when no answer
# came within 3 s.  Prints a table and writes build/bench/upgrade.md.
. "$(dirname "$0")/lib.sh"

RATE=${UPG_RATE:-3000} TCP_RATE=${UPG_TCP_RATE:-100} SECS=${UPG_SECS:-10}
N=${UPG_N:-3} GAP=${UPG_GAP:-2}
OUT=${BUILD:-build}/bench
mkdir -p "$OUT"
ROWS=""
TCPCLIENT="$(dirname "$0")/../integration/tcpclient.py"

start_fakeup up || exit 1
UP="127.0.0.1:$FK_PORT_up"
names() { # names TAG: the load's query file and the cached half
	for i in $(seq 1 300); do echo "h$i-$1.example.com A"; done >"$T_TMP/$1.warm"
	for i in $(seq 1 300); do echo "h$i-$1.example.com A"; echo "u$i-$1.example.com A"; done >"$T_TMP/$1.perf"
	awk '{ print $1 }' "$T_TMP/$1.warm" >"$T_TMP/$1.tcp"
}

# load TAG PORT: starts dnsperf and the TCP client against 127.0.0.1:PORT.
load() {
	dnsperf -s 127.0.0.1 -p "$2" -d "$T_TMP/$1.perf" -l "$SECS" -Q "$RATE" \
	    -c 4 -t 3 >"$T_TMP/$1.dnsperf" 2>&1 &
	DP=$!
	python3 "$TCPCLIENT" --port "$2" --rate "$TCP_RATE" --seconds "$SECS" \
	    --names "$T_TMP/$1.tcp" --timeout 3 >"$T_TMP/$1.tcp.json" &
	TC=$!
}

# result TAG LABEL: one row from the load's outputs.
result() {
	local d sent lost sf tsent tlost
	wait "$DP" "$TC"
	d=$(cat "$T_TMP/$1.dnsperf")
	sent=$(printf '%s\n' "$d" | awk '/Queries sent:/ { print $3 }')
	lost=$(printf '%s\n' "$d" | awk '/Queries lost:/ { print $3 }')
	sf=$(printf '%s\n' "$d" | awk '$1 == "SERVFAIL" { print $2 }')
	read -r tsent tlost <<<"$(python3 -c 'import json,sys
d = json.load(open(sys.argv[1])); print(d["sent"], d["lost"])' "$T_TMP/$1.tcp.json")"
	ROWS="$ROWS| $2 | ${sent:-?} | ${lost:-?} | ${sf:-0} | ${tsent:-?} | ${tlost:-?} |
"
}

# --- handover ---------------------------------------------------------------
names ho
PORT=$(pick_port)
ARGS=(--listen "127.0.0.1:$PORT" --upstream "$UP" --workers 2
    --control-socket "$T_TMP/ctl.sock" --client-qps 100000)
"$STUBBORN" "${ARGS[@]}" 2>"$T_TMP/ho.0.log" &
OLD=$!; T_PIDS="$T_PIDS $OLD"
wait_dns 127.0.0.1 "$PORT" "$OLD" || exit 1
dnsperf -s 127.0.0.1 -p "$PORT" -d "$T_TMP/ho.warm" -n 1 -Q 1000 >/dev/null 2>&1
load ho "$PORT"
for h in $(seq 1 "$N"); do
	sleep "$GAP" # the load runs against the current process meanwhile
	"$STUBBORN" "${ARGS[@]}" 2>"$T_TMP/ho.$h.log" &
	NEW=$!; T_PIDS="$T_PIDS $NEW"
	wait_pid "$OLD" 15
	OLD=$NEW
done
result ho "stubborn, handover over the control socket"
kill -TERM "$OLD"; wait_pid "$OLD" 10

# --- stop and start -----------------------------------------------------------
names ss
PORT=$(pick_port)
ARGS=(--listen "127.0.0.1:$PORT" --upstream "$UP" --workers 2
    --snapshot "$T_TMP/ss.snap" --snapshot-interval 0 --client-qps 100000)
"$STUBBORN" "${ARGS[@]}" 2>"$T_TMP/ss.0.log" &
OLD=$!; T_PIDS="$T_PIDS $OLD"
wait_dns 127.0.0.1 "$PORT" "$OLD" || exit 1
dnsperf -s 127.0.0.1 -p "$PORT" -d "$T_TMP/ss.warm" -n 1 -Q 1000 >/dev/null 2>&1
load ss "$PORT"
for h in $(seq 1 "$N"); do
	sleep "$GAP"
	kill -TERM "$OLD"; wait_pid "$OLD" 15
	"$STUBBORN" "${ARGS[@]}" 2>"$T_TMP/ss.$h.log" &
	OLD=$!; T_PIDS="$T_PIDS $OLD"
done
result ss "stubborn, stop then start (snapshot)"
kill -TERM "$OLD"; wait_pid "$OLD" 10

# --- SO_REUSEPORT overlap -------------------------------------------------------
names rp
PORT=$(pick_port)
start_unbound 127.0.0.1 "$PORT" 1 example "	so-reuseport: yes" "127.0.0.1@$FK_PORT_up" || exit 1
OLD=$UB_PID
# The successors: the same configuration, pid files of their own.
for h in $(seq 1 "$N"); do
	sed "s|^\tpidfile: .*|\tpidfile: \"$UB_DIR/unbound.$h.pid\"|" \
	    "$UB_DIR/unbound.conf" >"$UB_DIR/u$h.conf"
done
dnsperf -s 127.0.0.1 -p "$PORT" -d "$T_TMP/rp.warm" -n 1 -Q 1000 >/dev/null 2>&1
load rp "$PORT"
for h in $(seq 1 "$N"); do
	sleep "$GAP"
	unbound -d -c "$UB_DIR/u$h.conf" 2>"$T_TMP/rp.$h.log" &
	NEW=$!; T_PIDS="$T_PIDS $NEW"
	# Both listen now (the socket count doubles); then the old one goes.
	for _ in $(seq 1 50); do
		[ "$(ss -Hlnu "sport = :$PORT" | wc -l)" -ge 2 ] && break
		sleep 0.05
	done
	kill -TERM "$OLD"; wait_pid "$OLD" 15
	OLD=$NEW
done
result rp "Unbound $(unbound_version), SO_REUSEPORT overlap (NodeLocal-style)"
kill -TERM "$OLD"; wait_pid "$OLD" 10

{
	echo "## Upgrades under load ($(date -u +%Y-%m-%d), $(nproc) CPUs)"
	echo
	echo "dnsperf $(dnsperf -h 2>&1 | sed -n 's/^Version //p' | head -n1) at $RATE qps (half cached names, half new) and a TCP client pipelining $TCP_RATE qps, $SECS s, $N upgrades $GAP s apart; lost = no answer within 3 s."
	echo
	echo "| upgrade | UDP sent | UDP lost | SERVFAIL | TCP sent | TCP lost |"
	echo "|---|---|---|---|---|---|"
	printf '%s' "$ROWS"
} >"$OUT/upgrade.md"
cat "$OUT/upgrade.md"
T_FAILS=0
