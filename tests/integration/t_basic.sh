#!/bin/bash
# Forwarding, caching and the client-visible header rules, with dig.
. "$(dirname "$0")/lib.sh"

start_fakeup up
MET_PORT=$(pick_port)
start_stubborn --upstream "127.0.0.1:$FK_PORT_up" --metrics "127.0.0.1:$MET_PORT" \
    --log-level info

out=$(q WwW.ExAmple.COM A)
expect_eq "A query answered" NOERROR "$(echo "$out" | dig_status)"
expect_match "answer keeps the client's letter case" '^WwW\.ExAmple\.COM\.[[:space:]]+[0-9]+[[:space:]]+IN[[:space:]]+A[[:space:]]+10\.' "$out"
expect_match "RA set, AA clear" 'flags: qr rd ra;' "$out"
n1=$(fk_count up 'www\.example\.com\. A ')
out=$(q www.example.com A)
n2=$(fk_count up 'www\.example\.com\. A ')
expect_eq "second identical query served from cache (upstream saw 1)" "1 1" "$n1 $n2"
expect_match "cache hit answered" 'status: NOERROR' "$out"

out=$(q www.example.com A +noedns)
check "no OPT in the reply to a query without one" sh -c "! printf '%s' \"\$1\" | grep -q 'OPT PSEUDOSECTION'" _ "$out"
out=$(q www.example.com A +edns=0)
expect_match "OPT in the reply to a query with one" 'EDNS: version: 0' "$out"

out=$(q www.example.com A +norecurse)
expect_match "RD echoed as sent (clear)" 'flags: qr ra;' "$out"

# The client UDP sockets' buffers: set, logged and exported, the same size.
for d in receive send; do
	m=$(curl -s --noproxy '*' -m $((3 * SLOW)) "http://127.0.0.1:$MET_PORT/metrics" |
	    sed -n "s/^stubborn_udp_socket_buffer_bytes{direction=\"$d\"} \([0-9]*\)$/\1/p")
	l=$(sed -n "s/.*msg=\"client UDP socket buffers.*\" .*$d=\([0-9]*\).*/\1/p" "$STUB_LOG" |
	    sort -n | head -n1)
	check "$d buffer of the client UDP sockets exported (${m:-none}) as logged (${l:-none}), above the kernel default" \
	    test -n "$m" -a "$m" = "${l:-x}" -a "${m:-0}" -gt 212992
done

stop_stubborn
t_done
