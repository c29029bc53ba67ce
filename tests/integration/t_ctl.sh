#!/bin/bash
# stubborn-ctl against a running stubborn, black-box (issue 14).  One
# stubborn with a control socket, fakeup A answering and fakeup S silent
# (a forward-zone silent.test goes to it):
#   a. flush one name: the next query for it goes upstream, the other cached
#      names stay cached
#   b. flush-zone removes exactly the names at or below the zone
#   c. dump lists a cached name with its record in presentation format, and
#      a held failure as held
#   d. upstreams shows the silent server's circuit open, with its reason
#   e. reload: a good file loads (-c CONFIG finds the socket); a broken one
#      prints file:line, exits 1, and the daemon keeps serving
#   f. permissions: a user neither root nor stubborn's user nor in its group
#      cannot connect (exit 3); with the file mode opened up, the daemon
#      refuses it itself (exit 1); a member of the group by a supplementary
#      group is admitted
#   g. --json output parses; stats prints counters; log-level works; usage
#      errors exit 2; no daemon exits 3
#   h. malformed and oversized requests get an error, are logged, and the
#      daemon keeps serving; a control client that sends nothing blocks
#      neither queries nor other control clients
#   i. stop: exit 0, and the daemon exits 0
. "$(dirname "$0")/lib.sh"

CTL_BIN="$BUILD/stubborn-ctl"
SOCK="$T_TMP/ctl.sock"
TAG=c$$
ctl() { "$CTL_BIN" -s "$SOCK" "$@"; }
# run_ctl ARGS...: sets OUT, ERR and RC.
run_ctl() {
	OUT=$(ctl "$@" 2>"$T_TMP/ctl.err")
	RC=$?
	ERR=$(cat "$T_TMP/ctl.err")
}
# upstream queries fakeup A saw for exactly this name (type A)
seen() { fk_count A "^[a-z]+ ${1//./\\.}\. A "; }
# raw REQUEST: sends bytes (python escapes) without the client's checks,
# prints the daemon's answer.
raw() {
	python3 -c 'import socket, sys
s = socket.socket(socket.AF_UNIX); s.settimeout(5); s.connect(sys.argv[1])
s.sendall(eval(sys.argv[2]))
out = b""
try:
    while True:
        b = s.recv(4096)
        if not b: break
        out += b
except ConnectionResetError:  # the daemon closed with our bytes unread
    pass
print(out.decode(errors="replace"), end="")' "$SOCK" "$1"
}
json_ok() { python3 -c 'import json, sys; d = json.loads(sys.stdin.read()); sys.exit(0 if d.get("ok") is True else 1)'; }

start_fakeup A || exit 1
start_fakeup S --mode drop || exit 1
CONF="$T_TMP/ctl.conf"
cat >"$CONF" <<EOF
upstream = 127.0.0.1:$FK_PORT_A
forward-zone = silent.test 127.0.0.1:$FK_PORT_S
control-socket = $SOCK
upstream-timeout = 200
circuit-failures = 2
EOF
cp "$CONF" "$T_TMP/ctl.conf.good"
start_stubborn --config "$CONF" || { not_ok "stubborn starts"; t_done; }
check "the control socket exists, mode 0660" test "$(stat -c %a "$SOCK" 2>/dev/null)" = 660

# --- a. flush one name --------------------------------------------------------
for i in 1 2 3; do IP[i]=$(q "f$i-$TAG.example.com" A +short); done
expect_eq "a: three names cached, one upstream query each" "1 1 1" \
    "$(seen "f1-$TAG.example.com") $(seen "f2-$TAG.example.com") $(seen "f3-$TAG.example.com")"
run_ctl flush "f2-$TAG.example.com"
expect_eq "a: flush NAME: exit 0, says how many went" "0 ok 1 entry removed" "$RC $OUT"
for i in 1 2 3; do q "f$i-$TAG.example.com" A +short >/dev/null; done
expect_eq "a: the flushed name went upstream again, the others stayed cached" "1 2 1" \
    "$(seen "f1-$TAG.example.com") $(seen "f2-$TAG.example.com") $(seen "f3-$TAG.example.com")"
run_ctl flush "f3-$TAG.example.com" AAAA
expect_eq "a: flush NAME TYPE leaves the other types" "0 ok 0 entries removed" "$RC $OUT"

# --- b. flush-zone ------------------------------------------------------------
Z="z$TAG.example.com"
IN="$Z a.$Z b.c.$Z"
OUTSIDE="a$Z o$TAG.example.com"
for n in $IN $OUTSIDE; do q "$n" A >/dev/null; done
run_ctl flush-zone "$Z"
expect_eq "b: flush-zone: the three names at or below the zone" "0 ok 3 entries removed" "$RC $OUT"
for n in $IN $OUTSIDE; do q "$n" A >/dev/null; done
got=""
for n in $IN $OUTSIDE; do got="$got $(seen "$n")"; done
expect_eq "b: ... asked upstream again: the zone's names only (not a$Z)" " 2 2 2 1 1" "$got"

# --- c. dump ----------------------------------------------------------------------
run_ctl dump "f1-$TAG.example.com"
expect_eq "c: dump ZONE: exit 0" 0 "$RC"
expect_match "c: dump shows the entry, fresh, with its TTL left" \
    "^f1-$TAG\.example\.com\. A NOERROR fresh ttl-left=[0-9]+" "$OUT"
# Upstream answers keep the letter case stubborn asked in (0x20).
low=$(printf '%s\n' "$OUT" | tr '[:upper:]' '[:lower:]')
TAB=$(printf '\t')
expect_match "c: ... and its record in presentation format" \
    "^${TAB}f1-$TAG\.example\.com\.${TAB}[0-9]+${TAB}in${TAB}a${TAB}${IP[1]//./\\.}\$" "$low"
expect_match "c: ... and counts it" "# 1 entry" "$OUT"

# --- d. upstreams: a silent server ---------------------------------------------------
# Each query waits out upstream-timeout (200 ms) and fails; two in a row
# open the circuit.
for i in 1 2 3 4 5; do
	q "s$i.silent.test" A +time=3 >/dev/null
	ctl upstreams | grep -q "^  127.0.0.1:$FK_PORT_S udp circuit=open" && break
done
run_ctl upstreams
expect_eq "d: upstreams: exit 0" 0 "$RC"
expect_match "d: the silent server's circuit is open, the last failure a timeout" \
    "^  127\.0\.0\.1:$FK_PORT_S udp circuit=open srtt=[0-9.]+ms rttvar=[0-9.]+ms rto=[0-9]+ms outstanding=[0-9]+ rate-left=[0-9]+ budget-left=[0-9]+ .*last-success=never last-failure=[0-9.]+s-ago reason=timeout\$" \
    "$(printf '%s\n' "$OUT" | grep -A1 '^zone silent\.test\.$' | tail -n1)"
expect_match "d: the answering one's is closed" \
    "^  127\.0\.0\.1:$FK_PORT_A udp circuit=closed .*last-success=[0-9.]+s-ago" \
    "$(printf '%s\n' "$OUT" | grep -A1 '^zone \.$' | tail -n1)"
run_ctl dump silent.test
expect_match "d: dump shows the failed name held" \
    "s1\.silent\.test\. A SERVFAIL failure held=failure hold-left=[0-9]+" "$OUT"

# --- e. reload ----------------------------------------------------------------------
OUT=$("$CTL_BIN" -c "$CONF" reload 2>&1)
RC=$?
expect_eq "e: reload of a good file (socket from -c CONFIG): exit 0" "0 ok reloaded, generation 2" "$RC $OUT"
printf 'this is not a setting\n' >>"$CONF"
run_ctl reload
expect_eq "e: reload of a broken file: exit 1" 1 "$RC"
expect_match "e: ... and the error names the file and line" \
    "^error: reload failed.*$(basename "$CONF"):6: missing '='" "$ERR"
expect_eq "e: the daemon still answers" NOERROR "$(q "f1-$TAG.example.com" A | dig_status)"
cp "$T_TMP/ctl.conf.good" "$CONF"

# --- f. permissions -------------------------------------------------------------------
DUID=$(ps -o uid= -p "$STUB_PID" | tr -d ' ')
DGID=$(ps -o gid= -p "$STUB_PID" | tr -d ' ')
OTHER=4242
[ "$DUID" = "$OTHER" ] && OTHER=4243
if [ "$(id -u)" = 0 ] && command -v setpriv >/dev/null; then
	as_other() { setpriv --reuid="$OTHER" --regid="$OTHER" --clear-groups "$@"; }
	OUT=$(as_other "$CTL_BIN" -s "$SOCK" stats 2>&1)
	RC=$?
	expect_eq "f: another user cannot connect: exit 3" 3 "$RC"
	expect_match "f: ... and is told why" "Permission denied" "$OUT"
	chmod 0666 "$SOCK"
	OUT=$(as_other "$CTL_BIN" -s "$SOCK" stats 2>&1)
	RC=$?
	chmod 0660 "$SOCK"
	expect_eq "f: with the file mode opened, the daemon refuses it: exit 1" \
	    "1 error: permission denied (root, the daemon's user or its group only)" "$RC $OUT"
	check "f: ... and logs it" grep -q 'control connection refused: credentials' "$STUB_LOG"
	OUT=$(setpriv --reuid="$OTHER" --regid="$OTHER" --groups="$DGID" \
	    "$CTL_BIN" -s "$SOCK" flush "nothing-$TAG.example" 2>&1)
	RC=$?
	expect_eq "f: a member of the daemon's group (supplementary) is admitted" \
	    "0 ok 0 entries removed" "$RC $OUT"
else
	echo "SKIP - $T_NAME: f: needs root and setpriv"
fi

# --- g. json, stats, log-level, usage ---------------------------------------------
for c in "dump" "upstreams" "stats" "flush nothing-$TAG.example" "log-level info" "reload"; do
	# shellcheck disable=SC2086 # the command's words
	if ctl --json $c | json_ok; then ok "g: --json $c: one JSON object, ok true"; else
		not_ok "g: --json $c: one JSON object, ok true"; fi
done
OUT=$(ctl --json flush a..b)
RC=$?
expect_eq "g: --json error: exit 1, ok false" "1 False" \
    "$RC $(printf '%s' "$OUT" | python3 -c 'import json, sys; print(json.load(sys.stdin)["ok"])')"
OUT=$(ctl --json dump "f1-$TAG.example.com" | python3 -c 'import json, sys
d = json.load(sys.stdin)
e = d["entries"][0]
print(d["count"], e["name"].lower(), e["type"], e["state"], e["records"][0].split("\t")[3])')
expect_eq "g: --json dump: the entry and its record" "1 f1-$TAG.example.com. A fresh A" "$OUT"
OUT=$(ctl --json upstreams | python3 -c 'import json, sys
for s in json.load(sys.stdin)["servers"]:
    print(s["zone"], s["circuit"], s["last_failure"] or "-")')
expect_eq "g: --json upstreams" "$(printf '. closed -\nsilent.test. open timeout')" "$OUT"
run_ctl stats
expect_eq "g: stats: exit 0" 0 "$RC"
expect_match "g: stats prints the counters of /metrics" \
    'stubborn_queries_total\{transport="udp"\} [1-9][0-9]*' "$OUT"
expect_match "g: ... upstream ones too" 'stubborn_upstream_timeouts_total [1-9]' "$OUT"
run_ctl log-level debug
expect_eq "g: log-level debug" "0 ok log-level debug until the next reload" "$RC $OUT"
q "dbg-$TAG.example.com" A >/dev/null
check "g: ... debug lines appear" grep -q 'level=debug' "$STUB_LOG"
run_ctl log-level info
before=$(grep -c 'level=debug' "$STUB_LOG")
q "dbg2-$TAG.example.com" A >/dev/null
expect_eq "g: log-level info: no more debug lines" "0 $before" "$RC $(grep -c 'level=debug' "$STUB_LOG")"
run_ctl log-level loud
expect_eq "g: log-level with a bad level: exit 1" 1 "$RC"
run_ctl frobnicate
expect_eq "g: an unknown command: exit 2" 2 "$RC"
run_ctl handover 1
expect_eq "g: handover is not offered: exit 2" 2 "$RC"
run_ctl flush
expect_eq "g: a missing argument: exit 2" 2 "$RC"
OUT=$("$CTL_BIN" -s "$T_TMP/none.sock" stats 2>&1)
expect_eq "g: no daemon there: exit 3" 3 "$?"
expect_match "g: ... and says so" "cannot connect to $T_TMP/none.sock" "$OUT"

# --- h. malformed, oversized, slow ---------------------------------------------------
expect_match "h: a request with control bytes gets an error" \
    "^error: control byte 0x01" "$(raw 'b"flush \x01\x02garbage\n"')"
expect_match "h: an unknown command gets an error" \
    "^error: unknown command" "$(raw 'b"please flush everything\n"')"
expect_match "h: an oversized request (no newline) gets an error" \
    "^error: request too long \(at most 1024 bytes\)" "$(raw 'b"x" * 5000')"
expect_match "h: an oversized line gets an error" \
    "^error: request too long" "$(raw 'b"flush " + b"a" * 2000 + b"\n"')"
check "h: refusals are logged" grep -q 'control request refused" error="request too long' "$STUB_LOG"
# A client that connects and says nothing, for up to 3 s (the daemon cuts
# it off after 5): queries and other control clients go on meanwhile.
python3 -c 'import socket, sys, time
s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); time.sleep(3)' "$SOCK" &
SILENT=$!
T_PIDS="$T_PIDS $SILENT"
t0=$(date +%s%N)
st=$(q "h1-$TAG.example.com" A | dig_status)
run_ctl flush "h1-$TAG.example.com"
el=$((($(date +%s%N) - t0) / 1000000))
expect_eq "h: with a silent control client: a query and a flush answered" "NOERROR 0" "$st $RC"
check "h: ... at once ($el ms)" test "$el" -lt $((1500 * SLOW))
check "h: the daemon still runs" kill -0 "$STUB_PID"
kill "$SILENT" 2>/dev/null

# --- i. stop ------------------------------------------------------------------------------
run_ctl stop
expect_eq "i: stop: exit 0" "0 ok draining and exiting" "$RC $OUT"
wait_pid "$STUB_PID" $((10 * SLOW))
expect_eq "i: the daemon exits 0" 0 "$WAIT_RC"
check "i: the control socket is gone" test ! -e "$SOCK"
if [ -n "$VALGRIND" ]; then
	if [ -s "$T_TMP/valgrind.$STUB_PORT.log" ]; then
		not_ok "valgrind clean"; cat "$T_TMP/valgrind.$STUB_PORT.log"
	else
		ok "valgrind clean"
	fi
fi

t_done
