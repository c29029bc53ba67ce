#!/bin/bash
# A real authoritative upstream: NSD serves tests/integration/zones/
# stubborn.test.zone on a 127.0.0.1 port, stubborn forwards to it, and dig
# and kdig ask stubborn over UDP and TCP.  Then NSD is stopped and the same
# questions are asked again: the answers can only come from the cache.
. "$(dirname "$0")/lib.sh"

ZONE="$ROOT/tests/integration/zones/stubborn.test.zone"
NSD_PID=""

# NSD forks server children; stop the parent by PID and give it time to
# take them down (lib.sh's cleanup sends SIGKILL after 0.2 s, which would
# orphan them).  Then the usual cleanup.
stop_nsd() {
	[ -n "$NSD_PID" ] || return 0
	kill -TERM "$NSD_PID" 2>/dev/null
	for _ in $(seq 1 50); do
		kill -0 "$NSD_PID" 2>/dev/null || break
		sleep 0.1
	done
	kill -KILL "$NSD_PID" 2>/dev/null
	wait "$NSD_PID" 2>/dev/null
	NSD_PID=""
}
trap 'stop_nsd; t_cleanup' EXIT

# The answer section of a dig/kdig output, one record a line, no comments.
answers() { sed -n '/^;; ANSWER SECTION:/,/^$/p' | grep -v '^;' | grep -v '^$'; }
authority() { sed -n '/^;; AUTHORITY SECTION:/,/^$/p' | grep -v '^;' | grep -v '^$'; }
kdig_status() { sed -n 's/.*status: \([A-Z]*\);.*/\1/p' | head -n1; }

# kq NAME TYPE [kdig options]: kdig against stubborn.
kq() {
	local n=$1 t=$2; shift 2
	kdig @127.0.0.1 -p "$STUB_PORT" "$n" "$t" +retry=0 \
	    +timeout=$((4 * SLOW)) "$@" 2>&1
}

# ---- NSD ------------------------------------------------------------------
NSD_PORT=$(pick_port)
cat >"$T_TMP/nsd.conf" <<EOF
server:
	ip-address: 127.0.0.1@$NSD_PORT
	port: $NSD_PORT
	do-ip6: no
	username: ""
	chroot: ""
	pidfile: "$T_TMP/nsd.pid"
	zonesdir: "$T_TMP"
	database: ""
	xfrdfile: "$T_TMP/xfrd.state"
	zonelistfile: "$T_TMP/zone.list"
	xfrdir: "$T_TMP"
	logfile: "$T_TMP/nsd.log"
	verbosity: 0
	server-count: 1
remote-control:
	control-enable: no
zone:
	name: "stubborn.test."
	zonefile: "$ZONE"
EOF
nsd -d -c "$T_TMP/nsd.conf" 2>"$T_TMP/nsd.err" &
NSD_PID=$!
nsd_up=no
for _ in $(seq 1 50); do
	if dig @127.0.0.1 -p "$NSD_PORT" stubborn.test SOA +tries=1 +time=1 \
	    2>/dev/null | grep -q 'status: NOERROR'; then nsd_up=yes; break; fi
	sleep 0.1
done
expect_eq "NSD serves stubborn.test on 127.0.0.1:$NSD_PORT" yes "$nsd_up"
if [ "$nsd_up" != yes ]; then cat "$T_TMP/nsd.err" "$T_TMP/nsd.log" 2>/dev/null; t_done; fi

start_stubborn --upstream "127.0.0.1:$NSD_PORT" || { not_ok "stubborn started"; t_done; }

# ---- dig over UDP -----------------------------------------------------------
out=$(q www.stubborn.test A)
expect_eq "A: NOERROR" NOERROR "$(echo "$out" | dig_status)"
expect_match "A: 192.0.2.10" '^www\.stubborn\.test\.[[:space:]]+[0-9]+[[:space:]]+IN[[:space:]]+A[[:space:]]+192\.0\.2\.10$' "$(echo "$out" | answers)"
expect_match "A: RA set, AA clear (stubborn is not the authority)" 'flags: qr rd ra;' "$out"

out=$(q www.stubborn.test AAAA)
expect_match "AAAA: 2001:db8::10" 'IN[[:space:]]+AAAA[[:space:]]+2001:db8::10$' "$(echo "$out" | answers)"

out=$(q stubborn.test MX)
expect_match "MX: 10 mail.stubborn.test." 'IN[[:space:]]+MX[[:space:]]+10 mail\.stubborn\.test\.$' "$(echo "$out" | answers)"

out=$(q txt.stubborn.test TXT)
expect_match "TXT: one string" 'IN[[:space:]]+TXT[[:space:]]+"hello from stubborn\.test"$' "$(echo "$out" | answers)"

out=$(q alias.stubborn.test A)
expect_eq "CNAME chain: alias -> alias2 -> www -> A, in order" \
    "alias.stubborn.test.:CNAME:alias2.stubborn.test. alias2.stubborn.test.:CNAME:www.stubborn.test. www.stubborn.test.:A:192.0.2.10" \
    "$(echo "$out" | answers | awk '{ printf "%s%s:%s:%s", (NR > 1 ? " " : ""), $1, $4, $5 }')"

out=$(q nx.stubborn.test A)
expect_eq "NXDOMAIN: status" NXDOMAIN "$(echo "$out" | dig_status)"
soa=$(echo "$out" | authority | awk '$4 == "SOA"')
expect_match "NXDOMAIN: SOA of the zone in the authority section" '^stubborn\.test\.[[:space:]]+[0-9]+[[:space:]]+IN[[:space:]]+SOA[[:space:]]+ns1\.stubborn\.test\. ' "$soa"
ttl=$(echo "$soa" | awk '{print $2}')
check "NXDOMAIN: SOA TTL ($ttl) <= SOA minimum (120)" test "${ttl:-999}" -le 120

out=$(q v6only.stubborn.test A)
expect_eq "NODATA: status NOERROR" NOERROR "$(echo "$out" | dig_status)"
expect_match "NODATA: no answer" 'ANSWER: 0,' "$out"
soa=$(echo "$out" | authority | awk '$4 == "SOA"')
ttl=$(echo "$soa" | awk '{print $2}')
check "NODATA: SOA in authority, TTL ($ttl) <= 120" test -n "$soa" -a "${ttl:-999}" -le 120

# The big TXT RRset (~3 kB): NSD truncates it at stubborn's 1232 bytes, so
# stubborn must fetch it over TCP; stubborn then truncates it for a UDP
# client, which retries over TCP.
out=$(q big.stubborn.test TXT +ignore)
expect_match "big TXT over UDP: TC set for the client" 'flags: qr tc rd ra;' "$out"
out=$(q big.stubborn.test TXT +ignore +bufsize=4096)
expect_match "big TXT over UDP with bufsize 4096: still TC (stubborn caps at 1232)" 'flags: qr tc rd ra;' "$out"
out=$(q big.stubborn.test TXT)
expect_eq "big TXT: dig falls back to TCP and gets all 12 strings" 12 \
    "$(echo "$out" | answers | grep -c 'IN[[:space:]]*TXT[[:space:]]*"[0-9][0-9]-abcdefghij')"
expect_match "big TXT: the fallback answer came over TCP" 'Truncated, retrying in TCP mode|\(TCP\)' "$out"

# Letter case: the client's case comes back, also on a cache hit of a name
# first asked in another case.
out=$(q WwW.StUbBoRn.TeSt A)
expect_match "cache hit keeps the client's letter case" '^WwW\.StUbBoRn\.TeSt\.[[:space:]]+[0-9]+[[:space:]]+IN[[:space:]]+A[[:space:]]+192\.0\.2\.10$' "$(echo "$out" | answers)"
expect_match "question keeps the client's letter case" '^;WwW\.StUbBoRn\.TeSt\.[[:space:]]+IN[[:space:]]+A' "$out"
out=$(q mAiL.sTuBbOrN.tEsT A)
expect_match "miss keeps the client's letter case" '^mAiL\.sTuBbOrN\.tEsT\.[[:space:]]+[0-9]+[[:space:]]+IN[[:space:]]+A[[:space:]]+192\.0\.2\.25$' "$(echo "$out" | answers)"
out=$(q CaSe.StUbBoRn.TeSt A +tcp)
expect_match "NXDOMAIN over TCP keeps the client's letter case" '^;CaSe\.StUbBoRn\.TeSt\.[[:space:]]+IN[[:space:]]+A' "$out"
out=$(q AlIaS.StUbBoRn.TeSt A)
# (Names compressed against the question, here the CNAME target's suffix,
# take the question's case too, as they would from NSD itself.)
expect_eq "CNAME chain from cache: owner in the client's case" \
    "AlIaS.StUbBoRn.TeSt. CNAME alias2.stubborn.test." \
    "$(echo "$out" | answers | head -n1 | awk '{ print $1, $4, tolower($5) }')"

# ---- kdig, UDP and TCP --------------------------------------------------------
for proto in udp tcp; do
	# kdig uses UDP unless told +tcp (+notcp would also disable its
	# TC -> TCP fallback, so it is not passed).
	if [ $proto = tcp ]; then opt=+tcp; else opt=+ignore; fi
	out=$(kq www.stubborn.test A $opt)
	expect_match "kdig $proto A" 'IN[[:space:]]+A[[:space:]]+192\.0\.2\.10$' "$(echo "$out" | answers)"
	expect_match "kdig $proto: reply came over $proto" "From 127\.0\.0\.1@$STUB_PORT\($(echo $proto | tr a-z A-Z)\)" "$out"
	out=$(kq www.stubborn.test AAAA $opt)
	expect_match "kdig $proto AAAA" 'IN[[:space:]]+AAAA[[:space:]]+2001:db8::10$' "$(echo "$out" | answers)"
	out=$(kq stubborn.test MX $opt)
	expect_match "kdig $proto MX" 'IN[[:space:]]+MX[[:space:]]+10 mail\.stubborn\.test\.$' "$(echo "$out" | answers)"
	out=$(kq txt.stubborn.test TXT $opt)
	expect_match "kdig $proto TXT" '"hello from stubborn\.test"$' "$(echo "$out" | answers)"
	out=$(kq alias.stubborn.test A $opt)
	expect_eq "kdig $proto CNAME chain (3 records, ends in the A)" "3 192.0.2.10" \
	    "$(echo "$out" | answers | wc -l | tr -d ' ') $(echo "$out" | answers | tail -n1 | awk '{print $5}')"
	out=$(kq nx-$proto.stubborn.test A $opt)
	expect_eq "kdig $proto NXDOMAIN" NXDOMAIN "$(echo "$out" | kdig_status)"
	ttl=$(echo "$out" | authority | awk '$4 == "SOA" {print $2}')
	check "kdig $proto NXDOMAIN: SOA TTL ($ttl) <= 120" test "${ttl:-999}" -le 120
	out=$(kq v6only.stubborn.test MX $opt)
	expect_eq "kdig $proto NODATA" "NOERROR 0 SOA" \
	    "$(echo "$out" | kdig_status) $(echo "$out" | answers | wc -l | tr -d ' ') $(echo "$out" | authority | awk '{print $4}')"
done
out=$(kq big.stubborn.test TXT +tcp)
expect_eq "kdig tcp big TXT: all 12 strings" 12 "$(echo "$out" | answers | grep -c 'TXT')"
out=$(kq big.stubborn.test TXT +ignore)
expect_match "kdig udp big TXT: TC" 'Flags: qr tc rd ra;' "$out"
out=$(kq big.stubborn.test TXT)
expect_eq "kdig udp big TXT: TC, then TCP, 12 strings" 12 "$(echo "$out" | answers | grep -c 'TXT')"

# ---- the cache: stop NSD, ask again ------------------------------------------
stop_nsd
gone=yes
dig @127.0.0.1 -p "$NSD_PORT" stubborn.test SOA +tries=1 +time=1 2>&1 |
    grep -q 'status:' && gone=no
expect_eq "NSD is stopped (no answer on its port)" yes "$gone"

out=$(q www.stubborn.test A)
expect_match "after NSD stopped: A still answered (cache)" 'IN[[:space:]]+A[[:space:]]+192\.0\.2\.10$' "$(echo "$out" | answers)"
ttl=$(echo "$out" | answers | awk '{print $2}')
check "cached A: TTL ($ttl) counts from 300, not above it" test "${ttl:-999}" -le 300 -a "${ttl:-0}" -gt 0
check "cached A: no EDE (a fresh hit, not a stale answer)" sh -c "! printf '%s' \"\$1\" | grep -q 'EDE'" _ "$out"
out=$(q www.stubborn.test AAAA +tcp)
expect_match "after NSD stopped: AAAA over TCP still answered" 'IN[[:space:]]+AAAA[[:space:]]+2001:db8::10$' "$(echo "$out" | answers)"
out=$(q alias.stubborn.test A)
expect_eq "after NSD stopped: CNAME chain still answered" 3 "$(echo "$out" | answers | wc -l | tr -d ' ')"
out=$(q nx.stubborn.test A)
expect_eq "after NSD stopped: NXDOMAIN still answered (negative cache)" NXDOMAIN "$(echo "$out" | dig_status)"
out=$(q v6only.stubborn.test A)
expect_eq "after NSD stopped: NODATA still answered" "NOERROR 0" \
    "$(echo "$out" | dig_status) $(echo "$out" | answers | wc -l | tr -d ' ')"
out=$(q big.stubborn.test TXT)
expect_eq "after NSD stopped: big TXT still answered (UDP TC, then TCP)" 12 "$(echo "$out" | answers | grep -c TXT)"
# (kdig lower-cases names it sends, so letter case is checked with dig.)
out=$(q TXT.stubborn.TEST TXT +tcp)
expect_match "after NSD stopped: TXT over TCP in the client's case" '^TXT\.stubborn\.TEST\.[[:space:]]+[0-9]+[[:space:]]+IN[[:space:]]+TXT' "$(echo "$out" | answers)"

stop_stubborn
t_done
