#!/bin/bash
# dnsperf at a bounded rate through stubborn: 200 queries (90 names x A and
# AAAA, plus 20 NXDOMAIN names) replayed for 3 s at up to 2000 qps.  Nothing
# may be lost, and the upstream must see about one query per distinct
# question: the rest are cache hits.  Under valgrind the rate is 100 qps.
. "$(dirname "$0")/lib.sh"

if [ -n "$VALGRIND" ]; then RATE=100; else RATE=2000; fi
SECONDS_RUN=3

qf="$T_TMP/queries.txt"
for i in $(seq 1 90); do
	printf 'host-%d.perf.example A\nhost-%d.perf.example AAAA\n' "$i" "$i"
done >"$qf"
for i in $(seq 1 20); do printf 'nx-%d.perf.example A\n' "$i"; done >>"$qf"
distinct=$(sort -u "$qf" | wc -l | tr -d ' ')

start_fakeup up
start_stubborn --upstream "127.0.0.1:$FK_PORT_up" ||
    { not_ok "stubborn started"; t_done; }

# -t: a query unanswered after 5 s (valgrind: 10 s) counts as lost.
out=$(timeout $((60 * SLOW)) dnsperf -s 127.0.0.1 -p "$STUB_PORT" -d "$qf" \
    -Q "$RATE" -l "$SECONDS_RUN" -t $((5 * (SLOW > 1 ? 2 : 1))) -c 4 -T 2 2>&1)
echo "$out" | sed -n 's/^ *\(Queries sent\|Queries completed\|Queries lost\|Response codes\|Queries per second\|Average Latency\).*/# &/p'

sent=$(echo "$out" | sed -n 's/^ *Queries sent: *\([0-9]*\).*/\1/p')
lost=$(echo "$out" | sed -n 's/^ *Queries lost: *\([0-9]*\).*/\1/p')
completed=$(echo "$out" | sed -n 's/^ *Queries completed: *\([0-9]*\).*/\1/p')
codes=$(echo "$out" | sed -n 's/^ *Response codes: *//p')

expect_eq "dnsperf at $RATE qps for ${SECONDS_RUN} s: Queries lost: 0" 0 "${lost:-missing}"
# dnsperf paces itself; allow it to fall short of the nominal count by a
# third (slow start, valgrind), but it must have sent a real load.
check "dnsperf sent ${sent:-0} queries (>= $((RATE * SECONDS_RUN * 2 / 3)))" \
    test "${sent:-0}" -ge $((RATE * SECONDS_RUN * 2 / 3))
expect_eq "every sent query completed" "${sent:-x}" "${completed:-y}"
expect_match "response codes are NOERROR and NXDOMAIN only" \
    '^NOERROR [0-9]+ \([0-9.]+%\), NXDOMAIN [0-9]+ \([0-9.]+%\)$' "$codes"

up=$(fk_count up)
check "upstream saw $up queries for $distinct distinct questions (<= $distinct + 10): the rest were cache hits" \
    test "$up" -le $((distinct + 10))
check "upstream saw at least one query per distinct question ($up >= $distinct)" \
    test "$up" -ge "$distinct"

stop_stubborn
t_done
