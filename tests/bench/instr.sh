#!/bin/bash
# `make bench-instr`: user-space instructions per cache miss and per cache
# hit of the stubborn daemon, counted by valgrind's callgrind (exact and
# repeatable where timings are not; `perf stat -e instructions` is not
# available in every VM).  The kernel's share (recvmmsg, sendmmsg, epoll)
# is not counted.
#
# stubborn runs with one worker under callgrind, forwarding to build/fakeup
# on 127.0.0.1.  After a warm-up, the counters are zeroed and dumped around
# each phase:
#   misses: INSTR_QUERIES names never asked before (one upstream query each);
#   hits:   the same names again, all in the cache;
#   echo:   (a reference) build/udpecho under callgrind, the same load.
# The load is dnsperf sending each name once (-n 1), at most INSTR_OUTSTANDING
# queries outstanding, so under valgrind's slowdown the server is saturated
# and reads full batches, as under a CPU quota.  Prints the instructions per
# query of each phase and the top functions (self cost), and writes
# $BUILD/bench/instr.txt and the callgrind files next to it.
#
# Then the system calls per query, the kernel's share: the same phases
# against a stubborn without valgrind, traced with strace -c.
#
# Knobs: INSTR_QUERIES (20000), INSTR_OUTSTANDING (64), INSTR_TOP (25);
# BUILD (build) names the binaries, so another build can be measured with
# this script.
# Everything listens on 127.0.0.1; nothing is sent anywhere else.
[ -n "${BASH_VERSION:-}" ] || exec bash "$0" "$@"

. "$(dirname "$0")/lib.sh"
# shellcheck disable=SC2034  # T_NAME is used by lib.sh
T_NAME=instr
N=${INSTR_QUERIES:-20000}
OUTSTANDING=${INSTR_OUTSTANDING:-64}
TOP=${INSTR_TOP:-25}
OUT=$BUILD/bench
UDPECHO="$BUILD/udpecho"
# Steps whose inclusive cost is printed per query.
WATCH="listen.c:udp_read_cb xnet.c:udp_read_cb pipeline_process cache_lookup engine_query race_start msg_classify finish_answer cache_store malloc free"

die() { echo "bench-instr: $*" >&2; exit 1; }
for v in N OUTSTANDING TOP; do
	case ${!v} in '' | *[!0-9]*) die "$v must be a number" ;; esac
done
[ "$N" -ge 100 ] && [ "$N" -le 1000000 ] || die "INSTR_QUERIES must be 100..1000000"
for tool in valgrind callgrind_control callgrind_annotate dnsperf; do
	command -v "$tool" >/dev/null || die "$tool is not installed (make bench-instr installs it)"
done
[ -x "$STUBBORN" ] && [ -x "$FAKEUP" ] && [ -x "$UDPECHO" ] || die "build first (make all)"
mkdir -p "$OUT" || exit 1
rm -f "$OUT"/callgrind.* "$OUT/instr.txt"

# The upstream: answers every name, no query log, no valgrind.
start_fakeup up --zone-ttl 86400 || die "fakeup did not start"

# cg_start NAME CMD...: CMD under callgrind, collecting from the start;
# sets CG_PID.  Dumps go to $OUT/callgrind.NAME.<n>.
cg_start() {
	local name=$1
	shift
	valgrind -q --tool=callgrind --callgrind-out-file="$OUT/callgrind.$name" \
	    "$@" 2>"$T_TMP/$name.err" &
	CG_PID=$!
	T_PIDS="$T_PIDS $CG_PID"
}

# load ADDR PORT FILE: sends every name of FILE once; prints
# "completed lost".
load() {
	local o="$T_TMP/perf.out"
	timeout 600 dnsperf -s "$1" -p "$2" -d "$3" -n 1 -c 4 -q "$OUTSTANDING" \
	    -t 10 >"$o" 2>&1
	printf '%s %s\n' \
	    "$(sed -n 's/^ *Queries completed: *\([0-9]*\).*/\1/p' "$o")" \
	    "$(sed -n 's/^ *Queries lost: *\([0-9]*\).*/\1/p' "$o")"
}

# phase PID NAME ADDR PORT FILE: zero, load, dump; appends
# "NAME completed lost instructions" to $T_TMP/phases.
phase() {
	local pid=$1 name=$2 cl f ir
	callgrind_control -z "$pid" >/dev/null 2>&1 || die "callgrind_control -z failed"
	cl=$(load "$3" "$4" "$5")
	callgrind_control -d "$name" "$pid" >/dev/null 2>&1 || die "callgrind_control -d failed"
	# The dump is written by the process; wait for it to appear.
	for _ in $(seq 1 100); do
		f=$(grep -l "^desc: Trigger: Client Request: $name\$\|^desc: Trigger: .*$name" \
		    "$OUT"/callgrind.* 2>/dev/null | head -n1)
		[ -n "$f" ] && break
		sleep 0.1
	done
	[ -n "$f" ] || die "no callgrind dump for $name"
	mv "$f" "$OUT/callgrind.$name.out"
	ir=$(sed -n 's/^summary: *\([0-9]*\).*/\1/p' "$OUT/callgrind.$name.out")
	[ -n "$ir" ] || ir=$(sed -n 's/^totals: *\([0-9]*\).*/\1/p' "$OUT/callgrind.$name.out")
	echo "$name $cl ${ir:-0}" >>"$T_TMP/phases"
}

awk -v n="$N" 'BEGIN { for (i = 1; i <= n; i++) printf "m%d.instr.test A\n", i }' >"$T_TMP/names"
awk 'BEGIN { for (i = 1; i <= 2000; i++) printf "w%d.instr.test A\n", i }' >"$T_TMP/warm"
: >"$T_TMP/phases"

# ---- stubborn ------------------------------------------------------------------
SP=$(pick_port) || die "no free port"
cg_start stubborn "$STUBBORN" --listen "127.0.0.1:$SP" \
    --upstream "127.0.0.1:$FK_PORT_up" --workers 1 --cache-size 512M \
    --user root --log-level warn \
    --client-qps 1000000 --client-qps-cookie 1000000 \
    --upstream-qps 1000000 --upstream-max-outstanding 100000 \
    --ratelimit-loopback yes
SLOW=20 wait_dns 127.0.0.1 "$SP" "$CG_PID" || die "stubborn did not start: $(cat "$T_TMP/stubborn.err")"
STUB_CG=$CG_PID
# Warm-up: the first misses and hits allocate what is allocated once.
load 127.0.0.1 "$SP" "$T_TMP/warm" >/dev/null
load 127.0.0.1 "$SP" "$T_TMP/warm" >/dev/null
phase "$STUB_CG" misses 127.0.0.1 "$SP" "$T_TMP/names"
phase "$STUB_CG" hits 127.0.0.1 "$SP" "$T_TMP/names"
kill -TERM "$STUB_CG"
wait_pid "$STUB_CG" 60

# ---- system calls per query: the kernel's share, which callgrind does not see ----
# The same load against a stubborn without valgrind, every thread traced
# by strace -c during the phase (slower, so the batches may differ).
# sys_phase PID NAME FILE: appends "NAME total name=calls ..." to
# $T_TMP/sys.
sys_phase() {
	local pid=$1 name=$2 args="" t sp cl
	for t in /proc/"$pid"/task/*; do args="$args -p ${t##*/}"; done
	# shellcheck disable=SC2086
	strace -c -f -o "$T_TMP/strace.$name" $args 2>/dev/null &
	sp=$!
	sleep 1 # strace attaches to every thread before the load starts
	cl=$(load 127.0.0.1 "$NP" "$3")
	kill -INT "$sp"
	wait "$sp" 2>/dev/null
	awk -v n="$name" -v q="${cl%% *}" '
		$NF == "total" { total = $4 }
		$1 ~ /^[0-9.]+$/ && NF >= 5 && $NF != "total" {
			list = list sprintf(" %s %.2f", $NF, q ? $4 / q : 0)
		}
		END { printf "%s %.2f%s\n", n, q ? total / q : 0, list }' \
	    "$T_TMP/strace.$name" >>"$T_TMP/sys"
}
: >"$T_TMP/sys"
if command -v strace >/dev/null; then
	NP=$(pick_port) || die "no free port"
	"$STUBBORN" --listen "127.0.0.1:$NP" --upstream "127.0.0.1:$FK_PORT_up" \
	    --workers 1 --cache-size 512M --user root --log-level warn \
	    --client-qps 1000000 --client-qps-cookie 1000000 \
	    --upstream-qps 1000000 --upstream-max-outstanding 100000 \
	    --ratelimit-loopback yes 2>"$T_TMP/native.err" &
	NPID=$!
	T_PIDS="$T_PIDS $NPID"
	wait_dns 127.0.0.1 "$NP" "$NPID" || die "stubborn did not start: $(cat "$T_TMP/native.err")"
	load 127.0.0.1 "$NP" "$T_TMP/warm" >/dev/null
	load 127.0.0.1 "$NP" "$T_TMP/warm" >/dev/null
	sys_phase "$NPID" misses "$T_TMP/names"
	sys_phase "$NPID" hits "$T_TMP/names"
	kill -TERM "$NPID"
	wait_pid "$NPID" 10
fi

# ---- the echo, for reference ------------------------------------------------------
EP=$(pick_port) || die "no free port"
cg_start echo "$UDPECHO" --listen "127.0.0.1:$EP"
for _ in $(seq 1 100); do
	ss -Hlnu "src 127.0.0.1:$EP" | grep -q . && break
	sleep 0.1
done
load 127.0.0.1 "$EP" "$T_TMP/warm" >/dev/null
phase "$CG_PID" echo 127.0.0.1 "$EP" "$T_TMP/names"
kill -TERM "$CG_PID"
wait_pid "$CG_PID" 60
rm -f "$OUT"/callgrind.stubborn "$OUT"/callgrind.echo "$OUT"/callgrind.stubborn.[0-9]* \
    "$OUT"/callgrind.echo.[0-9]*

# ---- report ---------------------------------------------------------------------
# top FILE: the TOP functions by self cost, as a share of the phase, and the
# cost by object file (stubborn, libc, libevent, ldns, ...).  Functions still
# on the stack when the counters were zeroed (the thread's entry, the event
# loop) show their callees' cost as their own: left out.
top() {
	callgrind_annotate --inclusive=no --threshold=100 --auto=no "$1" 2>/dev/null |
	    awk -v top="$TOP" '
		/PROGRAM TOTALS/ { t = $1; gsub(",", "", t); t += 0; next }
		t > 0 && $1 ~ /^[0-9,]+$/ && NF >= 3 {
			ir = $1; gsub(",", "", ir); ir += 0
			if (ir > 0.95 * t) next
			fn = $0; sub(/^ *[0-9,]+ +\([^)]*\) +/, "", fn)
			obj = "stubborn"
			if (match(fn, /\[[^]]*\]$/)) {
				obj = substr(fn, RSTART + 1, RLENGTH - 2); sub(/.*\//, "", obj)
				sub(/\.so.*/, "", obj)
				fn = substr(fn, 1, RSTART - 2)
			} else if (fn !~ /^(resolver|include|tools)\//) obj = "?"
			byobj[obj] += ir
			if (++shown <= top) printf "  %5.1f%%  %s\n", 100 * ir / t, fn
		}
		END {
			n = 0; for (o in byobj) keys[++n] = o
			for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++)
				if (byobj[keys[j]] > byobj[keys[i]]) { x = keys[i]; keys[i] = keys[j]; keys[j] = x }
			printf "  by object:"
			for (i = 1; i <= n && i <= 6; i++) printf " %s %.1f%%", keys[i], 100 * byobj[keys[i]] / t
			printf "\n"
		}'
}
# incl FILE FUNCTION...: inclusive cost of each function per query.
incl() {
	local f=$1 q=$2
	shift 2
	callgrind_annotate --inclusive=yes --threshold=100 --auto=no "$f" 2>/dev/null |
	    awk -v q="$q" -v want="$*" '
		BEGIN { n = split(want, w, " "); for (i = 1; i <= n; i++) order[w[i]] = i }
		$1 ~ /^[0-9,]+$/ && NF >= 3 {
			ir = $1; gsub(",", "", ir); ir += 0
			base = $0; sub(/^ *[0-9,]+ +\([^)]*\) +/, "", base)
			sub(/ .*$/, "", base); sub(/^.*\//, "", base)
			fn = base; sub(/^.*:/, "", fn)
			if ((base in order) && !(base in got)) got[base] = ir
			else if ((fn in order) && !(fn in got)) got[fn] = ir
		}
		END {
			printf "  inclusive per query:"
			for (i = 1; i <= n; i++) if (w[i] in got) printf " %s %.0f", w[i], q ? got[w[i]] / q : 0
			printf "\n"
		}'
}
{
	echo "# instructions per query (user space, callgrind), $(date -u '+%Y-%m-%d %H:%M UTC')"
	rev=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo ?)
	git -C "$ROOT" diff --quiet HEAD 2>/dev/null || rev="$rev+changes"
	case $STUBBORN in "$ROOT"/*) ;; *) rev="not this tree's" ;; esac
	echo "# $("$STUBBORN" --version 2>&1 | head -n1) ($STUBBORN, commit $rev)"
	echo "# $N queries per phase, dnsperf -n 1 -c 4 -q $OUTSTANDING; stubborn --workers 1 against fakeup"
	printf '%-8s %10s %6s %16s %12s\n' phase completed lost instructions "per query"
	while read -r name done lost ir; do
		awk -v n="$name" -v d="${done:-0}" -v l="${lost:-?}" -v ir="$ir" 'BEGIN {
			printf "%-8s %10d %6s %16d %12.0f\n", n, d, l, ir, d ? ir / d : 0 }'
	done <"$T_TMP/phases"
	if [ -s "$T_TMP/sys" ]; then
		echo
		echo "# system calls per query (strace -c, stubborn without valgrind)"
		while read -r name total rest; do
			echo "$name: $total:$(echo " $rest" | awk '{ for (i = 1; i < NF; i += 2) printf " %s %s", $i, $(i + 1) }')"
		done <"$T_TMP/sys"
	else
		echo
		echo "# system calls per query: SKIP (strace is not installed)"
	fi
	for name in misses hits echo; do
		echo
		echo "## $name: top functions by self cost"
		top "$OUT/callgrind.$name.out"
		q=$(awk -v n="$name" '$1 == n { print $2 }' "$T_TMP/phases")
		incl "$OUT/callgrind.$name.out" "${q:-0}" $WATCH
	done
} | tee "$OUT/instr.txt"
awk '$3 != 0 && $3 != "" { bad = 1 } END { exit bad }' "$T_TMP/phases" ||
	echo "bench-instr: WARNING: queries were lost (see the table); the counts include their retries"
exit 0
