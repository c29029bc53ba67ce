#!/bin/bash
# Upstream faults as a client sees them through stubborn: failover past every
# fakeup fault mode, SERVFAIL + EDE when all fail, TC -> TCP, FORMERR -> no
# EDNS, big answers, ICMP-unreachable upstreams, the mismatch counter.
. "$(dirname "$0")/lib.sh"
DNSRAW="python3 $(dirname "$0")/dnsraw.py"

TMO=300                      # --upstream-timeout in ms
now_ms() { echo $(($(date +%s%N) / 1000000)); }

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

# metric NAME: the value of one counter from stubborn's /metrics.
metric() {
	local body
	if command -v curl >/dev/null 2>&1; then
		body=$(curl -s --noproxy '*' -m $((3 * SLOW)) "http://127.0.0.1:$MET_PORT/metrics")
	else
		exec 8<>"/dev/tcp/127.0.0.1/$MET_PORT" || return 1
		printf 'GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n' >&8
		body=$(timeout $((3 * SLOW)) cat <&8)
		exec 8<&-
	fi
	printf '%s\n' "$body" | sed -n "s/^$1 \([0-9]*\).*/\1/p" | head -n1
}

start_fakeup up1
start_fakeup up2
start_fakeup up3

# --- 1. one faulty upstream, the other fine: the client never notices -------
# A fresh stubborn per mode, with the sequential policy, so upstream 1 is
# surely asked first (the default policy prefers the fastest server).
for mode in drop servfail refused wrongid wrongquestion garbage close wrongport; do
	fk_ctl up1 "mode $mode" >/dev/null
	MET_PORT=$(pick_port)
	start_stubborn --upstream "127.0.0.1:$FK_PORT_up1" \
	    --upstream "127.0.0.1:$FK_PORT_up2" --upstream-timeout $TMO \
	    --metrics "127.0.0.1:$MET_PORT" --policy sequential
	name="F-$mode.Example.COM"
	out=$(q "$name" A)
	expect_eq "$mode upstream 1: client gets NOERROR" NOERROR "$(echo "$out" | dig_status)"
	expect_match "$mode upstream 1: right A record (from upstream 2)" \
	    "IN[[:space:]]+A[[:space:]]+$(expect_a "$name" | sed 's/\./\\./g')\$" "$out"
	expect_eq "$mode upstream 1: upstream 1 was asked first" 1 \
	    "$(fk_count up1 "^udp f-$mode\\.example\\.com\\. A ")"
	expect_eq "$mode upstream 1: upstream 2 answered it" 1 \
	    "$(fk_count up2 "^udp f-$mode\\.example\\.com\\. A ")"
	case $mode in
	wrongid | wrongquestion | garbage)
		v=$(metric stubborn_upstream_mismatched_total)
		check "$mode: stubborn_upstream_mismatched_total > 0 (got '$v')" \
		    test "${v:-0}" -gt 0 ;;
	esac
	# The answer is cached: no second trip through the fault.
	out=$(q "$name" A)
	expect_eq "$mode upstream 1: repeat served from cache" "NOERROR 1 1" \
	    "$(echo "$out" | dig_status) $(fk_count up1 "f-$mode\\.example\\.com\\. A ") $(fk_count up2 "f-$mode\\.example\\.com\\. A ")"
	stop_stubborn
	fk_ctl up1 "mode normal" >/dev/null
done

# --- 2. every upstream fails --------------------------------------------------
MET_PORT=$(pick_port)
start_stubborn --upstream "127.0.0.1:$FK_PORT_up1" \
    --upstream "127.0.0.1:$FK_PORT_up2" --upstream "127.0.0.1:$FK_PORT_up3" \
    --upstream-timeout $TMO --metrics "127.0.0.1:$MET_PORT"
for u in up1 up2 up3; do fk_ctl $u "mode drop" >/dev/null; done
t0=$(now_ms)
out=$(q alldrop.example.com A +edns=0)
t1=$(now_ms)
el=$((t1 - t0))
expect_eq "all upstreams drop: SERVFAIL" SERVFAIL "$(echo "$out" | dig_status)"
expect_match "all upstreams drop: EDE 22 (No Reachable Authority)" 'EDE: 22' "$out"
# Hedging asks the next server at the RTO, so the last timeout comes after
# one to three upstream timeouts, never later.
check "all upstreams drop: answered after ${TMO}..3 x ${TMO} ms (took ${el} ms)" \
    test "$el" -ge $((TMO - 50)) -a "$el" -le $((3 * TMO + 1500 * SLOW))
expect_eq "all upstreams drop: each upstream asked" "1 1 1" \
    "$(fk_count up1 alldrop) $(fk_count up2 alldrop) $(fk_count up3 alldrop)"
out=$(q alldrop.example.com A +noedns)
check "all upstreams drop, query without EDNS: SERVFAIL without OPT" \
    sh -c '! printf "%s" "$1" | grep -q "OPT PSEUDOSECTION" && printf "%s" "$1" | grep -q "status: SERVFAIL"' _ "$out"
v=$(metric stubborn_upstream_timeouts_total)
check "stubborn_upstream_timeouts_total >= 3 (got '$v')" test "${v:-0}" -ge 3

for u in up1 up2 up3; do fk_ctl $u "mode servfail" >/dev/null; done
t0=$(now_ms)
out=$(q allsf.example.com A +edns=0)
el=$(($(now_ms) - t0))
expect_eq "all upstreams SERVFAIL: SERVFAIL" SERVFAIL "$(echo "$out" | dig_status)"
expect_match "all upstreams SERVFAIL: an EDE explains it" 'EDE: (22|23)' "$out"
check "all upstreams SERVFAIL: no waiting for timeouts (took ${el} ms)" \
    test "$el" -lt $((3 * TMO))
for u in up1 up2 up3; do fk_ctl $u "mode refused" >/dev/null; done
out=$(q allref.example.com A)
expect_eq "all upstreams REFUSED: SERVFAIL" SERVFAIL "$(echo "$out" | dig_status)"
for u in up1 up2 up3; do fk_ctl $u "mode normal" >/dev/null; done
# RFC 9520 allows a failure cache of >= 1 s: a short grace, then it must work.
out=$(q allsf.example.com A)
st=$(echo "$out" | dig_status)
if [ "$st" != NOERROR ]; then sleep 1.2; out=$(q allsf.example.com A); st=$(echo "$out" | dig_status); fi
expect_eq "SERVFAIL not cached: the name resolves once upstreams recover" NOERROR "$st"
expect_match "SERVFAIL not cached: right data" "$(expect_a allsf.example.com | sed 's/\./\\./g')" "$out"
out=$(q alldrop.example.com A)
expect_eq "timeout SERVFAIL not cached either" NOERROR "$(echo "$out" | dig_status)"
stop_stubborn

# --- 3. one upstream: TC -> TCP, FORMERR -> no EDNS, big answers -------------
MET_PORT=$(pick_port)
start_stubborn --upstream "127.0.0.1:$FK_PORT_up1" --upstream-timeout $TMO \
    --metrics "127.0.0.1:$MET_PORT"
fk_ctl up1 "mode truncate" >/dev/null
out=$(q trunc.example.com A)
expect_eq "truncate: client gets NOERROR" NOERROR "$(echo "$out" | dig_status)"
expect_match "truncate: full answer" "IN[[:space:]]+A[[:space:]]+$(expect_a trunc.example.com | sed 's/\./\\./g')" "$out"
check "truncate: client reply not truncated" sh -c '! printf "%s" "$1" | grep -q "flags:.* tc"' _ "$out"
expect_eq "truncate: stubborn asked over UDP, then TCP" "1 1" \
    "$(fk_count up1 '^udp trunc\.example\.com\. A ') $(fk_count up1 '^tcp trunc\.example\.com\. A ')"
v=$(metric stubborn_upstream_tcp_fallbacks_total)
check "stubborn_upstream_tcp_fallbacks_total > 0 (got '$v')" test "${v:-0}" -gt 0

fk_ctl up1 "mode formerr-edns" >/dev/null
out=$(q oldserver.example.com A +edns=0)
expect_eq "formerr-edns: client gets NOERROR" NOERROR "$(echo "$out" | dig_status)"
expect_match "formerr-edns: right data" "$(expect_a oldserver.example.com | sed 's/\./\\./g')" "$out"
expect_match "formerr-edns: client still gets its OPT" 'EDNS: version: 0' "$out"
expect_eq "formerr-edns: upstream asked twice (with, then without EDNS)" 2 \
    "$(fk_count up1 '^udp oldserver\.example\.com\. A ')"
v=$(metric stubborn_upstream_edns_fallbacks_total)
check "stubborn_upstream_edns_fallbacks_total > 0 (got '$v')" test "${v:-0}" -gt 0
fk_ctl up1 "mode normal" >/dev/null

out=$(q big.example.com TXT +noedns +ignore)
expect_match "big TXT, UDP without EDNS: TC=1" 'flags: qr tc rd ra;' "$out"
expect_match "big TXT, UDP without EDNS: no records" 'ANSWER: 0,' "$out"
out=$(q big.example.com TXT +bufsize=1232 +ignore)
expect_match "big TXT, UDP with EDNS 1232: TC=1" 'flags: qr tc rd ra;' "$out"
out=$(q big.example.com TXT +bufsize=4096 +ignore)
expect_match "big TXT, UDP with EDNS 4096: still TC=1 (capped at 1232)" 'flags: qr tc rd ra;' "$out"
out=$(q big.example.com TXT +tcp)
expect_eq "big TXT over TCP: NOERROR" NOERROR "$(echo "$out" | dig_status)"
expect_eq "big TXT over TCP: all 11 TXT records" 11 \
    "$(echo "$out" | grep -Ec '^big\.example\.com\.[[:space:]]+[0-9]+[[:space:]]+IN[[:space:]]+TXT')"
if command -v kdig >/dev/null 2>&1; then
	out=$(kdig @127.0.0.1 -p "$STUB_PORT" +tcp +retry=0 +timeout=$((4 * SLOW)) big.example.com TXT 2>&1)
	expect_eq "big TXT over TCP (kdig): 11 TXT records" 11 \
	    "$(echo "$out" | grep -Ec '^big\.example\.com\.[[:space:]]+[0-9]+[[:space:]]+IN[[:space:]]+TXT')"
fi
out=$(q big.example.com A +noedns +ignore)
expect_match "big A (~680 B), UDP without EDNS: TC=1" 'flags: qr tc rd ra;' "$out"
out=$(q big.example.com A +bufsize=1232)
expect_eq "big A, UDP with EDNS 1232: all 40 records" 40 \
    "$(echo "$out" | grep -Ec '^big\.example\.com\.[[:space:]]+[0-9]+[[:space:]]+IN[[:space:]]+A')"
expect_eq "big TXT asked upstream once (then cached)" 1 "$(fk_count up1 '^tcp big\.example\.com\. TXT ')"
stop_stubborn

# --- 4. an upstream port nobody listens on: ICMP unreachable, fast failover ---
DEAD=$(pick_port)
SLOWTMO=$((2000 * SLOW))
start_stubborn --upstream "127.0.0.1:$DEAD" --upstream "127.0.0.1:$FK_PORT_up2" \
    --upstream-timeout $SLOWTMO
t0=$(now_ms)
out=$(q unreach.example.com A)
el=$(($(now_ms) - t0))
expect_eq "unreachable first upstream: NOERROR from the second" NOERROR "$(echo "$out" | dig_status)"
check "unreachable first upstream: failover well under the ${SLOWTMO} ms timeout (took ${el} ms)" \
    test "$el" -lt $((SLOWTMO / 2))
expect_eq "unreachable first upstream: upstream 2 answered" 1 "$(fk_count up2 '^udp unreach\.example\.com\. A ')"
stop_stubborn

start_stubborn --upstream "127.0.0.1:$DEAD" --upstream-timeout $SLOWTMO
t0=$(now_ms)
out=$(q unreach2.example.com A +edns=0)
el=$(($(now_ms) - t0))
expect_eq "only upstream unreachable: SERVFAIL" SERVFAIL "$(echo "$out" | dig_status)"
expect_match "only upstream unreachable: EDE 23 (Network Error)" 'EDE: 23' "$out"
check "only upstream unreachable: fast (took ${el} ms)" test "$el" -lt $((SLOWTMO / 2))
stop_stubborn

t_done
