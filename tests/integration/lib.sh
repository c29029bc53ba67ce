# Shared helpers for the black-box integration tests (bash).  Each t_*.sh
# sources this file, starts what it needs on 127.0.0.1 ports it picks, and
# stops everything by PID on exit.  Results are "ok - ..." / "not ok - ..."
# lines; the exit status is the number of failures (capped).
#
# Nothing here sends traffic to any address outside 127.0.0.0/8 and ::1.

set -u
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BUILD=${BUILD:-build}
case "$BUILD" in /*) ;; *) BUILD="$ROOT/$BUILD" ;; esac
STUBBORN="$BUILD/stubborn"
FAKEUP="$BUILD/fakeup"
VALGRIND=${VALGRIND:-}
T_TMP=$(mktemp -d /tmp/stubborn-it.XXXXXX)
# stubborn drops to nobody after binding: its files (snapshots, the
# control socket) live here too.
chmod 1777 "$T_TMP"
T_PIDS=""
T_FAILS=0
T_PASSES=0
T_NAME=$(basename "$0" .sh)

# Valgrind makes stubborn ~30x slower: scale the waits.
if [ -n "$VALGRIND" ]; then SLOW=10; else SLOW=1; fi

t_cleanup() {
	for p in $T_PIDS; do kill -TERM "$p" 2>/dev/null; done
	for _ in $(seq 1 20); do
		alive=""
		for p in $T_PIDS; do kill -0 "$p" 2>/dev/null && alive=1; done
		[ -z "$alive" ] && break
		sleep 0.1
	done
	for p in $T_PIDS; do kill -KILL "$p" 2>/dev/null; done
	wait 2>/dev/null
	rm -rf "$T_TMP"
}
trap t_cleanup EXIT

ok() { T_PASSES=$((T_PASSES + 1)); echo "ok - $T_NAME: $*"; }
not_ok() { T_FAILS=$((T_FAILS + 1)); echo "not ok - $T_NAME: $*"; }

# check "description" command...: ok if the command succeeds.
check() {
	local d=$1; shift
	if "$@"; then ok "$d"; else not_ok "$d"; fi
}

# expect_eq "description" expected actual
expect_eq() {
	if [ "$2" = "$3" ]; then ok "$1"; else not_ok "$1 (expected '$2', got '$3')"; fi
}

# expect_match "description" regex text
expect_match() {
	if printf '%s' "$3" | grep -Eq -- "$2"; then ok "$1"; else
		not_ok "$1 (no match for /$2/ in: $(printf '%s' "$3" | head -c 400))"; fi
}

t_done() {
	echo "# $T_NAME: $T_PASSES passed, $T_FAILS failed"
	[ "$T_FAILS" -gt 250 ] && T_FAILS=250
	exit "$T_FAILS"
}

# A free port on 127.0.0.1 for both UDP and TCP. Any socket on the port
# counts, not only listeners: a TIME_WAIT or established TCP socket left by
# a server that stopped makes a bind without SO_REUSEADDR fail. Files run
# side by side (run.sh JOBS) share T_PORT_DIR, where a port is claimed with
# an atomic mkdir, so two of them never pick the same port between the
# check and the bind.
pick_port() {
	local p
	for _ in $(seq 1 200); do
		# Below the ephemeral range (32768+), where connected sockets of
		# clients come and go.
		p=$((20000 + RANDOM % 12700))
		if ss -Hanu "sport = :$p" | grep -q . ||
		    ss -Hant "sport = :$p" | grep -q .; then
			continue
		fi
		if [ -n "${T_PORT_DIR:-}" ] && ! mkdir "$T_PORT_DIR/$p" 2>/dev/null; then
			continue
		fi
		echo "$p"; return 0
	done
	return 1
}

# Waits until addr:port listens on UDP and TCP; gives up early if the
# process pid (optional) has exited.
wait_dns() {
	local addr=$1 port=$2 pid=${3:-} tries=$((50 * SLOW))
	for _ in $(seq 1 "$tries"); do
		if ss -Hlnu "src $addr:$port" | grep -q . &&
		    ss -Hlnt "src $addr:$port" | grep -q .; then return 0; fi
		if [ -n "$pid" ] && ! kill -0 "$pid" 2>/dev/null; then return 1; fi
		sleep 0.1
	done
	return 1
}

# Waits at most $2 seconds for pid $1 (a child of this shell) to exit and
# sets WAIT_RC to its status, or to "timeout" after killing it.
wait_pid() {
	local pid=$1 limit=$2
	for _ in $(seq 1 $((limit * 10))); do
		# An exited child stays a zombie until waited for.
		if ! kill -0 "$pid" 2>/dev/null ||
		    grep -q '^State:.*Z' "/proc/$pid/status" 2>/dev/null; then
			wait "$pid"; WAIT_RC=$?
			return 0
		fi
		sleep 0.1
	done
	kill -KILL "$pid" 2>/dev/null
	wait "$pid" 2>/dev/null
	WAIT_RC=timeout
}

# start_fakeup NAME [extra args]: sets FK_PORT_NAME, FK_CTL_NAME, FK_LOG_NAME.
start_fakeup() {
	local name=$1; shift
	local port ctl
	port=$(pick_port); ctl=$(pick_port)
	"$FAKEUP" --listen "127.0.0.1:$port" --control "127.0.0.1:$ctl" \
	    --log "$T_TMP/fk-$name.log" "$@" 2>"$T_TMP/fk-$name.err" &
	T_PIDS="$T_PIDS $!"
	eval "FK_PORT_$name=$port FK_CTL_$name=$ctl FK_PID_$name=$!"
	eval "FK_LOG_$name=$T_TMP/fk-$name.log"
	: >"$T_TMP/fk-$name.log"
	wait_dns 127.0.0.1 "$port" $! || { echo "fakeup $name did not start"; return 1; }
}

# fk_ctl NAME "command": one control command, prints the answer.
fk_ctl() {
	local ctl
	eval "ctl=\$FK_CTL_$1"
	exec 9<>"/dev/tcp/127.0.0.1/$ctl" || return 1
	printf '%s\n' "$2" >&9
	timeout 2 head -n1 <&9
	exec 9<&-
}

# fk_count NAME [regex]: queries the fake upstream logged (matching regex).
fk_count() {
	local log
	eval "log=\$FK_LOG_$1"
	if [ $# -ge 2 ]; then grep -Eci -- "$2" "$log"; else wc -l <"$log" | tr -d ' '; fi
}

# start_stubborn [args]: on 127.0.0.1:STUB_PORT; sets STUB_PID, STUB_LOG.
start_stubborn() {
	STUB_PORT=$(pick_port)
	STUB_LOG="$T_TMP/stubborn.$STUB_PORT.log"
	if [ -n "$VALGRIND" ]; then
		valgrind -q --vgdb=no --error-exitcode=99 --leak-check=full \
		    --errors-for-leak-kinds=definite,indirect \
		    --log-file="$T_TMP/valgrind.$STUB_PORT.log" \
		    "$STUBBORN" --listen "127.0.0.1:$STUB_PORT" --workers 2 \
		    "$@" 2>"$STUB_LOG" &
	else
		"$STUBBORN" --listen "127.0.0.1:$STUB_PORT" --workers 2 "$@" \
		    2>"$STUB_LOG" &
	fi
	STUB_PID=$!
	T_PIDS="$T_PIDS $STUB_PID"
	wait_dns 127.0.0.1 "$STUB_PORT" "$STUB_PID" || { echo "stubborn did not start:"; cat "$STUB_LOG"; return 1; }
	# The sockets listen from the first moments; the control socket, the
	# workers and the signal handlers come after the privilege drop, and
	# the "listening" line (with READY=1) says all of it is there.
	local i
	for i in $(seq 1 $((100 * SLOW))); do
		grep -q 'msg="listening' "$STUB_LOG" 2>/dev/null && return 0
		kill -0 "$STUB_PID" 2>/dev/null || break
		sleep 0.1
	done
	echo "stubborn did not say it serves:"; cat "$STUB_LOG"; return 1
}

# stop_stubborn: SIGTERM, expect exit 0 (and a clean valgrind report).
stop_stubborn() {
	local rc
	kill -TERM "$STUB_PID"
	wait_pid "$STUB_PID" $((10 * SLOW)); rc=$WAIT_RC
	expect_eq "stubborn exits 0 on SIGTERM" 0 "$rc"
	if [ -n "$VALGRIND" ]; then
		if [ -s "$T_TMP/valgrind.$STUB_PORT.log" ]; then
			not_ok "valgrind clean"; cat "$T_TMP/valgrind.$STUB_PORT.log"
		else
			ok "valgrind clean"
		fi
	fi
}

# wait_log FILE REGEX [COUNT]: waits (up to 10 s, times SLOW) until FILE
# has COUNT (default 1) lines matching REGEX; 1 if it never does.
wait_log() {
	local want=${3:-1}
	for _ in $(seq 1 $((100 * SLOW))); do
		[ "$(grep -Ec -- "$2" "$1" 2>/dev/null)" -ge "$want" ] && return 0
		sleep 0.1
	done
	return 1
}

# q NAME TYPE [dig options]: dig against stubborn, short timeouts.
q() {
	local n=$1 t=$2; shift 2
	dig @127.0.0.1 -p "$STUB_PORT" "$n" "$t" +tries=1 +time=$((4 * SLOW)) "$@" 2>&1
}

# Status word of a dig output ("NOERROR", "SERVFAIL", ...).
dig_status() { sed -n 's/.*status: \([A-Z]*\),.*/\1/p' | head -n1; }
