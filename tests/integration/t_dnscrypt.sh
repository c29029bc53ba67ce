#!/bin/bash
# DNSCrypt upstreams: stubborn forwarding to dnsdist serving DNSCrypt v2
# (lib_dnscrypt.sh) in front of fakeup.  Answers with both constructions, a
# large answer through TC and TCP, a certificate rotated at the server, a
# stamp with the wrong provider key, corrupt and replayed answers (through
# a tampering relay, udpmitm.py), client keys per period and per query,
# serve-stale over an outage of a DNSCrypt-only upstream set, and a packet
# capture with no query in clear text.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/lib_dnscrypt.sh"

dc_available || { not_ok "dnsdist with DNSCrypt is installed"; t_done; }
start_fakeup up || { not_ok "fakeup starts"; t_done; }
start_dnscrypt two "$FK_PORT_up" || { not_ok "dnsdist (es-version 2) starts"; t_done; }
DC_ES=1 start_dnscrypt one "$FK_PORT_up" || { not_ok "dnsdist (es-version 1) starts"; t_done; }

metric() { # metric NAME [label regex]: the value, summed over the lines
	curl -s "http://127.0.0.1:$MPORT/metrics" |
	    awk -v n="$1" -v l="${2:-}" '$1 ~ "^stubborn_" n "({|$)" && $1 ~ l { s += $2 } END { print s + 0 }'
}

cap="$T_TMP/dc.pcap"
if command -v tshark >/dev/null; then
	tshark -q -i lo -f "port $DC_PORT_two or port $DC_PORT_one" -w "$cap" \
	    2>"$T_TMP/tshark.err" &
	TSHARK=$!; T_PIDS="$T_PIDS $TSHARK"
	for _ in $(seq 1 50); do [ -s "$cap" ] && break; sleep 0.1; done
fi

# --- answers, both constructions, TC -> TCP ---------------------------------
MPORT=$(pick_port)
start_stubborn --upstream "$DC_STAMP_two" --workers 1 --metrics "127.0.0.1:$MPORT" \
    --upstream-timeout $((300 * SLOW)) || { not_ok "stubborn starts with a stamp"; t_done; }
out=$(q secretlabel.dc.test A)
expect_eq "a query over DNSCrypt (XChaCha20) answers NOERROR" NOERROR "$(echo "$out" | dig_status)"
want=$(dig @127.0.0.1 -p "$FK_PORT_up" secretlabel.dc.test A +short +tries=1 +time=2)
expect_match "with fakeup's record" "$want" "$out"
expect_match "the log names the certificate" "DNSCrypt certificate serial 1, es-version 2" "$(cat "$STUB_LOG")"
expect_eq "one certificate query" 1 "$(metric upstream_dnscrypt_cert_fetches_total)"
end=$(metric upstream_certificate_expiry_timestamp_seconds 'transport="dnscrypt"')
now=$(date +%s)
check "the certificate's expiry is a metric (in $((end - now)) s)" test "$end" -gt "$((now + 80000))" -a "$end" -le "$((now + 86400))"

before=$(fk_count up '^tcp big')
out=$(q big-1.dc.test TXT)
expect_eq "a 3000-byte answer (TC over UDP, then TCP)" NOERROR "$(echo "$out" | dig_status)"
check "it came through TCP at the server ($(fk_count up '^tcp big') TCP queries)" \
    test "$(fk_count up '^tcp big')" -gt "$before"
expect_match "all 11 TXT records" "ANSWER: 11" "$out"
check "the connection was counted" test "$(metric upstream_connections_opened_total 'transport="dnscrypt"')" -ge 1

# --- rotation: the old certificate dropped at the server --------------------
dc_rotate two drop-old || not_ok "dnsdist rotates its certificate"
# Queries sealed with the dropped certificate go unanswered; after two,
# stubborn asks for the certificate again.
got=""
for i in $(seq 1 10); do
	if [ "$(q "rot$i.dc.test" A | dig_status)" = NOERROR ]; then got=$i; break; fi
done
check "after the rotation, answers again (round ${got:-never})" test -n "$got"
expect_match "with the new certificate, serial 2" "DNSCrypt certificate serial 2" "$(cat "$STUB_LOG")"
stop_stubborn

# es-version 1, and a fresh key pair per query.
start_stubborn --upstream "$DC_STAMP_one" --workers 1 --dnscrypt-key-lifetime 0 ||
	{ not_ok "stubborn starts"; t_done; }
for i in 1 2 3; do
	expect_eq "es-version 1 (XSalsa20), key per query: answer $i" NOERROR \
	    "$(q "secretlabel$i.one.dc.test" A | dig_status)"
done
stop_stubborn

# --- a stamp with the wrong provider key --------------------------------------
head -c 32 /dev/urandom >"$T_TMP/wrong.pub"
WRONG=$(dc_make_stamp "127.0.0.1:$DC_PORT_two" "$T_TMP/wrong.pub" "$DC_PROVIDER_two")
start_stubborn --upstream "$WRONG" --workers 1 || { not_ok "stubborn starts"; t_done; }
before=$(fk_count up secretlabel)
expect_eq "wrong provider key: SERVFAIL" SERVFAIL "$(q secretlabel.wrongkey.dc.test A | dig_status)"
expect_eq "wrong provider key: no query reached the server behind it" "$before" "$(fk_count up secretlabel)"
expect_match "wrong provider key: the log says why" "signature does not verify" "$(cat "$STUB_LOG")"
stop_stubborn

# --- corrupt and replayed answers, through a tampering relay -----------------
MITM=$(pick_port); mode="$T_TMP/mitm.mode"; echo pass >"$mode"
python3 "$(dirname "$0")/udpmitm.py" --listen "$MITM" --to "$DC_PORT_two" \
    --mode-file "$mode" --pidfile "$T_TMP/mitm.pid" &
T_PIDS="$T_PIDS $!"
for _ in $(seq 1 50); do [ -s "$T_TMP/mitm.pid" ] && break; sleep 0.1; done
VIA=$(dc_make_stamp "127.0.0.1:$MITM" "$DC_DIR_two/provider.pub" "$DC_PROVIDER_two")
MPORT=$(pick_port)
start_stubborn --upstream "$VIA" --workers 1 --metrics "127.0.0.1:$MPORT" \
    --upstream-timeout $((500 * SLOW)) || { not_ok "stubborn starts"; t_done; }
expect_eq "relay: passes answers" NOERROR "$(q a.mitm.dc.test A | dig_status)"
echo corrupt-first >"$mode"
expect_eq "corrupt copy first: the good answer still gets through" NOERROR \
    "$(q b.mitm.dc.test A | dig_status)"
check "corrupt copy first: the corrupt one was dropped" \
    test "$(metric upstream_dnscrypt_rejected_total)" -ge 1
echo replay-first >"$mode"
mm=$(metric upstream_mismatched_total)
out=$(q c.mitm.dc.test A)
expect_eq "replayed answer first: the real answer gets through" NOERROR "$(echo "$out" | dig_status)"
expect_match "replayed answer first: the real one, for c.mitm" "c\.mitm\.dc\.test\..*IN[[:space:]]+A" "$out"
check "replayed answer first: the replay was dropped" \
    test "$(metric upstream_mismatched_total)" -gt "$mm"
echo corrupt-only >"$mode"
rej=$(metric upstream_dnscrypt_rejected_total)
expect_eq "only corrupt answers: SERVFAIL, nothing made up" SERVFAIL \
    "$(q d.mitm.dc.test A | dig_status)"
check "only corrupt answers: all dropped" test "$(metric upstream_dnscrypt_rejected_total)" -gt "$rej"
stop_stubborn

# --- serve-stale over an outage of the DNSCrypt-only upstream set -------------
start_stubborn --upstream "$DC_STAMP_two" --min-ttl 1 --max-ttl 1 ||
	{ not_ok "stubborn starts"; t_done; }
expect_eq "stale: cached over DNSCrypt" NOERROR "$(q secretlabel.stale.dc.test A | dig_status)"
stop_dnscrypt two
sleep 1.5 # the 1 s TTL runs out: the entry is stale
out=$(q secretlabel.stale.dc.test A)
expect_eq "stale: with the DNSCrypt server gone, the stale answer" NOERROR "$(echo "$out" | dig_status)"
expect_match "stale: marked with EDE 3" "EDE: 3" "$out"
stop_stubborn

if [ -n "${TSHARK:-}" ]; then
	kill -TERM "$TSHARK"; wait_pid "$TSHARK" 5
	n=$(tshark -r "$cap" -Y "udp.dstport == $DC_PORT_two" 2>/dev/null | wc -l)
	check "capture: queries to the DNSCrypt port were captured ($n)" test "$n" -ge 10
	expect_eq "capture: 'secretlabel' nowhere in the raw bytes" 0 "$(grep -c secretlabel "$cap")"
	names=$(tshark -r "$cap" -Y 'dns.flags.response == 0' -T fields -e dns.qry.name 2>/dev/null |
	    sort -u | grep -v '^$' | grep -vc '^2\.dnscrypt-cert\.')
	expect_eq "capture: the only clear-text queries ask for certificates" 0 "$names"
	# A sealed query: client magic (8 bytes) then the client's public key.
	keys() { tshark -r "$cap" -Y "udp.dstport == $1 && udp.length > 100" -T fields -e udp.payload 2>/dev/null |
	    cut -c17-80 | sort -u | wc -l; }
	k1=$(keys "$DC_PORT_one")
	check "capture: key per query, a fresh client key each time ($k1 keys)" test "$k1" -ge 3
else
	echo "SKIP - $T_NAME: no tshark, no packet capture"
fi
t_done
