#!/bin/bash
# The shipped default, as `make run` starts it: build/stubborn --config
# config/stubborn.conf, listening on 127.0.0.53:53 with the upstreams of
# /etc/resolv.conf.  Those upstreams are real resolvers, so this whole file
# re-runs itself inside a private network namespace (unshare -n) that has
# nothing but lo: the upstreams are unreachable there, which is the point.
# stubborn must still listen, answer SERVFAIL with an EDE at once, keep
# running, and exit 0 on SIGTERM.
if [ "${STUBBORN_IN_NETNS:-}" != 1 ]; then
	if [ "$(id -u)" != 0 ]; then
		echo "SKIP - t_netns_default: needs root (unshare -n)"
		exit 0
	fi
	STUBBORN_IN_NETNS=1 exec unshare -n bash "$0" "$@"
fi

# From here on, inside the private network namespace.
. "$(dirname "$0")/lib.sh"

ip link set lo up
# Safety first: nothing but lo may exist here, or the default upstreams
# could be reachable.
others=$(ip -o link show | awk -F': ' '{ print $2 }' | grep -vx lo)
if [ -n "$others" ]; then
	not_ok "private network namespace has only lo (found: $(echo $others))"
	t_done
fi
ok "inside a private network namespace with only lo"

CONF="$ROOT/config/stubborn.conf"
ADDR=127.0.0.53
# The default upstreams: /etc/resolv.conf's nameservers minus our own
# address.  When none is left (a systemd-resolved host) stubborn must
# refuse to start instead.
ns=$(awk '$1 == "nameserver" && $2 != "127.0.0.53" { print $2 }' /etc/resolv.conf 2>/dev/null)
if [ -z "$ns" ]; then
	timeout $((10 * SLOW)) "$STUBBORN" --config "$CONF" 2>"$T_TMP/err"
	expect_eq "/etc/resolv.conf has no usable nameserver: exit 2" 2 "$?"
	expect_match "/etc/resolv.conf has no usable nameserver: says 'no upstream'" 'no upstream' "$(cat "$T_TMP/err")"
	t_done
fi

LOG="$T_TMP/stubborn.default.log"
if [ -n "$VALGRIND" ]; then
	valgrind -q --vgdb=no --error-exitcode=99 --leak-check=full \
	    --errors-for-leak-kinds=definite,indirect \
	    --log-file="$T_TMP/valgrind.default.log" \
	    "$STUBBORN" --config "$CONF" 2>"$LOG" &
else
	"$STUBBORN" --config "$CONF" 2>"$LOG" &
fi
PID=$!
T_PIDS="$T_PIDS $PID"

udp=0 tcp=0
for _ in $(seq 1 $((50 * SLOW))); do
	udp=$(ss -Hlnu "sport = :53" | awk '{ print $4 }' | grep -c "^$ADDR:53$")
	tcp=$(ss -Hlnt "sport = :53" | awk '{ print $4 }' | grep -c "^$ADDR:53$")
	[ "$udp" -ge 1 ] && [ "$tcp" -ge 1 ] && break
	kill -0 "$PID" 2>/dev/null || break
	sleep 0.1
done
check "listening on $ADDR:53 UDP ($udp sockets)" test "$udp" -ge 1
check "listening on $ADDR:53 TCP ($tcp sockets)" test "$tcp" -ge 1
if ! kill -0 "$PID" 2>/dev/null; then
	not_ok "stubborn is running with the shipped config"; cat "$LOG"; t_done
fi
# The start-up lines are logged just after the sockets are bound.
for _ in $(seq 1 $((20 * SLOW))); do
	grep -q 'msg="forwarding"' "$LOG" && break
	sleep 0.1
done
expect_match "upstreams came from /etc/resolv.conf" 'msg="forwarding".*source=/etc/resolv\.conf' "$(cat "$LOG")"

LIMIT=$((3500 * SLOW))
# ask LABEL [dig options]: one query to 127.0.0.53, checks the reply.
ask() {
	local label=$1 t0 t1 ms out; shift
	t0=$(date +%s%N)
	out=$(dig @"$ADDR" "$@" +tries=1 +time=$((5 * SLOW)) 2>&1)
	t1=$(date +%s%N)
	ms=$(((t1 - t0) / 1000000))
	expect_eq "$label: SERVFAIL (upstreams unreachable)" SERVFAIL "$(echo "$out" | dig_status)"
	check "$label: answered in $ms ms (< $LIMIT ms)" test "$ms" -lt "$LIMIT"
	expect_match "$label: carries an EDE" '; EDE: [0-9]+' "$out"
	check "$label: stubborn keeps running" kill -0 "$PID"
}
ask "UDP example.com A" example.com A
ask "UDP example.com A again" example.com A
ask "UDP www.example.net AAAA" www.example.net AAAA
ask "TCP example.com A" example.com A +tcp
ask "TCP example.org MX" example.org MX +tcp

kill -TERM "$PID"
wait "$PID"
expect_eq "SIGTERM: exit 0" 0 "$?"
if [ -n "$VALGRIND" ]; then
	if [ -s "$T_TMP/valgrind.default.log" ]; then
		not_ok "valgrind clean"; cat "$T_TMP/valgrind.default.log"
	else
		ok "valgrind clean"
	fi
fi
t_done
