#!/bin/bash
# DNS-over-TLS upstreams: stubborn forwarding to Unbound serving TLS with a
# certificate from a test CA (lib_tls.sh), in front of fakeup.  Answers,
# one handshake for many queries, refusal of a wrong name, an expired
# certificate and an unknown CA (and then no query in clear text, checked
# in a packet capture), a server that drops its connections, serve-stale
# over an outage of a TLS-only upstream set, and the per-transport metrics.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/lib_tls.sh"

command -v unbound >/dev/null && command -v openssl >/dev/null ||
	{ not_ok "unbound and openssl are installed"; t_done; }
tls_make_certs || { not_ok "openssl makes the test certificates"; t_done; }
start_fakeup up || { not_ok "fakeup starts"; t_done; }
start_unbound_tls ok "$FK_PORT_up" "$TLS_OK" "tcp-idle-timeout: 30000" ||
	{ not_ok "unbound (valid certificate) starts"; t_done; }
start_unbound_tls exp "$FK_PORT_up" "$TLS_EXPIRED" ||
	{ not_ok "unbound (expired certificate) starts"; t_done; }
start_unbound_tls oca "$FK_PORT_up" "$TLS_OTHER_CA_CERT" ||
	{ not_ok "unbound (unknown CA) starts"; t_done; }
check "kdig +tls gets NOERROR from the test server (cross-check)" \
    tls_check_unbound ok

metric() { # metric NAME [label regex]: the value, summed over the lines
	curl -s "http://127.0.0.1:$MPORT/metrics" |
	    awk -v n="$1" -v l="${2:-}" '$1 ~ "^stubborn_" n "({|$)" && $1 ~ l { s += $2 } END { print s + 0 }'
}

# --- a TLS upstream: answers, one connection for many queries ---------------
MPORT=$(pick_port)
UP="tls://127.0.0.1:$UB_PORT_ok#$TLS_NAME"
start_stubborn --upstream "$UP" --tls-ca-file "$TLS_CA" --workers 1 \
    --metrics "127.0.0.1:$MPORT" ||
	{ not_ok "stubborn starts with $UP"; t_done; }
out=$(q www.dot.test A)
expect_eq "a query over DoT answers NOERROR" NOERROR "$(echo "$out" | dig_status)"
want=$(dig @127.0.0.1 -p "$FK_PORT_up" www.dot.test A +short +tries=1 +time=2)
expect_match "with fakeup's record" "$want" "$out"

# Cache misses, in parallel, over the one connection (pipelined).
before=$(fk_count up)
pids=""
for i in $(seq 1 60); do
	q "n$i.reuse.dot.test" A +short >/dev/null &
	pids="$pids $!"
done
# Only the queries: a bare wait would wait for the servers too.
wait $pids
got=$(($(fk_count up) - before))
check "60 cache misses went upstream through Unbound ($got)" test "$got" -ge 60
hs=$(metric upstream_handshakes_total 'transport="tls"')
reused=$(metric upstream_connection_reused_queries_total 'transport="tls"')
check "at most 4 TLS handshakes for 61 queries (handshakes $hs)" test "$hs" -ge 1 -a "$hs" -le 4
check "queries reused connections ($reused of 61)" test "$reused" -ge 55
exp=$(metric upstream_certificate_expiry_timestamp_seconds 'transport="tls"')
want_end=$(date -d "$(openssl x509 -in "$TLS_OK" -noout -enddate | cut -d= -f2)" +%s)
expect_eq "the certificate's expiry time is a metric" "$want_end" "$exp"
conns=$(ss -Htn state established "dport = :$UB_PORT_ok" | wc -l)
check "stubborn keeps $conns connection(s) open to Unbound (1..4)" test "$conns" -ge 1 -a "$conns" -le 4

# Unbound restarts: the open connections break; the next queries reconnect.
kill -TERM "$UB_PID_ok"; wait_pid "$UB_PID_ok" 5
unbound -d -c "$T_TMP/unbound-ok/unbound.conf" 2>>"$UB_LOG_ok" &
UB_PID_ok=$!; T_PIDS="$T_PIDS $UB_PID_ok"
wait_tcp "$UB_PORT_ok" "$UB_PID_ok" || not_ok "unbound restarts"
fails=0
for i in $(seq 1 10); do
	s=$(q "after$i.restart.dot.test" A | dig_status)
	[ "$s" = NOERROR ] || fails=$((fails + 1))
done
expect_eq "after the server dropped its connections, 10 of 10 answered" 0 "$fails"
stop_stubborn

# --- a server that closes idle connections: reconnects resume the session ---
start_unbound_tls idle "$FK_PORT_up" "$TLS_OK" "tcp-idle-timeout: 300" ||
	not_ok "unbound (short idle timeout) starts"
MPORT=$(pick_port)
start_stubborn --upstream "tls://127.0.0.1:$UB_PORT_idle#$TLS_NAME" \
    --tls-ca-file "$TLS_CA" --workers 1 --metrics "127.0.0.1:$MPORT" ||
	{ not_ok "stubborn starts"; t_done; }
fails=0
for i in 1 2 3; do
	[ "$(q "idle$i.dot.test" A | dig_status)" = NOERROR ] || fails=$((fails + 1))
	sleep 0.6 # past the server's 300 ms idle timeout: it closes
done
expect_eq "connections closed by the server while idle: 3 of 3 answered" 0 "$fails"
hs=$(metric upstream_handshakes_total 'transport="tls"')
res=$(metric upstream_tls_resumptions_total 'transport="tls"')
# The first handshake is full; later ones resume (a slow run may open two
# connections at once before any session exists).
check "reconnects resumed the TLS session ($res of $hs handshakes)" \
    test "$hs" -ge 3 -a "$res" -ge 1 -a "$res" -ge $((hs / 2))
stop_stubborn

# --- refusals: wrong name, expired, unknown CA; never clear text ------------
cap="$T_TMP/dot.pcap"
capports="port $UB_PORT_ok or port $UB_PORT_exp or port $UB_PORT_oca"
if command -v tshark >/dev/null; then
	tshark -q -i lo -f "tcp and ($capports)" -w "$cap" 2>"$T_TMP/tshark.err" &
	TSHARK=$!; T_PIDS="$T_PIDS $TSHARK"
	# dumpcap says it is capturing before it is: wait for the file.
	for _ in $(seq 1 50); do [ -s "$cap" ] && break; sleep 0.1; done
fi
refused() { # refused LABEL UPSTREAM REASON-REGEX
	local before s
	start_stubborn --upstream "$2" --tls-ca-file "$TLS_CA" --workers 1 \
	    --stale-client-timeout 300 --control-socket "$T_TMP/$1.sock" ||
		{ not_ok "$1: stubborn starts"; return; }
	before=$(fk_count up secretlabel)
	s=$(q "secretlabel.$1.dot.test" A | dig_status)
	expect_eq "$1: the client gets SERVFAIL" SERVFAIL "$s"
	expect_eq "$1: nothing reached the server behind it" "$before" "$(fk_count up secretlabel)"
	expect_match "$1: the log says why" "$3" "$(cat "$STUB_LOG")"
	expect_match "$1: stubborn-ctl upstreams says why" "transport-error=.*($3)" \
	    "$("$BUILD/stubborn-ctl" -s "$T_TMP/$1.sock" upstreams)"
	stop_stubborn
}
refused wrongname "tls://127.0.0.1:$UB_PORT_ok#wrong.$TLS_NAME" "verif|mismatch|name"
refused expired "tls://127.0.0.1:$UB_PORT_exp#$TLS_NAME" "expired"
refused unknownca "tls://127.0.0.1:$UB_PORT_oca#$TLS_NAME" "verif|issuer"

# A tls-ca-file that does not hold certificates is a configuration error.
echo "not a certificate" >"$T_TMP/bad-ca.pem"
"$STUBBORN" --listen 127.0.0.1:1 --upstream "$UP" \
    --tls-ca-file "$T_TMP/bad-ca.pem" >/dev/null 2>&1
expect_eq "a CA file without certificates: exit 2" 2 "$?"

# --- serve-stale over an outage of the TLS-only upstream set ----------------
MPORT=$(pick_port)
start_stubborn --upstream "$UP" --tls-ca-file "$TLS_CA" \
    --metrics "127.0.0.1:$MPORT" --min-ttl 1 --max-ttl 1 ||
	{ not_ok "stubborn starts"; t_done; }
expect_eq "stale: cached over DoT" NOERROR "$(q secretlabel.stale.dot.test A | dig_status)"
kill -TERM "$UB_PID_ok"; wait_pid "$UB_PID_ok" 5
sleep 1.5 # the 1 s TTL runs out: the entry is stale
out=$(q secretlabel.stale.dot.test A +ednsopt=15)
expect_eq "stale: with the TLS server gone, the stale answer" NOERROR "$(echo "$out" | dig_status)"
expect_match "stale: marked with EDE 3" "EDE: 3" "$out"
stop_stubborn

if [ -n "${TSHARK:-}" ]; then
	kill -TERM "$TSHARK"; wait_pid "$TSHARK" 5
	pkts=$(tshark -r "$cap" 2>/dev/null | wc -l)
	check "capture: the run's TLS traffic was captured ($pkts packets)" test "$pkts" -ge 20
	hello=$(tshark -r "$cap" -Y 'tls.handshake.type == 1' 2>/dev/null | wc -l)
	check "capture: TLS ClientHellos with SNI went out ($hello)" test "$hello" -ge 4
	plain=$(tshark -r "$cap" -Y 'dns' -d "tcp.port==$UB_PORT_ok,dns" \
	    -d "tcp.port==$UB_PORT_exp,dns" -d "tcp.port==$UB_PORT_oca,dns" \
	    2>/dev/null | grep -ci secretlabel)
	expect_eq "capture: no query name in clear text to a TLS server" 0 "$plain"
	expect_eq "capture: 'secretlabel' nowhere in the raw bytes" 0 "$(grep -c secretlabel "$cap")"
else
	echo "SKIP - $T_NAME: no tshark, no packet capture"
fi
t_done
