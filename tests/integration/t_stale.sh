#!/bin/bash
# Serve-stale, snapshots, refresh-ahead, keep-warm, stale-on-negative and
# failure caching, black-box (issue 4 acceptance).  One fakeup upstream
# (plus short-lived ones), a fresh stubborn per part:
#   a. 20 cached ttl2 names expire, the upstream goes silent: the first query
#      is answered stale (EDE 3) within 1.8 s, then 100 qps over the same 20
#      names for 4 s: all NOERROR with the right address, p99 <= 50 ms
#   b. upstream REFUSED, and an upstream nobody listens on (ICMP
#      unreachable): stale, not SERVFAIL
#   c. --snapshot: SIGTERM saves, a restart with a silent upstream answers
#      stale; a corrupt snapshot is ignored (logged), stubborn still starts
#   d. RFC 9520 failure caching on the wire: SERVFAIL EDE 22, then EDE 13
#      at once with no upstream query
# Everything that depends on time passing (windows, holds, cadences,
# recovery) is in the scenario tests (tests/scenario/), where the clock is
# the test's.
# fakeup gives TTL N to a name whose FIRST LABEL is exactly "ttlN" (digits
# only: "ttl2-x" would get the default 300), so the names here are
# ttl2.<tag>.stale.example.  Expected addresses come from fakeup itself,
# asked directly while it answers normally.
# Timings come from dig's "Query time" (one query) or from a small
# rate-paced UDP helper below (names cycled, like loadgen.py but for a fixed
# name set, checking the address, TTL and EDE of every reply).
# VALGRIND=1 runs a reduced variant: a (load at 20 qps, correctness only),
# b (REFUSED only), c and d without latency checks.
. "$(dirname "$0")/lib.sh"

STALELOAD="$T_TMP/staleload.py"
cat >"$STALELOAD" <<'PYEOF'
#!/usr/bin/env python3
"""staleload: steady-rate UDP A queries cycling over a fixed set of names.

  staleload.py --port P --rate R --seconds T --names FILE [--timeout S]

FILE has one "name address" per line.  Query N (sent N/R s after the start)
asks for name N mod len(names), with EDNS (so EDE options come back).  Each
reply is checked: rcode, the A address (must equal the file's), the TTL, the
EDE codes.  Prints one JSON line: sent, answered, lost, rcodes, wrong_addr,
ede {code: count}, ttl_min/ttl_max, latency_ms {p50, p90, p99, max},
over_50ms, first_per_name_ms (each name's first query in the run) and
repeats_ms (the others), slow (the 10 slowest: t, name, ms, ede).  Only 127.0.0.1/::1; rate <= 2000,
seconds <= 60, timeout <= 10: bounded in count and time.
"""
import argparse, json, random, selectors, socket, struct, sys, time


def enc(name):
    out = b""
    for lab in name.rstrip(".").split("."):
        out += bytes([len(lab)]) + lab.encode()
    return out + b"\0"


def skip_name(m, o):
    while True:
        n = m[o]
        if n & 0xC0 == 0xC0:
            return o + 2
        if n == 0:
            return o + 1
        o += 1 + n


def parse(m):
    """(id, rcode, [A addresses], first TTL or None, [EDE codes])."""
    qid, fl, qd, an, ns, ar = struct.unpack("!6H", m[:12])
    o = 12
    for _ in range(qd):
        o = skip_name(m, o) + 4
    addrs, ttl, ede = [], None, []
    for i in range(an + ns + ar):
        o = skip_name(m, o)
        t, c, tt, rl = struct.unpack("!HHIH", m[o:o + 10])
        o += 10
        rd = m[o:o + rl]
        o += rl
        if i < an and t == 1 and rl == 4:
            addrs.append(socket.inet_ntoa(rd))
            if ttl is None:
                ttl = tt
        if t == 41:
            p = 0
            while p + 4 <= len(rd):
                oc, ol = struct.unpack("!HH", rd[p:p + 4])
                if oc == 15 and ol >= 2:
                    ede.append(struct.unpack("!H", rd[p + 4:p + 6])[0])
                p += 4 + ol
    return qid, fl & 0xF, addrs, ttl, ede


def pct(v, p):
    if not v:
        return None
    k = min(len(v) - 1, max(0, int(round(p / 100.0 * len(v) + 0.5)) - 1))
    return round(v[k], 3)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--server", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--rate", type=float, required=True)
    ap.add_argument("--seconds", type=float, required=True)
    ap.add_argument("--timeout", type=float, default=2.0)
    ap.add_argument("--names", required=True)
    a = ap.parse_args()
    if a.server not in ("127.0.0.1", "::1"):
        sys.exit("only loopback targets")
    if not (0 < a.rate <= 2000 and 0 < a.seconds <= 60 and 0 < a.timeout <= 10):
        sys.exit("rate/seconds/timeout out of range")
    names = [l.split() for l in open(a.names) if l.strip()]
    if not names:
        sys.exit("no names")
    names = [(n.rstrip(".").lower() + ".", ad) for n, ad in names]
    fam = socket.AF_INET6 if ":" in a.server else socket.AF_INET
    s = socket.socket(fam, socket.SOCK_DGRAM)
    s.connect((a.server, a.port))
    s.setblocking(False)
    sel = selectors.DefaultSelector()
    sel.register(s, selectors.EVENT_READ)
    total = int(a.rate * a.seconds)
    recs = []          # [t_sent, name_idx, ms, rcode, addrs, ttl, ede]
    pending = {}       # id -> record index
    t0 = time.monotonic()
    n = 0
    end = t0 + a.seconds + a.timeout + 2
    while time.monotonic() < end:
        now = time.monotonic()
        while n < total and now - t0 >= n / a.rate:
            qid = random.getrandbits(16)
            while qid in pending:
                qid = random.getrandbits(16)
            nm = names[n % len(names)][0]
            q = struct.pack("!6H", qid, 0x0100, 1, 0, 0, 1) + enc(nm) + \
                struct.pack("!HH", 1, 1) + b"\0" + struct.pack("!HHIH", 41, 1232, 0, 0)
            try:
                s.send(q)
            except OSError:
                pass
            pending[qid] = len(recs)
            recs.append([now - t0, n % len(names), None, None, [], None, []])
            n += 1
            now = time.monotonic()
        for qid in [k for k, i in pending.items()
                    if now - t0 - recs[i][0] > a.timeout]:
            del pending[qid]
        if n >= total and not pending:
            break
        wait = max(0.0, min(0.02, t0 + n / a.rate - time.monotonic()))
        for _ in sel.select(wait):
            while True:
                try:
                    m = s.recv(4096)
                except (BlockingIOError, InterruptedError):
                    break
                except ConnectionRefusedError:
                    continue
                rt = time.monotonic()
                try:
                    qid, rc, addrs, ttl, ede = parse(m)
                except Exception:
                    continue
                i = pending.pop(qid, None)
                if i is None:
                    continue
                r = recs[i]
                r[2] = (rt - t0 - r[0]) * 1000.0
                r[3], r[4], r[5], r[6] = rc, addrs, ttl, ede
    rcn = {0: "NOERROR", 2: "SERVFAIL", 3: "NXDOMAIN", 5: "REFUSED"}
    rcodes, ede, lat, wrong, ttls = {}, {}, [], 0, []
    for r in recs:
        if r[2] is None:
            continue
        k = rcn.get(r[3], "RCODE%d" % r[3])
        rcodes[k] = rcodes.get(k, 0) + 1
        lat.append(r[2])
        for e in r[6]:
            ede[str(e)] = ede.get(str(e), 0) + 1
        if r[3] == 0 and r[4] != [names[r[1]][1]]:
            wrong += 1
        if r[5] is not None:
            ttls.append(r[5])
    lat.sort()
    answered = [r for r in recs if r[2] is not None]
    # Each name's first query in the run, and the repeats after it.
    firsts = sorted(r[2] for i, r in enumerate(recs)
                    if r[2] is not None and i < len(names))
    reps = sorted(r[2] for i, r in enumerate(recs)
                  if r[2] is not None and i >= len(names))
    slow = sorted(answered, key=lambda r: -r[2])[:10]
    print(json.dumps({
        "sent": len(recs), "answered": len(lat), "lost": len(recs) - len(lat),
        "rcodes": rcodes, "wrong_addr": wrong, "ede": ede,
        "ttl_min": min(ttls) if ttls else None,
        "ttl_max": max(ttls) if ttls else None,
        "latency_ms": {"p50": pct(lat, 50), "p90": pct(lat, 90),
                       "p99": pct(lat, 99),
                       "max": round(lat[-1], 3) if lat else None},
        "over_50ms": sum(1 for x in lat if x > 50),
        "first_per_name_ms": {"n": len(firsts), "p50": pct(firsts, 50),
                              "max": round(firsts[-1], 3) if firsts else None},
        "repeats_ms": {"n": len(reps), "p99": pct(reps, 99),
                       "max": round(reps[-1], 3) if reps else None},
        "slow": [{"t": round(r[0], 3), "name": names[r[1]][0],
                  "ms": round(r[2], 1), "ede": r[6]} for r in slow]},
        sort_keys=True))


main()
PYEOF

now_ms() { echo $(($(date +%s%N) / 1000000)); }

# qp PORT NAME TYPE [dig options]: dig against another stubborn instance.
qp() {
	local p=$1 n=$2 t=$3; shift 3
	dig @127.0.0.1 -p "$p" "$n" "$t" +tries=1 +time=$((4 * SLOW)) "$@" 2>&1
}
# Fields of a dig output.
qtime() { sed -n 's/^;; Query time: \([0-9]*\) msec.*/\1/p' | head -n1; }
ede_of() { sed -n 's/.*EDE: \([0-9]*\).*/\1/p' | head -n1; }
# First A address / TTL of the answer section.
ans_addr() { awk '/^;; ANSWER SECTION:/ { s = 1; next } s && NF == 0 { exit }
	s && $4 == "A" { print $5; exit }'; }
ans_ttl() { awk '/^;; ANSWER SECTION:/ { s = 1; next } s && NF == 0 { exit }
	s && $4 == "A" { print $2; exit }'; }
# Straight from fakeup (normal mode): the address a name must have.
fk_addr() {
	local port
	eval "port=\$FK_PORT_$1"
	dig @127.0.0.1 -p "$port" "$2" A +short +tries=1 +time=2 2>/dev/null | head -n1
}
json() {
	python3 -c 'import json,sys
d = json.load(open(sys.argv[1]))
v = eval(sys.argv[2])
print("null" if v is None else v)' "$1" "$2" 2>/dev/null || echo "?"
}
# le A B: numeric A <= B (A must be a number).
le() { awk -v a="$1" -v b="$2" 'BEGIN { exit !(a != "" && a ~ /^[0-9.]+$/ && a + 0 <= b + 0) }'; }
# sleep_until T_MS: sleeps until the clock reads T_MS (no-op if past).
sleep_until() {
	local d=$(($1 - $(now_ms)))
	[ "$d" -gt 0 ] && sleep "$(awk -v d="$d" 'BEGIN { printf "%.3f", d / 1000 }')"
	return 0
}
# stale_ok DESC OUT WANT_ADDR [MAX_MS]: NOERROR, EDE 3, TTL 1..30, the
# address, and the query time within MAX_MS (when given and not valgrind).
stale_ok() {
	local d=$1 out=$2 want=$3 max=${4:-} st ede ttl addr ms
	st=$(printf '%s\n' "$out" | dig_status)
	ede=$(printf '%s\n' "$out" | ede_of)
	ttl=$(printf '%s\n' "$out" | ans_ttl)
	addr=$(printf '%s\n' "$out" | ans_addr)
	ms=$(printf '%s\n' "$out" | qtime)
	echo "# $d: status=$st ede=${ede:-none} ttl=${ttl:-none} addr=${addr:-none} (want $want) ${ms:-?} ms"
	expect_eq "$d: NOERROR" NOERROR "$st"
	expect_eq "$d: EDE 3 (Stale Answer)" 3 "$ede"
	check "$d: TTL 1..30 (got ${ttl:-none})" test "${ttl:-0}" -ge 1 -a "${ttl:-0}" -le 30
	expect_eq "$d: the original address" "$want" "$addr"
	if [ -n "$max" ] && [ -z "$VALGRIND" ]; then
		check "$d: answered within $max ms (${ms:-?} ms)" le "${ms:-x}" "$max"
	fi
}
# cache_names PORT FILE NAME...: asks each name once through stubborn and
# writes "name address" (the address fakeup gives) to FILE; ok when all
# were answered NOERROR with that address.
cache_names() {
	local p=$1 f=$2 n out bad=0; shift 2
	: >"$f"
	for n in "$@"; do
		out=$(qp "$p" "$n" A)
		a=$(printf '%s\n' "$out" | ans_addr)
		[ "$(printf '%s\n' "$out" | dig_status)" = NOERROR ] && [ -n "$a" ] || bad=$((bad + 1))
		echo "$n $a" >>"$f"
	done
	[ "$bad" -eq 0 ]
}
addr_in() { awk -v n="$2" '$1 == n { print $2; exit }' "$1"; }
# stop_other PID PORT: stop_stubborn for an instance saved aside.
stop_other() {
	local sp=$STUB_PID spo=$STUB_PORT
	STUB_PID=$1 STUB_PORT=$2
	stop_stubborn
	STUB_PID=$sp STUB_PORT=$spo
}

start_fakeup up || { not_ok "fakeup starts"; t_done; }
UP="127.0.0.1:$FK_PORT_up"
TAG=s$$

# --- a. silent upstream: stale at once, and under load ---------------------
start_stubborn --upstream "$UP" || { not_ok "a: stubborn starts"; t_done; }
names=()
for i in $(seq 1 20); do names+=("ttl2.a$i-$TAG.stale.example"); done
check "a: 20 ttl2 names cached (NOERROR)" cache_names "$STUB_PORT" "$T_TMP/a.names" "${names[@]}"
t_cached=$(now_ms)
n1=${names[0]}
expect_eq "a: fakeup gives ${n1} the address stubborn cached" \
    "$(fk_addr up "$n1")" "$(addr_in "$T_TMP/a.names" "$n1")"
check "a: the cached answer carries TTL 2" test "$(q "$n1" A | ans_ttl)" -le 2
sleep_until $((t_cached + 3000))
fk_ctl up "mode drop" >/dev/null
c0=$(fk_count up "$TAG")
out=$(q "$n1" A)
stale_ok "a: first query after expiry, upstream silent" "$out" "$(addr_in "$T_TMP/a.names" "$n1")" 1800
check "a: the upstream was asked (refresh attempt, $(($(fk_count up "$TAG") - c0)) queries)" \
    test "$(fk_count up "$TAG")" -gt "$c0"
if [ -z "$VALGRIND" ]; then RATE=100; else RATE=20; fi
python3 "$STALELOAD" --port "$STUB_PORT" --rate $RATE --seconds 4 \
    --timeout $((SLOW > 1 ? 10 : 2)) --names "$T_TMP/a.names" >"$T_TMP/a.json" 2>"$T_TMP/a.err"
sent=$(json "$T_TMP/a.json" 'd["sent"]')
[ -s "$T_TMP/a.err" ] && sed 's/^/# a: load helper: /' "$T_TMP/a.err"
expect_eq "a: load: $RATE qps x 4 s sent" $((RATE * 4)) "$sent"
p99=$(json "$T_TMP/a.json" 'd["latency_ms"]["p99"]')
echo "# a: $RATE qps x 4 s over the 20 stale names: sent $sent, rcodes $(json "$T_TMP/a.json" 'd["rcodes"]'), EDE $(json "$T_TMP/a.json" 'd["ede"]'), TTL $(json "$T_TMP/a.json" 'd["ttl_min"]')..$(json "$T_TMP/a.json" 'd["ttl_max"]'), latency $(json "$T_TMP/a.json" 'd["latency_ms"]') ms, over 50 ms: $(json "$T_TMP/a.json" 'd["over_50ms"]')"
echo "# a: each name's first query in the run: $(json "$T_TMP/a.json" 'd["first_per_name_ms"]') ms; the repeats: $(json "$T_TMP/a.json" 'd["repeats_ms"]') ms"
echo "# a: p99 = $p99 ms; slowest: $(json "$T_TMP/a.json" '" ".join("%s@%.2fs=%sms" % (s["name"].split(".")[1], s["t"], s["ms"]) for s in d["slow"])')"
expect_eq "a: load: no query lost" 0 "$(json "$T_TMP/a.json" 'd["lost"]')"
expect_eq "a: load: every reply NOERROR" "$sent" "$(json "$T_TMP/a.json" 'd["rcodes"].get("NOERROR", 0)')"
expect_eq "a: load: every address right" 0 "$(json "$T_TMP/a.json" 'd["wrong_addr"]')"
expect_eq "a: load: every reply EDE 3" "$sent" "$(json "$T_TMP/a.json" 'd["ede"].get("3", 0)')"
if [ -z "$VALGRIND" ]; then
	check "a: load: p99 <= 50 ms (p99 $p99 ms)" le "$p99" 50
else
	echo "# a (valgrind): latency not checked (p99 $p99 ms)"
fi
stop_stubborn

# --- b. REFUSED and ICMP-unreachable upstreams: stale, not SERVFAIL ----------
fk_ctl up "mode normal" >/dev/null
start_stubborn --upstream "$UP" || { not_ok "b: stubborn starts"; t_done; }
B1_PID=$STUB_PID B1_PORT=$STUB_PORT
nb=ttl2.b1-$TAG.stale.example
check "b: name cached" cache_names "$B1_PORT" "$T_TMP/b.names" "$nb"
t_cached=$(now_ms)
if [ -z "$VALGRIND" ]; then
	start_fakeup dead || { not_ok "b: second fakeup starts"; t_done; }
	start_stubborn --upstream "127.0.0.1:$FK_PORT_dead" || { not_ok "b: stubborn 2 starts"; t_done; }
	B2_PID=$STUB_PID B2_PORT=$STUB_PORT
	nu=ttl2.b2-$TAG.stale.example
	check "b: name cached via the second upstream" cache_names "$B2_PORT" "$T_TMP/b2.names" "$nu"
	t_cached=$(now_ms)
	# Nobody listens there any more: UDP gets ICMP port unreachable.
	kill -TERM "$FK_PID_dead"
	wait_pid "$FK_PID_dead" 5
	T_PIDS=$(echo " $T_PIDS " | sed "s/ $FK_PID_dead / /")
	check "b: the second upstream's port is closed" \
	    sh -c "! ss -Hlnu 'sport = :$FK_PORT_dead' | grep -q ."
fi
sleep_until $((t_cached + 3000))
fk_ctl up "mode refused" >/dev/null
out=$(qp "$B1_PORT" "$nb" A)
stale_ok "b: upstream REFUSED" "$out" "$(addr_in "$T_TMP/b.names" "$nb")" 1800
if [ -z "$VALGRIND" ]; then
	out=$(qp "$B2_PORT" "$nu" A)
	stale_ok "b: upstream port unreachable (ICMP)" "$out" "$(addr_in "$T_TMP/b2.names" "$nu")" 1800
	stop_other "$B2_PID" "$B2_PORT"
fi
stop_other "$B1_PID" "$B1_PORT"

# --- c. snapshot across a restart ---------------------------------------------
fk_ctl up "mode normal" >/dev/null
SNAP="$T_TMP/snap"
start_stubborn --upstream "$UP" --snapshot "$SNAP" --snapshot-interval 0 ||
    { not_ok "c: stubborn starts with --snapshot"; t_done; }
names=()
for i in 1 2 3 4 5; do names+=("ttl2.c$i-$TAG.stale.example"); done
check "c: 5 ttl2 names cached" cache_names "$STUB_PORT" "$T_TMP/c.names" "${names[@]}"
t_cached=$(now_ms)
stop_stubborn
check "c: the snapshot file exists after SIGTERM ($(stat -c %s "$SNAP" 2>/dev/null || echo 0) bytes)" test -s "$SNAP"
check "c: the save is logged" grep -q 'cache saved' "$STUB_LOG"
fk_ctl up "mode drop" >/dev/null
sleep_until $((t_cached + 3000))
start_stubborn --upstream "$UP" --snapshot "$SNAP" --snapshot-interval 0 ||
    { not_ok "c: stubborn restarts with the snapshot"; t_done; }
out=$(q "${names[0]}" A)
stale_ok "c: after restart, upstream silent, first query" "$out" "$(addr_in "$T_TMP/c.names" "${names[0]}")" 1800
out=$(q "${names[0]}" A)
stale_ok "c: the same name again" "$out" "$(addr_in "$T_TMP/c.names" "${names[0]}")" 100
for n in "${names[@]:1}"; do
	out=$(q "$n" A)
	stale_ok "c: next name ${n%%-*}" "$out" "$(addr_in "$T_TMP/c.names" "$n")" 100
done
check "c: the load is logged" grep -q 'snapshot loaded' "$STUB_LOG"
grep 'snapshot' "$STUB_LOG" | sed 's/^/# c: log: /'
stop_stubborn
# A flipped byte in the middle: the checksum fails, the file is ignored.
python3 - "$SNAP" <<'EOF'
import sys
p = sys.argv[1]
b = bytearray(open(p, "rb").read())
b[len(b) // 2] ^= 0x5a
open(p, "wb").write(bytes(b))
EOF
fk_ctl up "mode normal" >/dev/null
if start_stubborn --upstream "$UP" --snapshot "$SNAP" --snapshot-interval 0; then
	ok "c: stubborn starts with a corrupt snapshot"
	for _ in $(seq 1 $((20 * SLOW))); do
		grep -q 'snapshot ignored' "$STUB_LOG" && break
		sleep 0.1
	done
	check "c: the corrupt snapshot is logged as ignored" grep -q 'snapshot ignored' "$STUB_LOG"
	grep 'snapshot' "$STUB_LOG" | sed 's/^/# c: log: /'
	expect_eq "c: and it answers (from the upstream)" NOERROR "$(q "${names[1]}" A | dig_status)"
	stop_stubborn
else
	not_ok "c: stubborn starts with a corrupt snapshot"
fi

# The time-dependent behaviour (stale-on-negative and its window,
# refresh-ahead, keep-warm cadence, RFC 9520 holds and their doubling,
# recovery) is played against a clock of its own in tests/scenario/; here
# the wire: a held failure's SERVFAIL and EDEs reach a real client.

# --- d. failure caching on the wire (RFC 9520) ------------------------------
fk_ctl up "mode drop" >/dev/null
start_stubborn --upstream "$UP" || { not_ok "d: stubborn starts"; t_done; }
nf=fail-$TAG.stale.example
pf() { fk_count up " $(printf '%s' "$nf" | sed 's/\./\\./g')\\. A "; }
out=$(q "$nf" A)
expect_eq "d: uncached name, upstream silent: SERVFAIL" SERVFAIL "$(printf '%s\n' "$out" | dig_status)"
expect_eq "d: ... with EDE 22 (No Reachable Authority)" 22 "$(printf '%s\n' "$out" | ede_of)"
f1=$(pf)
out=$(q "$nf" A)
expect_eq "d: an immediate second query: SERVFAIL" SERVFAIL "$(printf '%s\n' "$out" | dig_status)"
expect_eq "d: ... with EDE 13 (Cached Error)" 13 "$(printf '%s\n' "$out" | ede_of)"
expect_eq "d: ... and the upstream saw no new query for it" "$f1" "$(pf)"
stop_stubborn

t_done
