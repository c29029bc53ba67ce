#!/bin/bash
# Coalescing of identical in-flight queries, and 0x20 upstream letter case.
#   a. 20 clients (own sockets, IDs and letter case) ask one slow uncached
#      name at once: all get the answer with their own ID and case, the
#      upstream sees one query, stubborn_coalesced_total >= 19.  With two
#      workers (each coalesces its own queries) at most 2 go upstream.
#   b. A client repeating its query (same socket and ID) while it is in
#      flight gets one reply; the upstream sees one query.
#   c. --max-waiters 5: of 10 clients on one slow name 5 get the answer, 5
#      get SERVFAIL + EDE 0 at once (they do not wait for the upstream).
#   d. --upstream-0x20 yes: the upstream sees mixed case; a server that
#      lower-cases the question (fakeup mode lowercase) is not believed and
#      the next server answers; with 0x20 off its answers are accepted.
. "$(dirname "$0")/lib.sh"
DIR=$(cd "$(dirname "$0")" && pwd)

DELAY=$((300 * SLOW))        # ms the slow upstream holds every answer
FAST=$((100 * SLOW))         # ms within which a refused waiter is answered
COAL="$T_TMP/coal.py"

# The A record fakeup synthesizes for a name (FNV-1a, see tools/fakeup.md).
expect_a() {
	python3 -c '
import sys
h = 2166136261
n = sys.argv[1].lower()
if not n.endswith("."):
    n += "."
for b in n.encode():
    h = ((h ^ b) * 16777619) & 0xffffffff
print("10.%d.%d.%d" % ((h >> 16) & 255, (h >> 8) & 255, h & 255))' "$1"
}

metric() {
	curl -s --noproxy '*' -m $((3 * SLOW)) "http://127.0.0.1:$MET_PORT/metrics" |
	    sed -n "s/^$1 \([0-9]*\).*/\1/p" | head -n1
}

# coal.py: N concurrent UDP clients, or one client repeating itself.  One
# line per client: i= id_sent= id= qname_sent= qname= rcode= ede= text=
# data= ms= (first reply, from its send) replies= (within the listen time).
cat >"$COAL" <<'EOF'
import argparse, random, select, socket, struct, sys, time
sys.path.insert(0, sys.argv.pop(1))
import dnsraw

def variant(name, i):
    """The i-th letter-case variant of name: distinct, mixed, repeatable."""
    rnd = random.Random(1000 + i)
    while True:
        s = "".join(c.upper() if c.isalpha() and rnd.random() < 0.5 else c.lower()
                    for c in name)
        if s.lower() != s and s.upper() != s:
            return s

def query(name, qid):
    return (struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 1) +
            dnsraw.encode_name(name) + struct.pack("!HH", 1, 1) +
            b"\x00" + struct.pack("!HHBBHH", 41, 1232, 0, 0, 0, 0))

def ede_text(msg):
    """The EXTRA-TEXT of the first EDE option, or "-"."""
    try:
        qd, an, ns, ar = struct.unpack("!HHHH", msg[4:12])
        off = 12
        for _ in range(qd):
            _, off = dnsraw.read_name(msg, off)
            off += 4
        for k in range(an + ns + ar):
            _, off = dnsraw.read_name(msg, off)
            t, _, _, rdlen = struct.unpack("!HHIH", msg[off:off + 10])
            off += 10
            rd = msg[off:off + rdlen]
            off += rdlen
            p = 0
            while t == 41 and p + 4 <= len(rd):
                oc, ol = struct.unpack("!HH", rd[p:p + 4])
                if oc == 15 and ol >= 2:
                    return rd[p + 6:p + 4 + ol].decode("ascii", "replace").replace(" ", "_") or "-"
                p += 4 + ol
    except (ValueError, struct.error):
        pass
    return "-"

p = argparse.ArgumentParser()
p.add_argument("mode", choices=["burst", "repeat"])
p.add_argument("--port", type=int, required=True)
p.add_argument("--name", required=True)
p.add_argument("--n", type=int, default=1)
p.add_argument("--gap", type=float, default=0.05)
p.add_argument("--wait", type=float, default=3.0)
p.add_argument("--listen", type=float, default=1.0)
a = p.parse_args()
assert 1 <= a.n <= 100 and a.wait <= 60 and a.listen <= 30

socks, sent, first, replies, t_send = [], [], {}, {}, {}
n = a.n if a.mode == "burst" else 1
for i in range(n):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    s.connect(("127.0.0.1", a.port))
    s.setblocking(False)
    socks.append(s)
    nm = variant(a.name, i) if a.mode == "burst" else a.name
    sent.append((0x1100 + 613 * i & 0xFFFF, nm))
    replies[i] = 0
msgs = [query(nm, qid) for qid, nm in sent]
for i, s in enumerate(socks):
    t_send[i] = time.monotonic()
    s.send(msgs[i])
if a.mode == "repeat":
    # The same query from the same socket while it is in flight.
    for _ in range(a.n - 1):
        time.sleep(a.gap)
        socks[0].send(msgs[0])
t0 = time.monotonic()
deadline = t0 + a.wait
while time.monotonic() < deadline:
    r, _, _ = select.select(socks, [], [], max(0.0, deadline - time.monotonic()))
    for s in r:
        i = socks.index(s)
        try:
            m = s.recv(65535)
        except OSError:
            continue
        replies[i] += 1
        if i not in first:
            first[i] = (m, time.monotonic() - t_send[i])
    # Once every client has its answer, listen a.listen more for extras.
    if len(first) == n and deadline > time.monotonic() + a.listen:
        deadline = time.monotonic() + a.listen
for i in range(n):
    qid, nm = sent[i]
    if i in first:
        m, el = first[i]
        d = dict(kv.split("=", 1) for kv in dnsraw.decode(m).split() if "=" in kv)
        print("i=%d id_sent=%d id=%s qname_sent=%s. qname=%s rcode=%s ede=%s text=%s data=%s ms=%d replies=%d"
              % (i, qid, d.get("id"), nm, d.get("qname"), d.get("rcode"),
                 d.get("ede"), ede_text(m), d.get("data"), el * 1000, replies[i]))
    else:
        print("i=%d id_sent=%d id=- qname_sent=%s. qname=- rcode=timeout ede=- text=- data=- ms=- replies=0"
              % (i, qid, nm))
EOF
coal() { python3 "$COAL" "$DIR" "$@"; }
# field NAME: the values of key NAME, one a line, from coal output on stdin.
field() { sed -n "s/.* $1=\([^ ]*\).*/\1/p; s/^$1=\([^ ]*\).*/\1/p"; }

start_fakeup slow --mode "delay $DELAY"
start_fakeup up1
start_fakeup up2

# --- a. 20 concurrent clients, one upstream query ---------------------------
MET_PORT=$(pick_port)
start_stubborn --workers 1 --upstream "127.0.0.1:$FK_PORT_slow" \
    --upstream-timeout $((DELAY + 2000)) --metrics "127.0.0.1:$MET_PORT"
NAME=coalesce-twenty.example.com
A=$(expect_a $NAME)
c0=$(metric stubborn_coalesced_total)
out=$(coal burst --port "$STUB_PORT" --name $NAME --n 20 --wait $((3 * SLOW)))
expect_eq "a: 20 clients, 20 NOERROR replies" 20 "$(echo "$out" | grep -c ' rcode=NOERROR ')"
expect_eq "a: every reply carries the one address $A" "$A" \
    "$(echo "$out" | field data | sort -u | tr '\n' ' ' | sed 's/ $//')"
expect_eq "a: every reply has its client's own ID" 20 \
    "$(echo "$out" | awk '{ split($2, s, "="); split($3, r, "="); if (s[2] == r[2]) n++ } END { print n + 0 }')"
expect_eq "a: the 20 clients used 20 different letter cases" 20 \
    "$(echo "$out" | field qname_sent | sort -u | wc -l | tr -d ' ')"
expect_eq "a: every reply echoes its client's letter case exactly" 20 \
    "$(echo "$out" | awk '{ split($4, s, "="); split($5, r, "="); if (s[2] == r[2]) n++ } END { print n + 0 }')"
expect_eq "a: one reply per client" 20 "$(echo "$out" | grep -c ' replies=1$')"
expect_eq "a: the upstream saw exactly 1 query for the name" 1 \
    "$(fk_count slow "^udp coalesce-twenty\\.example\\.com\\. A ")"
c1=$(metric stubborn_coalesced_total)
check "a: stubborn_coalesced_total grew by >= 19 (${c0:-?} -> ${c1:-?})" \
    test "$(( ${c1:-0} - ${c0:-0} ))" -ge 19
echo "$out" | grep -v ' rcode=NOERROR .* replies=1$' | sed 's/^/# /'

# --- b. a client repeating itself -------------------------------------------
NAME=coalesce-repeat.example.com
out=$(coal repeat --port "$STUB_PORT" --name $NAME --n 3 --gap 0.05 \
    --wait $((3 * SLOW)) --listen 1)
expect_match "b: repeated query (same socket, same ID, 3 sends) answered" \
    " rcode=NOERROR .* data=$(expect_a $NAME | sed 's/\./\\./g') " "$out"
expect_eq "b: exactly one reply within 1 s of the answer" 1 "$(echo "$out" | field replies)"
expect_eq "b: the upstream saw exactly 1 query for the name" 1 \
    "$(fk_count slow "^udp coalesce-repeat\\.example\\.com\\. A ")"
# The repeats are not counted as coalesced clients.
c2=$(metric stubborn_coalesced_total)
expect_eq "b: repeats do not count as coalesced" "${c1:-?}" "${c2:-?}"
stop_stubborn

# Two workers (the lib's default): each coalesces the queries its socket
# gets, so the upstream sees at most one query per worker.
start_stubborn --upstream "127.0.0.1:$FK_PORT_slow" \
    --upstream-timeout $((DELAY + 2000))
NAME=coalesce-workers.example.com
out=$(coal burst --port "$STUB_PORT" --name $NAME --n 20 --wait $((3 * SLOW)))
expect_eq "a, 2 workers: 20 NOERROR replies" 20 "$(echo "$out" | grep -c " rcode=NOERROR .* data=$(expect_a $NAME) ")"
n=$(fk_count slow "^udp coalesce-workers\\.example\\.com\\. A ")
check "a, 2 workers: at most 2 upstream queries (got $n)" test "$n" -ge 1 -a "$n" -le 2
stop_stubborn

# --- c. --max-waiters 5 -----------------------------------------------------
MET_PORT=$(pick_port)
start_stubborn --workers 1 --upstream "127.0.0.1:$FK_PORT_slow" \
    --upstream-timeout $((DELAY + 2000)) --max-waiters 5 \
    --metrics "127.0.0.1:$MET_PORT"
NAME=coalesce-capped.example.com
A=$(expect_a $NAME)
out=$(coal burst --port "$STUB_PORT" --name $NAME --n 10 --wait $((3 * SLOW)))
expect_eq "c: 5 of 10 clients get the answer" 5 "$(echo "$out" | grep -c " rcode=NOERROR .* data=$A ")"
expect_eq "c: 5 of 10 clients get SERVFAIL with EDE 0" 5 \
    "$(echo "$out" | grep -c ' rcode=SERVFAIL ede=0 ')"
expect_eq "c: the EDE text says why" "too_many_queries_in_flight" \
    "$(echo "$out" | grep ' rcode=SERVFAIL ' | field text | sort -u | tr '\n' ' ' | sed 's/ $//')"
slowest=$(echo "$out" | grep ' rcode=SERVFAIL ' | field ms | sort -n | tail -n1)
check "c: the refused clients are answered at once (slowest ${slowest:-?} ms < $FAST ms)" \
    test "${slowest:-99999}" -lt "$FAST"
fastest=$(echo "$out" | grep ' rcode=NOERROR ' | field ms | sort -n | head -n1)
check "c: the waiters got the upstream's answer (after ${fastest:-?} ms >= $((DELAY - 50)))" \
    test "${fastest:-0}" -ge $((DELAY - 50))
expect_eq "c: the upstream saw exactly 1 query for the name" 1 \
    "$(fk_count slow "^udp coalesce-capped\\.example\\.com\\. A ")"
v=$(metric stubborn_coalesced_total)
expect_eq "c: stubborn_coalesced_total counts the 4 that joined" 4 "${v:-?}"
out=$(q $NAME A)
expect_match "c: the name is cached afterwards" "IN[[:space:]]+A[[:space:]]+$(echo "$A" | sed 's/\./\\./g')" "$out"
stop_stubborn

# --- d. 0x20 ----------------------------------------------------------------
MET_PORT=$(pick_port)
start_stubborn --upstream "127.0.0.1:$FK_PORT_up2" --upstream-0x20 yes \
    --metrics "127.0.0.1:$MET_PORT"
good=0
for i in 1 2 3 4 5; do
	out=$(q "randomcaseletters$i.example.com" A)
	echo "$out" | grep -Eq "IN[[:space:]]+A[[:space:]]+$(expect_a "randomcaseletters$i.example.com" | sed 's/\./\\./g')\$" &&
	    good=$((good + 1))
done
expect_eq "d: 0x20 on, normal upstream: 5 names answered" 5 "$good"
sentnames=$(grep -Ei '^udp randomcaseletters[1-5]\.example\.com\. A ' "$FK_LOG_up2" | awk '{ print $2 }')
expect_eq "d: the upstream was asked each of the 5 names once" 5 "$(echo "$sentnames" | grep -c .)"
check "d: the names went upstream in mixed case ($(echo $sentnames))" \
    sh -c 'printf "%s" "$1" | grep -q "[A-Z]" && printf "%s" "$1" | grep -q "[a-z]"' _ "$sentnames"
v=$(metric stubborn_upstream_mismatched_total)
expect_eq "d: exact echoes are not mismatches" 0 "${v:-?}"
stop_stubborn

fk_ctl up1 "mode lowercase" >/dev/null
expect_eq "d: fakeup knows the lowercase mode" lowercase "$(fk_ctl up1 mode)"
MET_PORT=$(pick_port)
start_stubborn --upstream "127.0.0.1:$FK_PORT_up1" --upstream "127.0.0.1:$FK_PORT_up2" \
    --upstream-0x20 yes --policy sequential --upstream-timeout $((300 * SLOW)) \
    --metrics "127.0.0.1:$MET_PORT"
NAME=LowerCaseUpstream.Example.COM
out=$(q $NAME A)
expect_eq "d: 0x20 on, upstream 1 lower-cases: client still gets NOERROR" NOERROR "$(echo "$out" | dig_status)"
expect_match "d: right A record, in the client's case" \
    "^LowerCaseUpstream\\.Example\\.COM\\.[[:space:]]+[0-9]+[[:space:]]+IN[[:space:]]+A[[:space:]]+$(expect_a $NAME | sed 's/\./\\./g')\$" "$out"
expect_eq "d: upstream 1 was asked first, upstream 2 answered" "1 1" \
    "$(fk_count up1 '^udp lowercaseupstream\.example\.com\. A ') $(fk_count up2 '^udp lowercaseupstream\.example\.com\. A ')"
v=$(metric stubborn_upstream_mismatched_total)
check "d: stubborn_upstream_mismatched_total > 0 (got '${v:-}')" test "${v:-0}" -gt 0
stop_stubborn

MET_PORT=$(pick_port)
start_stubborn --upstream "127.0.0.1:$FK_PORT_up1" --upstream-0x20 no \
    --metrics "127.0.0.1:$MET_PORT"
NAME=LowerCaseAccepted.Example.COM
out=$(q $NAME A)
expect_eq "d: 0x20 off, lower-casing upstream: NOERROR" NOERROR "$(echo "$out" | dig_status)"
expect_match "d: 0x20 off: right A record, in the client's case" \
    "^LowerCaseAccepted\\.Example\\.COM\\.[[:space:]]+[0-9]+[[:space:]]+IN[[:space:]]+A[[:space:]]+$(expect_a $NAME | sed 's/\./\\./g')\$" "$out"
expect_eq "d: 0x20 off: upstream 1 asked once" 1 \
    "$(fk_count up1 '^udp lowercaseaccepted\.example\.com\. A ')"
v=$(metric stubborn_upstream_mismatched_total)
expect_eq "d: 0x20 off: no mismatches" 0 "${v:-?}"
stop_stubborn
fk_ctl up1 "mode normal" >/dev/null

t_done
