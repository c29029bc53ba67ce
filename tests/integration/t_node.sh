#!/bin/bash
# stubborn as a node's resolver, as issue "deploy it where it is used" asks:
#   a. started as root, it runs as an unprivileged user and still writes its
#      snapshot at SIGTERM
#   b. access control on a non-loopback address: outside `allow` REFUSED
#      with EDE 18, inside answered; no `allow` list is exit 2
#   c. the shipped config's limits: uncached names at 1,000 qps from
#      127.0.0.1 get no REFUSED, one non-loopback client over client-qps is
#      limited
#   d. /metrics during a full upstream outage: the outage gauges move and
#      stale answers land in the response-time histogram
#   e. log-queries: one logfmt line per reply
# The non-loopback addresses (TEST-NET 192.0.2.0/24) exist only on lo of a
# private network namespace, so this file re-runs itself inside one.
if [ "${STUBBORN_IN_NETNS:-}" != 1 ]; then
	if [ "$(id -u)" != 0 ]; then
		echo "SKIP - t_node: needs root (unshare -n, privilege drop)"
		exit 0
	fi
	STUBBORN_IN_NETNS=1 exec unshare -n bash "$0" "$@"
fi
. "$(dirname "$0")/lib.sh"

ip link set lo up
others=$(ip -o link show | awk -F': ' '{ print $2 }' | grep -vx lo)
[ -z "$others" ] || { not_ok "a private network namespace with only lo ($others)"; t_done; }
SRV=192.0.2.1 IN=192.0.2.10 OUT=192.0.2.20
for a in $SRV $IN $OUT; do ip address add "$a/32" dev lo; done

start_fakeup up || { not_ok "fakeup starts"; t_done; }
UP="127.0.0.1:$FK_PORT_up"
metrics() { curl -s -m 3 "http://127.0.0.1:$MPORT/metrics"; }
mval() { metrics | awk -v n="$1" '$1 == n { print $2; exit }'; }

# --- a. privileges and the snapshot ------------------------------------------
MPORT=$(pick_port)
SNAP="$T_TMP/state/cache.snap"
mkdir -p "$T_TMP/state" && chmod 0777 "$T_TMP/state"
start_stubborn --upstream "$UP" --snapshot "$SNAP" --snapshot-interval 0 \
    --metrics "127.0.0.1:$MPORT" --log-queries yes ||
	{ not_ok "a: stubborn starts"; t_done; }
user=$(ps -o user= -p "$STUB_PID" | tr -d ' ')
check "a: started as root, it runs as '$user'" test -n "$user" -a "$user" != root
expect_eq "a: no capabilities left" 0000000000000000 \
    "$(awk '/^CapEff/ { print $2 }' "/proc/$STUB_PID/status")"
expect_eq "a: no new privileges" 1 "$(awk '/^NoNewPrivs/ { print $2 }' "/proc/$STUB_PID/status")"
expect_eq "a: answers" NOERROR "$(q www.node.test A | dig_status)"

# --- e. the query log (this instance has log-queries on) ----------------------
q www.node.test A >/dev/null
q nx-1.node.test AAAA >/dev/null
log=$(grep 'sub=query' "$STUB_LOG")
expect_match "e: a reply from upstream is logged" \
    'client=127\.0\.0\.1 proto=udp name="www\.node\.test\." type=1 rcode=NOERROR source=upstream duration_us=[0-9]+' "$log"
expect_match "e: the same name again, from the cache" \
    'name="www\.node\.test\." type=1 rcode=NOERROR source=cache' "$log"
expect_match "e: an NXDOMAIN, with its type" 'name="nx-1\.node\.test\." type=28 rcode=NXDOMAIN' "$log"
expect_eq "e: one line per reply" 3 "$(echo "$log" | grep -c 'msg="reply')"

# --- d. a full upstream outage -------------------------------------------------
# The TTL must run out for answers to be stale: a short one.
q ttl1.out.node.test A >/dev/null
fk_ctl up "mode drop" >/dev/null
sleep 2.2 # past the 1 s TTL by more than a second (the age is in seconds)
age0=$(mval stubborn_upstream_last_answer_age_seconds)
for i in 1 2 3; do
	out=$(q ttl1.out.node.test A)
	expect_eq "d: during the outage, stale answer $i" NOERROR "$(echo "$out" | dig_status)"
done
sleep 0.5 # the gauge is in seconds: let it move
age1=$(mval stubborn_upstream_last_answer_age_seconds)
check "d: seconds since the last upstream answer rises ($age0 -> $age1)" \
    awk -v a="$age0" -v b="$age1" 'BEGIN { exit !(b > a && b >= 1) }'
expect_eq "d: stale answers in the last minute" 3 "$(mval stubborn_stale_answers_last_minute)"
age=$(mval stubborn_stale_answer_max_age_seconds)
check "d: the oldest stale answer's age past expiry ($age s)" test "${age:-0}" -ge 1
n=$(metrics | awk '$1 ~ /^stubborn_response_seconds_count\{source="stale"\}/ { print $2 }')
expect_eq "d: the stale answers are in the response-time histogram" 3 "$n"
b5=$(metrics | awk '$1 ~ /^stubborn_response_seconds_bucket\{source="stale",le="5"\}/ { print $2 }')
expect_eq "d: ... in its buckets up to 5 s" 3 "$b5"
srv=$(metrics | awk -v s="$UP" 'index($1, "stubborn_upstream_server_last_answer_age_seconds") == 1 && index($1, s) { print $2 }')
check "d: the per-server gauge moves too ($srv s)" awk -v a="$srv" 'BEGIN { exit !(a >= 1) }'
fk_ctl up "mode normal" >/dev/null

# a (end): the snapshot is written at SIGTERM by the unprivileged process.
stop_stubborn
check "a: the snapshot was written at SIGTERM" test -s "$SNAP"
expect_eq "a: owned by the user stubborn ran as" "$user" "$(stat -c %U "$SNAP")"

# --- b. access control -----------------------------------------------------------
"$STUBBORN" --listen "$SRV:$(pick_port)" --upstream "$UP" >/dev/null 2>"$T_TMP/b.err"
expect_eq "b: a non-loopback listen address without allow: exit 2" 2 "$?"
expect_match "b: the message names allow" "allow" "$(cat "$T_TMP/b.err")"
MPORT=$(pick_port)
P=$(pick_port)
"$STUBBORN" --listen "$SRV:$P" --listen "127.0.0.1:$P" --upstream "$UP" \
    --allow "$IN/32" --metrics "127.0.0.1:$MPORT" --workers 2 \
    --config "$ROOT/config/stubborn.conf" 2>"$T_TMP/b.log" &
B=$!; T_PIDS="$T_PIDS $B"
wait_dns "$SRV" "$P" "$B" || { not_ok "b: stubborn starts on $SRV"; t_done; }
out=$(dig @"$SRV" -p "$P" -b "$OUT" www.acl.node.test A +tries=1 +time=3)
expect_eq "b: a client outside allow: REFUSED" REFUSED "$(echo "$out" | dig_status)"
expect_match "b: ... with EDE 18 (Prohibited)" "EDE: 18" "$out"
expect_eq "b: a client inside allow: answered" NOERROR \
    "$(dig @"$SRV" -p "$P" -b "$IN" www.acl.node.test A +tries=1 +time=3 | dig_status)"
expect_match "b: the reply came from the address asked" "SERVER: $SRV#$P" \
    "$(dig @"$SRV" -p "$P" -b "$IN" www.acl.node.test A +tries=1 +time=3)"
check "b: the refusal is counted" test "$(mval stubborn_acl_refused_total)" -ge 1

# --- c. limits that fit a node --------------------------------------------------
# The shipped config, its upstream budget lifted for the test (the budget is
# what bounds a node; 1,000 qps of new names would be over it).
for i in $(seq 1 3000); do echo "u$i.load.node.test A"; done >"$T_TMP/c.perf"
kill -TERM "$B"; wait_pid "$B" 10
"$STUBBORN" --listen "$SRV:$P" --listen "127.0.0.1:$P" --upstream "$UP" \
    --allow "$IN/32" --metrics "127.0.0.1:$MPORT" \
    --config "$ROOT/config/stubborn.conf" --upstream-qps 100000 \
    --upstream-max-outstanding 100000 2>"$T_TMP/c.log" &
C=$!; T_PIDS="$T_PIDS $C"
wait_dns "$SRV" "$P" "$C" || { not_ok "c: stubborn starts"; t_done; }
dnsperf -s 127.0.0.1 -p "$P" -d "$T_TMP/c.perf" -l 3 -Q 1000 -t 3 >"$T_TMP/c.dnsperf" 2>&1
d=$(cat "$T_TMP/c.dnsperf")
expect_match "c: 1,000 qps of new names from 127.0.0.1, shipped limits: all answered" "Queries lost: +0 " "$d"
check "c: ... none REFUSED" sh -c "! grep -q REFUSED '$T_TMP/c.dnsperf'"
expect_match "c: ... all NOERROR" "NOERROR [0-9]+ \(100\.00%\)" "$d"
# One non-loopback client asking 800 new names in about a second: the
# shipped client-qps (200/s, bursts of 400) lets about 600 through.
python3 - "$SRV" "$P" "$IN" >"$T_TMP/c2.out" <<'EOF'
import socket, struct, sys, time
srv, port, src = sys.argv[1], int(sys.argv[2]), sys.argv[3]
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((src, 0))
s.setblocking(False)
codes = {}
def q(i):
    m = struct.pack(">HHHHHH", i, 0x0100, 1, 0, 0, 0)
    for lab in ("w%d" % i, "burst", "node", "test"):
        m += bytes([len(lab)]) + lab.encode()
    return m + b"\0" + struct.pack(">HH", 1, 1)
def drain():
    while True:
        try:
            r = s.recv(4096)
        except BlockingIOError:
            return
        codes[r[3] & 15] = codes.get(r[3] & 15, 0) + 1
start = time.monotonic()
for i in range(800):  # bounded: 800 queries, 1.25 ms apart
    s.sendto(q(i), (srv, port))
    drain()
    time.sleep(max(0, start + (i + 1) * 0.00125 - time.monotonic()))
end = time.monotonic() + 2
while sum(codes.values()) < 800 and time.monotonic() < end:
    drain()
    time.sleep(0.01)
print(codes.get(0, 0), codes.get(5, 0))
EOF
read -r okn refused <"$T_TMP/c2.out"
check "c: a non-loopback client over client-qps is limited ($okn answered, $refused REFUSED)" \
    test "${refused:-0}" -ge 100 -a "${okn:-0}" -le 700
check "c: ... and got its burst and rate answered" test "${okn:-0}" -ge 400
kill -TERM "$C"; wait_pid "$C" 10
expect_eq "c: exit 0" 0 "$WAIT_RC"
t_done
