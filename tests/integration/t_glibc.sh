#!/bin/bash
# glibc's stub resolver (getent -> getaddrinfo/gethostbyname) through
# stubborn.  glibc only talks to port 53, so stubborn also listens on an
# unused loopback address on port 53 (we are root), and getent runs in a
# private mount namespace where /etc/resolv.conf and /etc/nsswitch.conf are
# bind-mounted over with test files naming that address.  Nothing outside
# the namespace sees them, and no query leaves 127.0.0.0/8.
. "$(dirname "$0")/lib.sh"

if [ "$(id -u)" != 0 ]; then
	echo "SKIP - $T_NAME: needs root (port 53 and mount namespaces)"
	t_done
fi

# Something on port 53 at this address, or on a wildcard address?
port53_busy() {
	ss -Hlnut "sport = :53" | awk '{ print $5 }' |
	    grep -Eq "^(${1//./\\.}|0\.0\.0\.0|\*|\[::\]|\[::ffff:$1\]):53$"
}
ADDR=""
for i in $(seq 77 99); do
	if ! port53_busy "127.0.0.$i"; then ADDR=127.0.0.$i; break; fi
done
if [ -z "$ADDR" ]; then not_ok "a free loopback address for port 53"; t_done; fi

start_fakeup up
start_stubborn --upstream "127.0.0.1:$FK_PORT_up" --listen "$ADDR:53" ||
    { not_ok "stubborn started"; t_done; }
udp=$(ss -Hlnu "sport = :53" | awk '{ print $4 }' | grep -c "^$ADDR:53$")
tcp=$(ss -Hlnt "sport = :53" | awk '{ print $4 }' | grep -c "^$ADDR:53$")
check "stubborn listens on $ADDR:53, UDP and TCP" test "$udp" -ge 1 -a "$tcp" -ge 1

printf 'hosts: dns\n' >"$T_TMP/nsswitch.conf"

# glibc OPTIONS... -- COMMAND...: runs COMMAND with a resolv.conf naming
# only $ADDR (plus the given options lines) and "hosts: dns".  Sets G_OUT,
# G_RC and G_MS (wall time in milliseconds).
glibc() {
	local rc_file=$T_TMP/resolv.conf.$RANDOM t0 t1
	printf 'nameserver %s\n' "$ADDR" >"$rc_file"
	while [ "$1" != -- ]; do printf '%s\n' "$1" >>"$rc_file"; shift; done
	shift
	t0=$(date +%s%N)
	G_OUT=$(timeout $((30 * SLOW)) unshare -m sh -c '
	    mount --bind "$1" /etc/resolv.conf &&
	    mount --bind "$2" /etc/nsswitch.conf || exit 99
	    shift 2
	    exec "$@"' _ "$rc_file" "$T_TMP/nsswitch.conf" "$@" 2>&1)
	G_RC=$?
	t1=$(date +%s%N)
	G_MS=$(((t1 - t0) / 1000000))
}

# What fakeup itself says, asked directly (sorted, one address a line).
direct() {
	dig @127.0.0.1 -p "$FK_PORT_up" "$1" "$2" +short +tries=1 +time=2 +tcp | sort
}
addrs() { printf '%s\n' "$G_OUT" | awk '{ print $1 }' | sort -u; }

want=$( (direct www.example.com A; direct www.example.com AAAA) | sort -u)
check "fakeup's expected A and AAAA for www.example.com ($(echo $want))" \
    test "$(printf '%s\n' "$want" | grep -c .)" -eq 2

# The systemd-resolved-style resolv.conf.
glibc 'options edns0 trust-ad' -- getent ahosts www.example.com
expect_eq "getent ahosts www.example.com: exit 0" 0 "$G_RC"
expect_eq "getent ahosts www.example.com: fakeup's A and AAAA" "$want" "$(addrs)"
check "getent ahosts www.example.com took ${G_MS} ms (< $((2 * SLOW)) s)" test "$G_MS" -lt $((2000 * SLOW))
n1=$(fk_count up 'www\.example\.com\. (A|AAAA) ')
glibc 'options edns0 trust-ad' -- getent ahosts www.example.com
n2=$(fk_count up 'www\.example\.com\. (A|AAAA) ')
expect_eq "second getent: same addresses, from the cache (upstream saw no new query)" \
    "$want +0" "$(addrs) +$((n2 - n1))"

glibc 'options edns0 trust-ad' -- getent ahosts WwW.ExAmPlE.CoM
expect_eq "getent ahosts in mixed case: same addresses" "$want" "$(addrs)"

glibc 'options edns0 trust-ad' -- getent hosts nx-1.example
expect_eq "getent hosts nx-1.example: exit 2 (not found)" 2 "$G_RC"
check "getent hosts nx-1.example failed in ${G_MS} ms (< $((2 * SLOW)) s, no timeout)" test "$G_MS" -lt $((2000 * SLOW))
glibc 'options edns0 trust-ad' -- getent ahosts nodata.example
expect_eq "getent ahosts nodata.example (NODATA for A and AAAA): exit 2" 2 "$G_RC"
check "getent ahosts nodata.example failed in ${G_MS} ms" test "$G_MS" -lt $((2000 * SLOW))

# Plain resolv.conf, no EDNS: big-1.example has 40 A (~680 bytes) and 40
# AAAA (~1150 bytes): both over 512, so stubborn sets TC and glibc retries
# over TCP.
want_big=$( (direct big-1.example A; direct big-1.example AAAA) | sort -u)
glibc -- getent ahosts big-1.example
expect_eq "no EDNS: getent ahosts big-1.example: 80 addresses via TC -> TCP" \
    "0 80 yes" "$G_RC $(addrs | grep -c .) $([ "$(addrs)" = "$want_big" ] && echo yes || echo no)"
# With EDNS (glibc offers 1200 bytes) both fit over UDP.
glibc 'options edns0' -- getent ahosts big-2.example
want_big=$( (direct big-2.example A; direct big-2.example AAAA) | sort -u)
expect_eq "EDNS: getent ahosts big-2.example: 80 addresses" \
    "0 80 yes" "$G_RC $(addrs | grep -c .) $([ "$(addrs)" = "$want_big" ] && echo yes || echo no)"

# glibc over TCP only, and with one socket per query.
want=$( (direct tcp.example.org A; direct tcp.example.org AAAA) | sort -u)
glibc 'options use-vc edns0' -- getent ahosts tcp.example.org
expect_eq "options use-vc (TCP): getent ahosts" "0 $want" "$G_RC $(addrs)"
want=$( (direct sr.example.org A; direct sr.example.org AAAA) | sort -u)
glibc 'options single-request-reopen edns0 trust-ad' -- getent ahosts sr.example.org
expect_eq "options single-request-reopen: getent ahosts" "0 $want" "$G_RC $(addrs)"

# gethostbyname (getent hosts) for an IPv4 name and the CNAME path.
want=$(direct cname.example.net A | grep -v '\.$')
glibc 'options edns0 trust-ad' -- getent ahostsv4 cname.example.net
expect_eq "getent ahostsv4 through a CNAME" "0 $want" "$G_RC $(addrs)"
expect_match "CNAME: the canonical name is reported" 'target\.example\.net' "$G_OUT"

stop_stubborn
t_done
