# Shared set-up of the side-by-side benchmarks (bash): the peers that
# stubborn is compared with, configured once.  Sources the integration
# helpers (pick_port, wait_dns, start_fakeup, start_stubborn, T_PIDS and the
# EXIT trap that stops every process by PID).
#
# Every server listens on a 127.0.0.0/8 address and forwards to upstreams on
# 127.0.0.0/8 only.  None phones home: Unbound has no trust anchor and no
# root hints to fetch (the forward zone "." covers every name), dnsdist has
# security polling off, dnsmasq reads no resolv.conf.
#
# BENCH_CG: when set to a cgroup directory, each server started by the
# functions below joins it before exec, so every thread it creates is in the
# group from its first instruction.

. "$(dirname "${BASH_SOURCE[0]}")/../integration/lib.sh"

# bench_exec CMD...: exec CMD, in BENCH_CG when that is set.  Run it in the
# background (bench_exec ... &), so $! is the server's PID.
bench_exec() {
	if [ -n "${BENCH_CG:-}" ]; then
		echo "$BASHPID" >"$BENCH_CG/cgroup.procs" || exit 126
	fi
	exec "$@"
}

# start_unbound ADDR PORT THREADS ZONE EXTRA UPSTREAM...: Unbound as a
# forwarder like stubborn (iterator module only: no validation, no
# local-zone answers for ZONE), forwarding "." to each UPSTREAM (ADDR@PORT).
# EXTRA holds more "server:" lines (one per line, may be empty).  Sets
# UB_PID, UB_DIR; the PID joins T_PIDS.  Returns 1 if it does not start.
start_unbound() {
	local addr=$1 port=$2 threads=$3 zone=$4 extra=$5 up
	shift 5
	UB_DIR="$T_TMP/unbound.$port"
	mkdir -p "$UB_DIR"
	{
		cat <<EOF
server:
	interface: $addr@$port
	port: $port
	do-ip6: no
	do-daemonize: no
	username: ""
	chroot: ""
	directory: "$UB_DIR"
	pidfile: "$UB_DIR/unbound.pid"
	use-syslog: no
	logfile: ""
	verbosity: 0
	num-threads: $threads
	# A forwarder like stubborn: no validation, no local-zone answers.
	module-config: "iterator"
	do-not-query-localhost: no
	local-zone: "$zone." nodefault
	access-control: 127.0.0.0/8 allow
	prefetch: no
EOF
		[ -z "$extra" ] || printf '%s\n' "$extra"
		cat <<EOF
remote-control:
	control-enable: no
forward-zone:
	name: "."
EOF
		for up in "$@"; do printf '\tforward-addr: %s\n' "$up"; done
	} >"$UB_DIR/unbound.conf"
	bench_exec unbound -d -c "$UB_DIR/unbound.conf" 2>"$UB_DIR/err" &
	UB_PID=$!
	T_PIDS="$T_PIDS $UB_PID"
	wait_dns "$addr" "$port" "$UB_PID" || { cat "$UB_DIR/err"; return 1; }
}

unbound_version() {
	unbound -V 2>/dev/null | sed -n 's/^Version //p' | head -n1
}

# start_dnsmasq ADDR PORT UPSTREAM CACHE-SIZE [options]: dnsmasq forwarding
# to UPSTREAM (ADDR#PORT), reading no configuration file, hosts file or
# resolv.conf.  Sets DM_PID, DM_ERR; returns 1 if it does not start.
start_dnsmasq() {
	local addr=$1 port=$2 up=$3 size=$4
	shift 4
	DM_ERR="$T_TMP/dnsmasq.$port.err"
	bench_exec dnsmasq --no-resolv --no-hosts --conf-file=/dev/null \
	    --pid-file= --listen-address="$addr" --bind-interfaces \
	    --port="$port" --server="$up" --cache-size="$size" "$@" \
	    2>"$DM_ERR" &
	DM_PID=$!
	T_PIDS="$T_PIDS $DM_PID"
	wait_dns "$addr" "$port" "$DM_PID" || { cat "$DM_ERR"; return 1; }
}

dnsmasq_version() {
	dnsmasq --version | head -n1 | awk '{ print $3 }'
}

# start_dnsdist ADDR PORT UPSTREAM CACHE-ENTRIES [lua lines]: dnsdist with
# one UDP/TCP listener, one backend UPSTREAM (ADDR:PORT) and a packet cache.
# Sets DD_PID, DD_OUT; returns 1 if it does not start.
start_dnsdist() {
	local addr=$1 port=$2 up=$3 size=$4 conf
	shift 4
	conf="$T_TMP/dnsdist.$port.conf"
	DD_OUT="$T_TMP/dnsdist.$port.out"
	{
		cat <<EOF
setSecurityPollSuffix("")
setLocal("$addr:$port", {reusePort=false})
newServer({address="$up"})
pc = newPacketCache($size)
getPool(""):setCache(pc)
EOF
		for l in "$@"; do printf '%s\n' "$l"; done
	} >"$conf"
	bench_exec dnsdist --supervised --disable-syslog -C "$conf" \
	    >"$DD_OUT" 2>&1 &
	DD_PID=$!
	T_PIDS="$T_PIDS $DD_PID"
	wait_dns "$addr" "$port" "$DD_PID" || { cat "$DD_OUT"; return 1; }
}

dnsdist_version() {
	dnsdist --version 2>/dev/null | head -n1 | awk '{ print $2 }'
}
