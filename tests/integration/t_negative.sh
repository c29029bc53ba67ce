#!/bin/bash
# Negative caching (RFC 2308), TTL countdown and floors, SOA-less negatives,
# zone transfers refused, ANY forwarded uncached.
. "$(dirname "$0")/lib.sh"
DNSRAW="python3 $(dirname "$0")/dnsraw.py"

# raw PORT dnsraw-args...: one query with dnsraw, its one-line summary.
raw() { local p=$1; shift; $DNSRAW --port "$p" --timeout $((3 * SLOW)) "$@"; }
# fld KEY LINE: one key=value field of a dnsraw line.
fld() { printf '%s\n' "$2" | tr ' ' '\n' | sed -n "s/^$1=//p" | head -n1; }
# rc LINE: the rcode of a dnsraw line, or the whole line ("timeout", ...).
rc() { local v; v=$(fld rcode "$1"); echo "${v:-$1}"; }
# max_of "a,b,c": the largest number of a dnsraw list ("-" is empty: -1).
max_of() { printf '%s\n' "$1" | tr ',' '\n' | grep -E '^[0-9]+$' | sort -n | tail -n1 | grep . || echo -1; }
min_of() { printf '%s\n' "$1" | tr ',' '\n' | grep -E '^[0-9]+$' | sort -n | head -n1 | grep . || echo -1; }
now_ms() { echo $(($(date +%s%N) / 1000000)); }
# sleep_until MS: sleeps until now_ms reaches MS (at once if it has).
sleep_until() {
	local d=$(($1 - $(now_ms)))
	[ "$d" -gt 0 ] && sleep "$(printf '%d.%03d' $((d / 1000)) $((d % 1000)))"
	return 0
}
# use_stub N: make instance N the one q/stop_stubborn talk to.
use_stub() { eval "STUB_PORT=\$S_PORT_$1 STUB_PID=\$S_PID_$1"; }
save_stub() { eval "S_PORT_$1=\$STUB_PORT S_PID_$1=\$STUB_PID"; }

start_fakeup up --neg-ttl 60            # SOA TTL 300, MINIMUM 60
start_fakeup sh --neg-ttl 2             # SOA TTL 300, MINIMUM 2
start_stubborn --upstream "127.0.0.1:$FK_PORT_up"; save_stub 1
start_stubborn --upstream "127.0.0.1:$FK_PORT_up" --max-negative-ttl 5; save_stub 2
start_stubborn --upstream "127.0.0.1:$FK_PORT_sh"; save_stub 3
start_stubborn --upstream "127.0.0.1:$FK_PORT_up" --min-ttl 10; save_stub 4

# --- t = 0 ------------------------------------------------------------------
use_stub 1
# NXDOMAIN: cached, TTL <= min(SOA TTL 300, MINIMUM 60) on every answer.
r1=$(raw "$S_PORT_1" --name nx-one.example.com --type A --edns)
expect_eq "NXDOMAIN forwarded" NXDOMAIN "$(rc "$r1")"
expect_eq "NXDOMAIN carries the SOA" 1 "$(fld nscount "$r1")"
t=$(max_of "$(fld nsttls "$r1")")
check "NXDOMAIN, first answer: SOA TTL <= min(SOA TTL, MINIMUM) = 60 (got $t)" \
    test "$t" -ge 0 -a "$t" -le 60
r2=$(raw "$S_PORT_1" --name nx-one.example.com --type A --edns)
expect_eq "NXDOMAIN cached: second query answered" NXDOMAIN "$(rc "$r2")"
expect_eq "NXDOMAIN cached: upstream saw one query" 1 "$(fk_count up '^udp nx-one\.example\.com\. A ')"
t=$(max_of "$(fld nsttls "$r2")")
check "NXDOMAIN from cache: SOA TTL <= 60 (got $t)" test "$t" -ge 0 -a "$t" -le 60
expect_eq "NXDOMAIN from cache: SOA kept" 1 "$(fld nscount "$r2")"
out=$(q NX-One.Example.COM A)
expect_match "NXDOMAIN from cache: other letter case hits and is echoed" \
    'status: NXDOMAIN' "$out"
expect_match "NXDOMAIN from cache: question echoed in the client's case" \
    '^;NX-One\.Example\.COM\.[[:space:]]+IN[[:space:]]+A' "$out"
expect_eq "NXDOMAIN from cache: still one upstream query" 1 "$(fk_count up '^udp nx-one\.example\.com\. A ')"

# NODATA: the same rules, per type.
r1=$(raw "$S_PORT_1" --name nodata.one.example --type AAAA)
expect_eq "NODATA forwarded: NOERROR" NOERROR "$(rc "$r1")"
expect_eq "NODATA: no answer, SOA in authority" "0 1" "$(fld ancount "$r1") $(fld nscount "$r1")"
t=$(max_of "$(fld nsttls "$r1")")
check "NODATA, first answer: SOA TTL <= 60 (got $t)" test "$t" -ge 0 -a "$t" -le 60
r2=$(raw "$S_PORT_1" --name nodata.one.example --type AAAA)
expect_eq "NODATA cached: upstream saw one query" 1 "$(fk_count up '^udp nodata\.one\.example\. AAAA ')"
t=$(max_of "$(fld nsttls "$r2")")
check "NODATA from cache: SOA TTL <= 60 (got $t)" test "$t" -ge 0 -a "$t" -le 60
r3=$(raw "$S_PORT_1" --name nodata.one.example --type TXT)
expect_eq "NODATA is per type: another type goes upstream" 1 "$(fk_count up '^udp nodata\.one\.example\. TXT ')"

# --max-negative-ttl 5 caps both kinds.
r1=$(raw "$S_PORT_2" --name nx-cap.example.com --type A)
t=$(max_of "$(fld nsttls "$r1")")
check "--max-negative-ttl 5, NXDOMAIN first answer: TTL <= 5 (got $t)" test "$t" -ge 0 -a "$t" -le 5
r1=$(raw "$S_PORT_2" --name nx-cap.example.com --type A)
t=$(max_of "$(fld nsttls "$r1")")
check "--max-negative-ttl 5, NXDOMAIN from cache: TTL <= 5 (got $t)" test "$t" -ge 0 -a "$t" -le 5
expect_eq "--max-negative-ttl 5: cached (one upstream query)" 1 "$(fk_count up '^udp nx-cap\.example\.com\. A ')"
r1=$(raw "$S_PORT_2" --name nodata.cap.example --type A)
r1=$(raw "$S_PORT_2" --name nodata.cap.example --type A)
t=$(max_of "$(fld nsttls "$r1")")
check "--max-negative-ttl 5, NODATA from cache: TTL <= 5 (got $t)" test "$t" -ge 0 -a "$t" -le 5

# Short negative TTL (MINIMUM 2): cached now, asked again after expiry.
raw "$S_PORT_3" --name nx-short.example.com --type A >/dev/null
r1=$(raw "$S_PORT_3" --name nx-short.example.com --type A)
t=$(max_of "$(fld nsttls "$r1")")
check "MINIMUM 2: NXDOMAIN TTL <= 2 (got $t)" test "$t" -ge 0 -a "$t" -le 2
raw "$S_PORT_3" --name nodata.short.example --type A >/dev/null
raw "$S_PORT_3" --name nodata.short.example --type A >/dev/null
expect_eq "MINIMUM 2: NXDOMAIN and NODATA cached (one upstream query each)" "1 1" \
    "$(fk_count sh '^udp nx-short\.example\.com\. A ') $(fk_count sh '^udp nodata\.short\.example\. A ')"

# Positive TTL 2: countdown and refetch; --min-ttl 10 raises it.
r1=$(raw "$S_PORT_1" --name ttl2.one.example --type A)
T0=$(now_ms)
expect_eq "ttl2 answer: TTL 2 as sent" 2 "$(max_of "$(fld ttls "$r1")")"
r1=$(raw "$S_PORT_4" --name ttl2.four.example --type A)
t=$(min_of "$(fld ttls "$r1")")
check "--min-ttl 10: ttl2 first answer shows TTL >= 10 (got $t)" test "$t" -ge 10
r1=$(raw "$S_PORT_4" --name ttl2.four.example --type A)
t=$(min_of "$(fld ttls "$r1")")
check "--min-ttl 10: ttl2 from cache shows 9..10 (got $t)" test "$t" -ge 9 -a "$t" -le 10

# --- t = 1.2 s ----------------------------------------------------------------
sleep_until $((T0 + 1200))
r1=$(raw "$S_PORT_1" --name ttl2.one.example --type A)
t=$(max_of "$(fld ttls "$r1")")
check "ttl2 after 1.2 s: served from cache with a lower TTL (got $t)" test "$t" -ge 0 -a "$t" -lt 2
expect_eq "ttl2 after 1.2 s: upstream not asked again" 1 "$(fk_count up '^udp ttl2\.one\.example\. A ')"

# --- t = 3.2 s ----------------------------------------------------------------
sleep_until $((T0 + 3200))
raw "$S_PORT_1" --name ttl2.one.example --type A >/dev/null
expect_eq "ttl2 after 3.2 s: expired, upstream asked again" 2 "$(fk_count up '^udp ttl2\.one\.example\. A ')"
r1=$(raw "$S_PORT_3" --name nx-short.example.com --type A)
expect_eq "MINIMUM 2, after 3.2 s: NXDOMAIN expired, upstream asked again" 2 \
    "$(fk_count sh '^udp nx-short\.example\.com\. A ')"
expect_eq "MINIMUM 2, after 3.2 s: still NXDOMAIN" NXDOMAIN "$(rc "$r1")"
raw "$S_PORT_3" --name nodata.short.example --type A >/dev/null
expect_eq "MINIMUM 2, after 3.2 s: NODATA expired, upstream asked again" 2 \
    "$(fk_count sh '^udp nodata\.short\.example\. A ')"
r1=$(raw "$S_PORT_4" --name ttl2.four.example --type A)
t=$(min_of "$(fld ttls "$r1")")
expect_eq "--min-ttl 10, after 3.2 s: ttl2 still cached" 1 "$(fk_count up '^udp ttl2\.four\.example\. A ')"
check "--min-ttl 10, after 3.2 s: TTL counted down to 4..8 (got $t)" test "$t" -ge 4 -a "$t" -le 8

# --- t = 5.5 s ----------------------------------------------------------------
sleep_until $((T0 + 5500))
raw "$S_PORT_2" --name nx-cap.example.com --type A >/dev/null
expect_eq "--max-negative-ttl 5, after 5.5 s: asked again" 2 "$(fk_count up '^udp nx-cap\.example\.com\. A ')"

# max-ttl (default 86400) caps every answer; TTL 0 is never cached.
r1=$(raw "$S_PORT_1" --name ttl700000.one.example --type A)
t=$(max_of "$(fld ttls "$r1")")
check "TTL 700000, first answer: capped at max-ttl 86400 (got $t)" test "$t" -le 86400
r1=$(raw "$S_PORT_1" --name ttl700000.one.example --type A)
t=$(max_of "$(fld ttls "$r1")")
check "TTL 700000, from cache: capped at max-ttl 86400 (got $t)" test "$t" -le 86400
raw "$S_PORT_1" --name ttl0.one.example --type A >/dev/null
r1=$(raw "$S_PORT_1" --name ttl0.one.example --type A)
expect_eq "TTL 0: answered with TTL 0" "NOERROR 0" "$(fld rcode "$r1") $(fld ttls "$r1")"
expect_eq "TTL 0: not cached (upstream saw both queries)" 2 "$(fk_count up '^udp ttl0\.one\.example\. A ')"

# --- zone transfers, ANY -------------------------------------------------------
use_stub 1
out=$(q example.com AXFR)
check "AXFR over TCP: refused (dig: 'Transfer failed' or REFUSED)" \
    sh -c 'printf "%s" "$1" | grep -Eqi "REFUSED|Transfer failed"' _ "$out"
r1=$(raw "$S_PORT_1" --name example.com --type AXFR --edns)
expect_eq "AXFR over UDP: REFUSED" REFUSED "$(rc "$r1")"
expect_eq "AXFR: EDE 21 (Not Supported)" 21 "$(fld ede "$r1")"
r1=$(raw "$S_PORT_1" --name example.com --type AXFR --tcp)
expect_eq "AXFR over TCP (raw): REFUSED" REFUSED "$(rc "$r1")"
r1=$(raw "$S_PORT_1" --name example.com --type IXFR)
expect_eq "IXFR: REFUSED" REFUSED "$(rc "$r1")"
expect_eq "zone transfers never reach the upstream" 0 "$(fk_count up 'XFR ')"

out=$(q any.one.example ANY)
expect_eq "ANY forwarded: NOERROR" NOERROR "$(echo "$out" | dig_status)"
out=$(q any.one.example ANY)
expect_eq "ANY not cached: both queries reached the upstream" 2 \
    "$(fk_count up '^udp any\.one\.example\. (ANY|TYPE255) ')"
out=$(q any.one.example A)
out=$(q any.one.example ANY)
expect_eq "ANY not answered from the A in cache" 3 \
    "$(fk_count up '^udp any\.one\.example\. (ANY|TYPE255) ')"

# --- SOA-less negative answers: never cached (RFC 2308 5) ---------------------
NS_PORT=$(pick_port)
$DNSRAW --serve-nosoa --port "$NS_PORT" --log "$T_TMP/nosoa.log" \
    --serve-seconds $((30 * SLOW)) &
T_PIDS="$T_PIDS $!"
NS_PID=$!
: >"$T_TMP/nosoa.log"
for _ in $(seq 1 50); do ss -Hlnu "sport = :$NS_PORT" | grep -q . && break; sleep 0.1; done
start_stubborn --upstream "127.0.0.1:$NS_PORT"; save_stub 5
r1=$(raw "$S_PORT_5" --name nx.nosoa.example --type A)
r2=$(raw "$S_PORT_5" --name nx.nosoa.example --type A)
expect_eq "SOA-less NXDOMAIN passed on" "NXDOMAIN NXDOMAIN" "$(fld rcode "$r1") $(fld rcode "$r2")"
expect_eq "SOA-less NXDOMAIN not cached: upstream saw both" 2 \
    "$(grep -ci '^udp nx\.nosoa\.example\. A ' "$T_TMP/nosoa.log")"
stop_stubborn
kill "$NS_PID" 2>/dev/null

for i in 1 2 3 4; do use_stub $i; stop_stubborn; done
t_done
