#!/bin/bash
# make bench-encrypted: what encryption costs a forwarder on cache misses,
# stubborn next to Unbound in one run, each forwarder at BENCH_QUOTA % of
# one core (cgroup CPU quota, lib_cg.sh), one worker/thread, no cache hits:
#   stubborn  plain UDP   -> Unbound "up" (its plain port)
#   stubborn  DoT         -> Unbound "up" (its TLS port, a test CA)
#   Unbound   DoT         -> the same   (forward-tls-upstream: yes)
#   stubborn  DNSCrypt    -> dnsdist (DNSCrypt v2) in front of fakeup
# The upstreams (Unbound "up" with 2 threads, dnsdist, fakeup) and dnsperf
# run without a quota.  Interleaved rounds (the order rotates), medians of
# BENCH_ROUNDS (3): (a) capacity, names never asked before, for BENCH_SECS
# (5) s; (b) p50/p99 at a fixed rate, a quarter of the lowest capacity; TLS
# handshakes per 1,000 queries are counted at the server's port (SYNs in a
# capture), the same way for both forwarders.  stubborn's client and
# upstream limits are lifted for the run.  Writes build/bench/encrypted.md.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/lib_cg.sh"
. "$(dirname "$0")/../integration/lib_tls.sh"
. "$(dirname "$0")/../integration/lib_dnscrypt.sh"

QUOTA=${BENCH_QUOTA:-25} SECS=${BENCH_SECS:-5} ROUNDS=${BENCH_ROUNDS:-3}
OUT=${BUILD:-build}/bench
TOOL="python3 $(dirname "$0")/enctool.py"
mkdir -p "$OUT"
die() { echo "bench-encrypted: $*" >&2; exit 1; }
for t in dnsperf unbound dnsdist openssl dumpcap tshark; do
	command -v "$t" >/dev/null || die "$t is missing (make bench-encrypted installs it)"
done
cg_setup
trap 't_cleanup; cg_cleanup' EXIT
trap 'exit 130' INT TERM

# ---- upstreams ------------------------------------------------------------------
FK_PORT_up=$(pick_port)
"$FAKEUP" --listen "127.0.0.1:$FK_PORT_up" --zone-ttl 86400 2>"$T_TMP/fk.err" &
T_PIDS="$T_PIDS $!"
wait_dns 127.0.0.1 "$FK_PORT_up" $! || die "fakeup did not start"
tls_make_certs >/dev/null || die "openssl could not make the test certificates"
UP_TLS=$(pick_port) UP_PLAIN=$(pick_port)
mkdir -p "$T_TMP/up"
cat >"$T_TMP/up/unbound.conf" <<EOF
server:
	interface: 127.0.0.1@$UP_PLAIN
	interface: 127.0.0.1@$UP_TLS
	tls-port: $UP_TLS
	tls-service-key: "$TLS_KEY"
	tls-service-pem: "$TLS_OK"
	do-ip6: no
	do-daemonize: no
	username: ""
	chroot: ""
	directory: "$T_TMP/up"
	pidfile: "$T_TMP/up/unbound.pid"
	use-syslog: no
	logfile: ""
	verbosity: 0
	num-threads: 2
	module-config: "iterator"
	do-not-query-localhost: no
	access-control: 127.0.0.0/8 allow
	local-zone: "test." nodefault
	tcp-idle-timeout: 120000
	incoming-num-tcp: 100
remote-control:
	control-enable: no
forward-zone:
	name: "."
	forward-addr: 127.0.0.1@$FK_PORT_up
EOF
unbound -d -c "$T_TMP/up/unbound.conf" 2>"$T_TMP/up/err" &
T_PIDS="$T_PIDS $!"
wait_dns 127.0.0.1 "$UP_PLAIN" $! || die "upstream Unbound did not start: $(cat "$T_TMP/up/err")"
start_dnscrypt dc "$FK_PORT_up" >/dev/null || die "dnsdist (DNSCrypt) did not start"

# ---- the forwarders, each in its own group ---------------------------------------
declare -A PORT PID CG LABEL
LIFT=(--client-qps 1000000 --client-qps-cookie 1000000 --upstream-qps 1000000
    --upstream-max-outstanding 100000 --max-waiters 100000 --retry-budget 100
    --workers 1 --cache-size 256M --ratelimit-loopback no)
start() { # start NAME LABEL CMD...
	local t=$1 p
	p=$(pick_port)
	PORT[$t]=$p LABEL[$t]=$2
	shift 2
	CG[$t]=$(cg_new "$t")
	cg_quota "${CG[$t]}" max
	BENCH_CG=${CG[$t]}
	# shellcheck disable=SC2294 # the command names its own port
	bench_exec "${@//@PORT@/$p}" 2>"$T_TMP/$t.err" &
	PID[$t]=$!
	T_PIDS="$T_PIDS ${PID[$t]}"
	BENCH_CG=""
	wait_dns 127.0.0.1 "$p" "${PID[$t]}" || die "$t did not start: $(cat "$T_TMP/$t.err")"
}
start s-udp "stubborn, plain UDP" "$STUBBORN" --listen 127.0.0.1:@PORT@ \
    --upstream "127.0.0.1:$UP_PLAIN" "${LIFT[@]}"
start s-dot "stubborn, DNS-over-TLS" "$STUBBORN" --listen 127.0.0.1:@PORT@ \
    --upstream "tls://127.0.0.1:$UP_TLS#$TLS_NAME" --tls-ca-file "$TLS_CA" "${LIFT[@]}"
start s-dc "stubborn, DNSCrypt" "$STUBBORN" --listen 127.0.0.1:@PORT@ \
    --upstream "$DC_STAMP_dc" "${LIFT[@]}"
mkdir -p "$T_TMP/u-dot"
cat >"$T_TMP/u-dot/unbound.conf" <<EOF
server:
	interface: 127.0.0.1@@PORT@
	do-ip6: no
	do-daemonize: no
	username: ""
	chroot: ""
	directory: "$T_TMP/u-dot"
	pidfile: "$T_TMP/u-dot/unbound.pid"
	use-syslog: no
	logfile: ""
	verbosity: 0
	num-threads: 1
	module-config: "iterator"
	do-not-query-localhost: no
	access-control: 127.0.0.0/8 allow
	local-zone: "test." nodefault
	tls-cert-bundle: "$TLS_CA"
	msg-cache-size: 128m
	rrset-cache-size: 256m
	outgoing-num-tcp: 10
remote-control:
	control-enable: no
forward-zone:
	name: "."
	forward-tls-upstream: yes
	forward-addr: 127.0.0.1@$UP_TLS#$TLS_NAME
EOF
p=$(pick_port)
sed -i "s/@@PORT@/@$p/" "$T_TMP/u-dot/unbound.conf"
PORT[u-dot]=$p LABEL[u-dot]="Unbound $(unbound_version), forward-tls-upstream"
CG[u-dot]=$(cg_new u-dot)
cg_quota "${CG[u-dot]}" max
BENCH_CG=${CG[u-dot]}
bench_exec unbound -d -c "$T_TMP/u-dot/unbound.conf" 2>"$T_TMP/u-dot.err" &
PID[u-dot]=$!; T_PIDS="$T_PIDS ${PID[u-dot]}"; BENCH_CG=""
wait_dns 127.0.0.1 "$p" "${PID[u-dot]}" || die "Unbound (DoT forwarder) did not start: $(cat "$T_TMP/u-dot.err")"
TARGETS="s-udp s-dot u-dot s-dc"

# Every forwarder answers before the clock starts (connections, certificates).
for t in $TARGETS; do
	dig @127.0.0.1 -p "${PORT[$t]}" warm.enc.test A +tries=3 +time=3 >/dev/null ||
	    die "$t does not answer"
done

# ---- runs ---------------------------------------------------------------------------
ticks() { awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$1/stat"; }
hz=$(getconf CLK_TCK)
echo -e "test\ttarget\tround\tqps\tcompleted\tlost\tcpu\tsyns\tnoerror\tokqps\tp50\tp99" >"$OUT/encrypted.tsv"
n=0
# run TEST TARGET ROUND [dnsperf options]: one run on names never asked.
run() {
	local test=$1 t=$2 r=$3 f="$T_TMP/names" cap="$T_TMP/syn.pcap" t0 t1 dp
	shift 3
	n=$((n + 1))
	awk -v n=200000 -v p="r$n" 'BEGIN { for (i = 1; i <= n; i++) printf "%s-%d.enc.test A\n", p, i }' >"$f"
	# Connections to the TLS port, counted by their SYNs.
	dumpcap -q -i lo -f "tcp dst port $UP_TLS and tcp[tcpflags] & (tcp-syn|tcp-ack) == tcp-syn" \
	    -w "$cap" 2>/dev/null &
	dp=$!
	for _ in $(seq 1 50); do [ -s "$cap" ] && break; sleep 0.1; done
	cg_quota "${CG[$t]}" "$QUOTA"
	t0=$(ticks "${PID[$t]}")
	timeout $((SECS + 30)) dnsperf -s 127.0.0.1 -p "${PORT[$t]}" -d "$f" -l "$SECS" \
	    -t 2 "$@" >"$T_TMP/perf.out" 2>&1
	t1=$(ticks "${PID[$t]}")
	cg_quota "${CG[$t]}" max
	sleep 0.3 # the capture writes its last packets
	kill -TERM "$dp"; wait "$dp" 2>/dev/null
	$TOOL sum "$T_TMP/perf.out" "$test" "$t" "$r" "$(( (t1 - t0) * 100 / hz / SECS ))" \
	    "$(tshark -r "$cap" 2>/dev/null | wc -l)" >>"$OUT/encrypted.tsv"
	tail -n1 "$OUT/encrypted.tsv" | sed 's/^/bench-encrypted: /'
}
rot() { local k=$1; shift; local a=("$@") i; for ((i = 0; i < $#; i++)); do printf '%s ' "${a[$(((i + k) % $#))]}"; done; }
for r in $(seq 1 "$ROUNDS"); do
	for t in $(rot "$r" $TARGETS); do run cap "$t" "$r" -c 8 -q 500; done
done
RATE=$($TOOL rate "$OUT/encrypted.tsv")
echo "bench-encrypted: latency runs at $RATE qps"
for r in $(seq 1 "$ROUNDS"); do
	for t in $(rot "$r" $TARGETS); do run lat "$t" "$r" -c 8 -Q "$RATE" -v; done
done
{
	echo "## Encrypted upstreams: cache misses ($(date -u +%Y-%m-%d), $(nproc) CPUs)"
	echo
	echo "Capacity counts NOERROR answers only: flooded, a forwarder's upstreams time some queries out, and a fast SERVFAIL is no capacity."
	echo
	echo "Each forwarder at ${QUOTA}% of one core ($CG_MODE cgroup quota), one worker/thread; upstreams and dnsperf $(dnsperf -h 2>&1 | sed -n 's/^Version //p' | head -n1) without quota; medians of $ROUNDS interleaved rounds of ${SECS} s; every query a name never asked before. Latency at $RATE qps. Handshakes: TCP connections opened to the TLS server per 1,000 queries."
	echo
	$TOOL report "$OUT/encrypted.tsv" $(for t in $TARGETS; do printf '%s=%s ' "$t" "${LABEL[$t]// /_}"; done)
} >"$OUT/encrypted.md"
cat "$OUT/encrypted.md"
