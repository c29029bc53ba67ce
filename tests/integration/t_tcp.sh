#!/bin/bash
# Client-side TCP (RFC 7766, RFC 9210): answers, pipelining with out-of-order
# replies, idle timeout, connection limit, split and lying length prefixes.
. "$(dirname "$0")/lib.sh"
DNSRAW="python3 $(dirname "$0")/dnsraw.py"

raw() { $DNSRAW --port "$STUB_PORT" --timeout $((3 * SLOW)) "$@"; }
fld() { printf '%s\n' "$2" | tr ' ' '\n' | sed -n "s/^$1=//p" | head -n1; }
# rc LINE: the rcode of a dnsraw line, or the whole line ("timeout", ...).
rc() { local v; v=$(fld rcode "$1"); echo "${v:-$1}"; }
now_ms() { echo $(($(date +%s%N) / 1000000)); }
expect_a() {
	python3 -c '
import sys
n = sys.argv[1].lower()
n = n if n.endswith(".") else n + "."
h = 2166136261
for b in n.encode():
    h = ((h ^ b) * 16777619) & 0xffffffff
print("10.%d.%d.%d" % ((h >> 16) & 255, (h >> 8) & 255, h & 255))' "$1"
}
# secs_between "0.42" LO_MS HI_MS: the seconds value lies in [LO, HI] ms.
secs_between() {
	[ -n "$1" ] && awk -v s="$1" -v lo="$2" -v hi="$3" \
	    'BEGIN { exit !(s * 1000 >= lo && s * 1000 <= hi) }'
}
# check_pipeline FILE BASEID NAME...: every reply's id maps to its name and
# fakeup's A record for it; prints the mismatches (nothing when all match).
check_pipeline() {
	python3 - "$@" <<'PY'
import sys
f, base, names = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
def a(n):
    n = n.lower() + "."
    h = 2166136261
    for b in n.encode():
        h = ((h ^ b) * 16777619) & 0xffffffff
    return "10.%d.%d.%d" % ((h >> 16) & 255, (h >> 8) & 255, h & 255)
got = {}
for line in open(f):
    kv = dict(x.split("=", 1) for x in line.split() if "=" in x)
    if "id" in kv and "qname" in kv:
        got.setdefault(int(kv["id"]), kv)
bad = []
for i, n in enumerate(names):
    kv = got.get(base + i)
    if kv is None:
        bad.append("no-reply:%d/%s" % (base + i, n))
    elif kv["qname"] != n + "." or kv.get("data") != a(n):
        bad.append("wrong:%d/%s/%s/%s" % (base + i, n, kv["qname"], kv.get("data")))
print(" ".join(bad), end="")
PY
}

DELAY=400
start_fakeup up
start_fakeup slow --mode "delay:$DELAY"
start_stubborn --upstream "127.0.0.1:$FK_PORT_up" --tcp-idle-timeout 500

# --- plain TCP ---------------------------------------------------------------
out=$(q Tcp.Example.COM A +tcp)
expect_eq "dig +tcp: NOERROR" NOERROR "$(echo "$out" | dig_status)"
expect_match "dig +tcp: right data, client's case" \
    "^Tcp\\.Example\\.COM\\.[[:space:]]+[0-9]+[[:space:]]+IN[[:space:]]+A[[:space:]]+$(expect_a tcp.example.com | sed 's/\./\\./g')" "$out"
r=$(raw --tcp --name Tcp2.Example.COM --id 0xbeef --edns)
expect_eq "raw TCP: ID echoed" 48879 "$(fld id "$r")"
expect_eq "raw TCP: question echoed exactly" Tcp2.Example.COM. "$(fld qname "$r")"
expect_eq "raw TCP: OPT back" yes "$(fld opt "$r")"
out=$(q tcp.example.com A +tcp)
expect_eq "TCP query hit the cache (upstream saw one)" 1 "$(fk_count up '^[a-z]+ tcp\.example\.com\. A ')"

# A query split into two writes: length prefix, then the body 100 ms later.
r=$(raw --tcp --name split.example.com --tcp-split-ms 100)
expect_eq "split length prefix / body: answered" NOERROR "$(rc "$r")"
expect_eq "split length prefix / body: right data" "$(expect_a split.example.com)" "$(fld data "$r")"

# --- idle timeout (500 ms) ----------------------------------------------------
r=$(raw --tcp-idle)
t=$(fld after "$r")
check "idle connection closed by the server ($r)" test -n "$t"
check "idle connection closed after ~500 ms, within 1 s ($r)" \
    secs_between "$t" 400 $((1000 * SLOW))
# A client trickling a never-complete message is idle too (RFC 7766 6.2.3:
# the timer restarts only on a complete message).
r=$(raw --tcp-trickle-ms 200 --timeout $((4 * SLOW)))
t=$(fld after "$r")
check "trickling 1 byte / 200 ms does not keep the connection open past ~1 s ($r)" \
    secs_between "$t" 0 $((1500 * SLOW))

# A length prefix that promises more than is sent: the connection closes at
# the idle timeout and blocks nobody meanwhile.
raw --tcp --name liar.example.com --tcp-lenprefix-lie long --timeout $((3 * SLOW)) >"$T_TMP/liar" &
LIAR=$!
sleep 0.1
# dig's own query times, not process start-up, tell whether it blocked.
o1=$(q other1.example.com A +tcp)
o2=$(q other2.example.com A)
ms1=$(printf '%s\n' "$o1" | sed -n 's/.*Query time: \([0-9]*\) msec.*/\1/p')
ms2=$(printf '%s\n' "$o2" | sed -n 's/.*Query time: \([0-9]*\) msec.*/\1/p')
expect_eq "while a liar waits: TCP client answered" NOERROR "$(printf '%s\n' "$o1" | dig_status)"
expect_eq "while a liar waits: UDP client answered" NOERROR "$(printf '%s\n' "$o2" | dig_status)"
check "while a liar waits: answers are prompt (TCP ${ms1:-?} ms, UDP ${ms2:-?} ms)" \
    test "${ms1:-9999}" -lt $((500 * SLOW)) -a "${ms2:-9999}" -lt $((500 * SLOW))
wait "$LIAR"
r=$(cat "$T_TMP/liar")
t=$(fld after "$r")
check "long-lying length prefix: closed at the idle timeout ($r)" \
    secs_between "$t" 300 $((1500 * SLOW))
# Short lie: the server reads a cut message (FORMERR or nothing), never hangs.
r=$(raw --tcp --name shortlie.example.com --tcp-lenprefix-lie short --timeout $((2 * SLOW)))
check "short-lying length prefix: FORMERR, close or timeout, not a crash ($r)" \
    sh -c 'case "$1" in *rcode=FORMERR*|closed*|timeout) exit 0;; *) exit 1;; esac' _ "$r"
r=$(raw --tcp --name after-lies.example.com)
expect_eq "after the lies: stubborn still answers over TCP" NOERROR "$(rc "$r")"

stop_stubborn

# --- pipelining, out of order -------------------------------------------------
start_stubborn --upstream "127.0.0.1:$FK_PORT_slow" --upstream-timeout $((3000 * SLOW))
fk_ctl slow "mode normal" >/dev/null
for i in 1 2 3 4 5; do raw --name "c$i.pipe.example" >/dev/null; done
fk_ctl slow "mode delay $DELAY" >/dev/null
# Slow (uncached) names first, cached ones after: the cached ones should not
# wait behind them.  u3 twice (different IDs): both must be answered.
NAMES="u1.pipe.example u2.pipe.example c1.pipe.example u3.pipe.example c2.pipe.example c3.pipe.example u4.pipe.example c4.pipe.example u3.pipe.example c5.pipe.example"
t0=$(now_ms)
raw --tcp-pipeline 10 --id 5000 --timeout $((4 * SLOW)) $NAMES >"$T_TMP/pipe"
el=$(($(now_ms) - t0))
expect_eq "pipeline of 10: 10 replies on one connection" replies=10 "$(tail -n1 "$T_TMP/pipe")"
bad=$(check_pipeline "$T_TMP/pipe" 5000 $NAMES)
expect_eq "pipeline of 10: every ID matched to its name and data" "" "$bad"
first=$(head -n1 "$T_TMP/pipe")
expect_match "pipeline: a cached name answered first (out of order)" 'qname=c[1-5]\.pipe' "$first"
check "pipeline: slow queries ran concurrently (${el} ms < 3 x ${DELAY} ms)" \
    test "$el" -lt $((3 * DELAY + 1000 * SLOW))
expect_eq "pipeline: the duplicated slow name asked upstream once" 1 \
    "$(fk_count slow '^udp u3\.pipe\.example\. A ')"

# Half-close after the query (shutdown(SHUT_WR)): the replies still come, as
# fakeup does it.  The upstream is slow, so the EOF comes first.
r=$(raw --tcp --name halfclose.pipe.example --tcp-half-close)
expect_eq "half-closed client still gets its answer from a slow upstream" NOERROR "$(rc "$r")"
r=$(raw --tcp --name c1.pipe.example --tcp-half-close)
expect_eq "half-closed client gets a cached answer" NOERROR "$(rc "$r")"

# More than the per-connection window (64) in one write: back-pressure, then
# every reply.
n=$([ -n "$VALGRIND" ] && echo 70 || echo 100)
NAMES=$(seq -f 'w%g.pipe.example' 1 "$n" | tr '\n' ' ')
raw --tcp-pipeline "$n" --id 10000 --timeout $((6 * SLOW)) $NAMES >"$T_TMP/pipe2"
expect_eq "pipeline of $n (> 64 window): all answered" "replies=$n" "$(tail -n1 "$T_TMP/pipe2")"
bad=$(check_pipeline "$T_TMP/pipe2" 10000 $NAMES)
expect_eq "pipeline of $n: every ID matched to its name" "" "$bad"

# 70 queries for one uncacheable question (ANY) in one write: they coalesce,
# the window pauses reading, and the rest are read while the answer goes out.
NAMES=$(for i in $(seq 1 70); do printf 'any.pipe.example '; done)
raw --tcp-pipeline 70 --type ANY --id 20000 --timeout $((4 * SLOW)) $NAMES >"$T_TMP/pipe3"
expect_eq "70 pipelined identical ANY queries: 70 replies" replies=70 "$(tail -n1 "$T_TMP/pipe3")"

# Idle timeout must not cut a connection waiting for a slow upstream.
stop_stubborn
start_stubborn --upstream "127.0.0.1:$FK_PORT_slow" --tcp-idle-timeout 200 \
    --upstream-timeout $((3000 * SLOW))
# The reply arrives close to the idle timer's second expiry: try a few times.
okn=0
for i in 1 2 3 4 5 6; do
	r=$(raw --tcp --name "slowidle$i.example.com")
	[ "$(rc "$r")" = NOERROR ] && okn=$((okn + 1))
done
expect_eq "upstream slower (${DELAY} ms) than the idle timeout (200 ms): 6 of 6 answered" 6 "$okn"
stop_stubborn
fk_ctl slow "mode normal" >/dev/null

# --- connection limit -----------------------------------------------------------
# Two workers (the lib's default): the kernel's SO_REUSEPORT hash spreads
# the connections, maybe all on one worker; the limit is on them all, and
# the worker that gets the 6th makes room with an idle connection of its
# own or has the other worker close one.
start_stubborn --upstream "127.0.0.1:$FK_PORT_up" --tcp-max-connections 5 \
    --tcp-idle-timeout $((20000 * SLOW))
$DNSRAW --port "$STUB_PORT" --tcp-hold 5 --hold-seconds $((2 * SLOW)) >"$T_TMP/hold" &
HOLD=$!
T_PIDS="$T_PIDS $HOLD"
for _ in $(seq 1 $((30 * SLOW))); do grep -q held "$T_TMP/hold" && break; sleep 0.1; done
expect_eq "5 idle connections open" "held 5" "$(head -n1 "$T_TMP/hold")"
sleep 0.2
# At the limit the longest-idle connection makes room (RFC 7766 6.2.3):
# idle connections cannot lock out a client that has a query.
r=$(raw --tcp --name sixth.example.com)
expect_eq "6th connection at the limit is served" NOERROR "$(rc "$r")"
r=$(raw --name udp-while-full.example.com)
expect_eq "UDP still answered while TCP is full" NOERROR "$(rc "$r")"
wait "$HOLD"
expect_eq "one held idle connection was closed to make room" "closed 1" "$(tail -n1 "$T_TMP/hold")"
sleep 0.2
r=$(raw --tcp --name after-full.example.com)
expect_eq "once they close, TCP is served again" NOERROR "$(rc "$r")"
stop_stubborn

# A limit of one: each new connection (it asks one query, then stays open
# and idle) displaces the one before, whichever of the two workers holds
# it; over 9 connections the hash puts some of them on the other worker.
start_stubborn --upstream "127.0.0.1:$FK_PORT_up" --tcp-max-connections 1 \
    --tcp-idle-timeout $((20000 * SLOW))
r=$(python3 "$(dirname "$0")/tcpchurn.py" --port "$STUB_PORT" --connections 9 \
    --timeout $((2 * SLOW)))
expect_eq "limit 1, two workers: 9 connections served, each displacing the idle one before" \
    "served 9 displaced 8" "$r"
stop_stubborn

t_done
