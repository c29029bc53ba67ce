#!/bin/bash
# `make bench`: stubborn against what users run today as a node-local cache
# (Unbound, dnsdist, dnsmasq), measured with dnsperf the way users compare
# them, each server under the same CPU quota, with a UDP echo responder as
# the ceiling.  See tests/bench/README.md.
#
# Every server has one worker thread, a large cache, no DNSSEC validation
# and no rate limit; all forward to the same fakeup upstream, which has no
# CPU quota.  Measured, interleaved (the order rotates each round), the
# median of BENCH_ROUNDS runs:
#   a. capacity at BENCH_QUOTA% of one core (cgroup cpu quota): cache hits,
#      cache misses (every query a name never asked before), mixed;
#   b. p50 and p99 latency at a fixed rate that every server sustains;
#   c. the mixed load: Zipf-like popularity, ~90% hits;
#   d. memory per cached entry after caching BENCH_NAMES names;
#   e. scaling: stubborn with 2 workers at twice the quota, against the
#      echo with 2 threads (2 SO_REUSEPORT sockets) at twice the quota.
# Writes $BUILD/bench/results.md, runs.tsv and PNG charts.
#
# Knobs: BENCH_ROUNDS (3), BENCH_SECONDS (5 per run), BENCH_QUOTA (25, % of
# one core), BENCH_NAMES (100000 cached names), BENCH_HIT_NAMES (10000),
# BENCH_MISS_FRAC (0.1), BENCH_FILL_RATE (20000 qps), BENCH_RATE_HITS and
# BENCH_RATE_MIXED (default: a quarter of the lowest median capacity of the four
# servers, rounded down to 500), BENCH_PEERS ("unbound dnsdist dnsmasq").
# Everything listens on 127.0.0.0/8; nothing is sent anywhere else.
[ -n "${BASH_VERSION:-}" ] || exec bash "$0" "$@"

. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/lib_cg.sh"
# shellcheck disable=SC2034  # T_NAME is used by lib.sh
T_NAME=bench
TOOL="python3 $ROOT/tests/bench/benchtool.py"
UDPECHO="$BUILD/udpecho"

ROUNDS=${BENCH_ROUNDS:-3}
SECS=${BENCH_SECONDS:-5}
QUOTA=${BENCH_QUOTA:-25}
NAMES=${BENCH_NAMES:-100000}
HIT_NAMES=${BENCH_HIT_NAMES:-10000}
MISS_FRAC=${BENCH_MISS_FRAC:-0.1}
FILL_RATE=${BENCH_FILL_RATE:-20000}
PEERS=${BENCH_PEERS:-unbound dnsdist dnsmasq}
OUT=$BUILD/bench
# 16 client sockets: SO_REUSEPORT spreads them evenly enough over 2 workers.
PERF_OPTS="-c 16 -T 2 -t 2"
# Names per file of never-asked names: more than the echo ceiling sends.
MISS_LINES=$((SECS * 60000))

die() { echo "bench: $*" >&2; exit 1; }
for v in ROUNDS SECS QUOTA NAMES HIT_NAMES FILL_RATE; do
	case ${!v} in '' | *[!0-9]*) die "BENCH_$v must be a number" ;; esac
done
[ "$SECS" -ge 1 ] && [ "$SECS" -le 60 ] || die "BENCH_SECONDS must be 1..60"
[ "$ROUNDS" -ge 1 ] && [ "$ROUNDS" -le 20 ] || die "BENCH_ROUNDS must be 1..20"
[ "$QUOTA" -ge 5 ] && [ "$QUOTA" -le 50 ] || die "BENCH_QUOTA must be 5..50"
[ "$HIT_NAMES" -le "$NAMES" ] && [ "$NAMES" -le 1000000 ] ||
	die "BENCH_HIT_NAMES <= BENCH_NAMES <= 1000000"
[ "$ROUNDS" -ge 3 ] || echo "bench: WARNING: $ROUNDS round(s): medians need >= 3"
for tool in dnsperf python3 unbound dnsdist dnsmasq; do
	command -v "$tool" >/dev/null || die "$tool is not installed (make bench installs it)"
done
[ -x "$STUBBORN" ] && [ -x "$FAKEUP" ] && [ -x "$UDPECHO" ] || die "build first (make all)"
mkdir -p "$OUT" || exit 1
rm -f "$OUT"/results.md "$OUT"/*.png "$OUT"/*.dat "$OUT"/runs.tsv "$OUT"/mem.tsv
T0=$(date +%s)

# ---- CPU quota (tests/bench/lib_cg.sh) ----------------------------------------
cg_setup
# The integration helpers' EXIT trap stops every PID in T_PIDS; the groups
# can go once their processes have.
trap 't_cleanup; cg_cleanup' EXIT
trap 'exit 130' INT TERM

# ---- the servers --------------------------------------------------------------
declare -A ADDR PORT PID CG NOTE RSS0
ticks() { awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$1/stat" 2>/dev/null; }
rss_kib() { awk '$1 == "VmRSS:" { print $2 }' "/proc/$1/status"; }
fk_queries() { fk_ctl up stats | awk '{ print $2 }'; }

# The upstream, without a query log (a write per query would cost more
# than the answer): answers every name, TTL 1 day.
FK_PORT_up=$(pick_port) FK_CTL_up=$(pick_port)
"$FAKEUP" --listen "127.0.0.1:$FK_PORT_up" --control "127.0.0.1:$FK_CTL_up" \
    --zone-ttl 86400 2>"$T_TMP/fakeup.err" &
FK_PID=$!
T_PIDS="$T_PIDS $FK_PID"
wait_dns 127.0.0.1 "$FK_PORT_up" "$FK_PID" || die "fakeup did not start: $(cat "$T_TMP/fakeup.err")"

# start_target NAME ADDR: starts server NAME on ADDR in its own group.
start_target() {
	local t=$1 a=$2 p
	p=$(pick_port) || return 1
	CG[$t]=$(cg_new "$t") || return 1
	cg_quota "${CG[$t]}" max
	BENCH_CG=${CG[$t]}
	case $t in
	echo | echo-2t)
		local n=1
		[ "$t" = echo-2t ] && n=2
		bench_exec "$UDPECHO" --listen "$a:$p" --threads "$n" 2>"$T_TMP/$t.err" &
		PID[$t]=$!
		T_PIDS="$T_PIDS $!"
		# udpecho has no TCP socket, so wait for UDP only.
		for _ in $(seq 1 50); do
			ss -Hlnu "src $a:$p" | grep -q . && break
			sleep 0.1
		done
		NOTE[$t]="tools/udpecho.c: recvfrom, set QR, sendto; one thread"
		[ "$n" = 2 ] && NOTE[$t]="tools/udpecho.c --threads 2: recvfrom, set QR, sendto; two threads, each on its own SO_REUSEPORT socket (as stubborn's workers)"
		;;
	stubborn | stubborn-2w)
		local w=1
		[ "$t" = stubborn-2w ] && w=2
		bench_exec "$STUBBORN" --listen "$a:$p" --upstream "127.0.0.1:$FK_PORT_up" \
		    --workers "$w" --cache-size 512M --user root --log-level warn \
		    --client-qps 1000000 --client-qps-cookie 1000000 \
		    --upstream-qps 1000000 --upstream-max-outstanding 100000 \
		    --ratelimit-loopback yes 2>"$T_TMP/$t.err" &
		PID[$t]=$!
		T_PIDS="$T_PIDS $!"
		wait_dns "$a" "$p" "${PID[$t]}" || { cat "$T_TMP/$t.err"; return 1; }
		NOTE[$t]="$("$STUBBORN" --version): --workers $w --cache-size 512M; limits LIFTED for the run: --client-qps 1000000 --client-qps-cookie 1000000 --upstream-qps 1000000 --upstream-max-outstanding 100000 --ratelimit-loopback yes (the limiter runs for 127.0.0.1 as for any client, but cannot trigger)"
		;;
	unbound)
		start_unbound "$a" "$p" 1 test "\
	msg-cache-size: 170m
	rrset-cache-size: 340m
	qname-minimisation: no
	ratelimit: 0
	ip-ratelimit: 0
	serve-expired: no" "127.0.0.1@$FK_PORT_up" || return 1
		PID[$t]=$UB_PID
		NOTE[$t]="unbound $(unbound_version): num-threads 1, module-config iterator (no validator), msg-cache 170m + rrset-cache 340m, ratelimit 0, prefetch no, forward-zone . to the upstream, no trust anchor, no remote control"
		;;
	dnsdist)
		start_dnsdist "$a" "$p" "127.0.0.1:$FK_PORT_up" 1000000 || return 1
		PID[$t]=$DD_PID
		NOTE[$t]="dnsdist $(dnsdist_version): one listener (reusePort false), one backend (its one responder thread), packet cache 1000000 entries, setSecurityPollSuffix(\"\"), default health checks (a query a second to the upstream)"
		;;
	dnsmasq)
		start_dnsmasq "$a" "$p" "127.0.0.1#$FK_PORT_up" 1000000 \
		    --no-daemon --dns-forward-max=10000 || return 1
		PID[$t]=$DM_PID
		NOTE[$t]="dnsmasq $(dnsmasq_version): --no-daemon (single process), --cache-size=1000000 ($(grep -o 'cachesize [0-9]*' "$DM_ERR" | head -n1 | sed 's/cachesize/accepted: cachesize/'); it warns above 10000 but does not cap), --dns-forward-max=10000 (default 150)"
		;;
	esac
	BENCH_CG=""
	ADDR[$t]=$a PORT[$t]=$p
	sleep 0.5
	RSS0[$t]=$(rss_kib "${PID[$t]}")
}

TARGETS="echo stubborn stubborn-2w echo-2t"
start_target echo 127.0.0.10 || die "udpecho did not start"
start_target echo-2t 127.0.0.9 || die "udpecho (2 threads) did not start"
start_target stubborn 127.0.0.11 || die "stubborn did not start"
start_target stubborn-2w 127.0.0.12 || die "stubborn (2 workers) did not start"
n=13
for p in $PEERS; do
	if start_target "$p" "127.0.0.$n"; then
		TARGETS="$TARGETS $p"
	else
		echo "bench: $p did not start; left out"
	fi
	n=$((n + 1))
done
# X-2x: the same process as X, at twice the quota (scaling references).
for t in echo stubborn; do
	PID[$t-2x]=${PID[$t]} CG[$t-2x]=${CG[$t]} ADDR[$t-2x]=${ADDR[$t]} PORT[$t-2x]=${PORT[$t]}
done
SERVERS=$(for t in $TARGETS; do case $t in echo | echo-2t | stubborn-2w) ;; *) printf '%s ' "$t" ;; esac; done)

# ---- machine facts -------------------------------------------------------------
FACTS="$OUT/facts.md"
up_quota=$(quota_of "$FK_PID") my_quota=$(quota_of $$)
{
	echo "## Machine and set-up"
	echo
	echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC'); kernel $(uname -r); $(nproc) CPUs ($(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)); $(awk '/^MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo) RAM"
	echo "- load average before the run: $(cut -d' ' -f1-3 /proc/loadavg) (the machine may be shared: see the idle column)"
	echo "- CPU quota: $CG_NOTE"
	echo "- quota per server: ${QUOTA}% of one core (cpu.max \"$((QUOTA * 1000)) 100000\"), one worker/thread each; scaling runs: stubborn 2 workers and the echo with 2 threads at $((2 * QUOTA))%"
	echo "- dnsperf $(dnsperf -h 2>&1 | sed -n 's/^Version //p' | head -n1) ($PERF_OPTS, no EDNS, no quota: $my_quota), $ROUNDS rounds of ${SECS} s per run, target order rotated each round"
	echo "- upstream: fakeup (tools/fakeup.c, synthesized answers, TTL 86400, one thread) on 127.0.0.1, no CPU quota (verified: $up_quota)"
	for t in $TARGETS; do echo "- $t: ${NOTE[$t]}"; done
	echo "- query names: hits are $HIT_NAMES cached names (A); misses are names never asked before (A), fresh for every run; mixed draws from the $NAMES cached names with weight 1/rank and replaces a share of $MISS_FRAC by names never asked before"
} >"$FACTS"
cat "$FACTS"
[ "$up_quota" = none ] || echo "bench: WARNING: the upstream has a CPU quota: $up_quota"
[ "$my_quota" = none ] || echo "bench: WARNING: dnsperf has a CPU quota: $my_quota"

# ---- one dnsperf run ------------------------------------------------------------
# snap FILE TARGET: CPU ticks of the server and the upstream, the upstream's
# query count, the group's throttling counters, the machine's idle time.
snap() {
	{
		echo "t=$(date +%s.%N)"
		echo "srv_ticks=$(ticks "${PID[$2]}")"
		echo "up_ticks=$(ticks "$FK_PID")"
		echo "up_queries=$(fk_queries)"
		cg_periods "${CG[$2]}"
		# Interrupt time is mostly the loopback packets of the run itself,
		# charged to no process: kept apart from what others use.
		awk '/^cpu / { t = 0; for (i = 2; i <= NF; i++) t += $i; print "cpu_total=" t; print "cpu_idle=" $5 + $6; print "cpu_irq=" $7 + $8; exit }' /proc/stat
	} >"$1"
}

# run TEST TARGET ROUND QUOTA RATE FILE [dnsperf options]: one measured run,
# appended to runs.tsv and printed.
run() {
	local test=$1 t=$2 r=$3 q=$4 rate=$5 f=$6 lines o="$T_TMP/perf.out"
	shift 6
	# A file sent once (-n 1) can run out before the time limit.
	lines=0
	case " $* " in *" -n 1 "*) lines=$(wc -l <"$f") ;; esac
	[ "$CG_MODE" = none ] && q=none
	cg_quota "${CG[$t]}" "$q"
	snap "$T_TMP/s0" "$t"
	(
		# shellcheck disable=SC2086
		timeout $((SECS + 30)) dnsperf -s "${ADDR[$t]}" -p "${PORT[$t]}" -d "$f" \
		    -l "$SECS" $PERF_OPTS "$@" >"$o" 2>&1
		times >"$T_TMP/times"
	)
	snap "$T_TMP/s1" "$t"
	cg_quota "${CG[$t]}" max
	$TOOL record --test "$test" --target "$t" --round "$r" --quota "$q" \
	    --rate "$rate" --lines "$lines" --dnsperf "$o" --times "$T_TMP/times" \
	    --before "$T_TMP/s0" --after "$T_TMP/s1" --tsv "$OUT/runs.tsv"
}

# names PREFIX COUNT TAG: COUNT names never asked before.
miss_names() {
	awk -v n="$2" -v t="$3" -v p="$1" 'BEGIN { for (i = 1; i <= n; i++) printf "%s%d.%s.bench.test A\n", p, i, t }'
}
rotate() { # rotate K WORDS...: the words, starting at the K-th (mod count)
	local k=$1; shift
	local a=("$@") n=$# i
	for ((i = 0; i < n; i++)); do printf '%s ' "${a[$(((i + k) % n))]}"; done
}

$TOOL header >"$OUT/runs.tsv"
awk -v n="$NAMES" 'BEGIN { for (i = 1; i <= n; i++) printf "n%d.bench.test A\n", i }' >"$T_TMP/fill"
head -n "$HIT_NAMES" "$T_TMP/fill" >"$T_TMP/hits"
awk 'BEGIN { for (i = 1; i <= 1000; i++) printf "w%d.bench.test A\n", i }' >"$T_TMP/prewarm"

# ---- the harness alone: the upstream and the echo, both without quota ---------
miss_names u 200000 facts >"$T_TMP/f.up"
timeout $((SECS + 30)) dnsperf -s 127.0.0.1 -p "$FK_PORT_up" -d "$T_TMP/f.up" -n 1 -l "$SECS" $PERF_OPTS >"$T_TMP/f.up.out" 2>&1
up_cap=$(sed -n 's/^ *Queries per second: *\([0-9]*\).*/\1/p' "$T_TMP/f.up.out")
timeout $((SECS + 30)) dnsperf -s "${ADDR[echo]}" -p "${PORT[echo]}" -d "$T_TMP/hits" -l "$SECS" $PERF_OPTS >"$T_TMP/f.echo.out" 2>&1
echo_cap=$(sed -n 's/^ *Queries per second: *\([0-9]*\).*/\1/p' "$T_TMP/f.echo.out")
{
	echo "- the upstream alone, no quota: ${up_cap:-?} qps of names never asked before (dnsperf straight to fakeup)"
	echo "- the echo alone, no quota: ${echo_cap:-?} qps (the most this dnsperf set-up can drive here)"
} | tee -a "$FACTS"
[ "${up_cap:-0}" -gt 0 ] || die "the upstream does not answer: $(tail -n 5 "$T_TMP/f.up.out")"
[ "${echo_cap:-0}" -gt 0 ] || die "the echo does not answer: $(tail -n 5 "$T_TMP/f.echo.out")"

# ---- d. memory per cached entry; this also caches the names -----------------
# Without quota and at a steady rate, so no query is lost: the growth of the
# resident set over BENCH_NAMES new entries, after a first 1000 names have
# let each server allocate what it allocates once.  dnsdist and dnsmasq size
# their caches in entries and allocate the slots at start-up: a twin with a
# small cache gives what the slots cost, which an entry costs too when the
# cache is sized to hold it.
prealloc() { # prealloc SERVER: KiB the big cache costs at start, or 0
	local t=$1 p big small=0 pid=""
	big=${RSS0[$t]}
	p=$(pick_port) || { echo 0; return; }
	case $t in
	dnsdist) start_dnsdist 127.0.0.30 "$p" "127.0.0.1:$FK_PORT_up" 1000 >/dev/null && pid=$DD_PID ;;
	dnsmasq) start_dnsmasq 127.0.0.30 "$p" "127.0.0.1#$FK_PORT_up" 150 --no-daemon >/dev/null && pid=$DM_PID ;;
	esac
	[ -n "$pid" ] || { echo 0; return; }
	sleep 0.5
	small=$(rss_kib "$pid")
	kill -TERM "$pid" 2>/dev/null
	wait_pid "$pid" 10
	awk -v a="$big" -v b="$small" 'BEGIN { print (a > b) ? a - b : 0 }'
}
printf 'server\tentries\tlost\tup_queries\trss_start\trss_before\trss_after\tgrowth_per_entry\tslots\tprealloc_kib\tprealloc_per_slot\tbytes_per_entry\tresp_size\tnote\n' >"$OUT/mem.tsv"
for t in $SERVERS stubborn-2w; do
	timeout 30 dnsperf -s "${ADDR[$t]}" -p "${PORT[$t]}" -d "$T_TMP/prewarm" -n 1 -Q 5000 -c 1 >/dev/null 2>&1
	sleep 0.5
	before=$(rss_kib "${PID[$t]}") up0=$(fk_queries)
	f="$T_TMP/fill"
	# The 2-worker stubborn only needs the hit names (scaling runs on hits).
	[ "$t" = stubborn-2w ] && f="$T_TMP/hits"
	timeout $((NAMES / 1000 + 60)) dnsperf -s "${ADDR[$t]}" -p "${PORT[$t]}" -d "$f" -n 1 \
	    -Q "$FILL_RATE" -c 4 -t 5 >"$T_TMP/fill.$t" 2>&1
	sleep 1
	after=$(rss_kib "${PID[$t]}") up1=$(fk_queries)
	[ "$t" = stubborn-2w ] && continue
	comp=$(sed -n 's/^ *Queries completed: *\([0-9]*\).*/\1/p' "$T_TMP/fill.$t")
	lost=$(sed -n 's/^ *Queries lost: *\([0-9]*\).*/\1/p' "$T_TMP/fill.$t")
	resp=$(sed -n 's/.*Average packet size:.*response \([0-9]*\).*/\1/p' "$T_TMP/fill.$t")
	note="" slots=0 pre=0
	[ "${lost:-1}" = 0 ] || note="$lost queries lost during the fill. "
	case $t in
	dnsdist | dnsmasq)
		slots=1000000 pre=$(prealloc "$t")
		note="${note}allocates its $slots cache slots at start: $pre KiB more than with a small cache"
		;;
	esac
	awk -v t="$t" -v n="${comp:-0}" -v l="${lost:-?}" -v u=$((up1 - up0)) \
	    -v s0="${RSS0[$t]}" -v b="$before" -v a="$after" -v slots="$slots" \
	    -v pre="$pre" -v w="${resp:-0}" -v note="$note" 'BEGIN {
		g = n ? (a - b) * 1024 / n : 0
		ps = slots ? pre * 1024 / slots : 0
		printf "%s\t%d\t%s\t%d\t%d\t%d\t%d\t%.0f\t%d\t%d\t%.0f\t%.0f\t%s\t%s\n",
		    t, n, l, u, s0, b, a, g, slots, pre, ps, g + ps, w, note }' >>"$OUT/mem.tsv"
	echo "bench: $t cached $comp names (lost ${lost:-?}, upstream queries $((up1 - up0))): RSS at start ${RSS0[$t]}, before $before, after $after KiB${note:+; $note}"
done

# ---- a, c, e: capacity under the quota, interleaved -------------------------------
HIT_T="$TARGETS echo-2x stubborn-2x"
for r in $(seq 1 "$ROUNDS"); do
	for test in hits misses mixed; do
		if [ "$test" = hits ]; then set -- $HIT_T; else set -- echo $SERVERS; fi
		for t in $(rotate $((r - 1)) "$@"); do
			q=$QUOTA
			case $t in
			stubborn-2w | echo-2t | *-2x)
				# Twice the quota means nothing without a quota.
				[ "$CG_MODE" = none ] && continue
				q=$((2 * QUOTA))
				;;
			esac
			case $test in
			hits) f="$T_TMP/hits" ;;
			misses)
				f="$T_TMP/q"
				miss_names m "$MISS_LINES" "c$r$t$$" >"$f"
				;;
			mixed)
				f="$T_TMP/q"
				$TOOL zipf --names "$NAMES" --count "$MISS_LINES" --miss-frac "$MISS_FRAC" \
				    --tag "x$r$t$$" --seed "$r" >"$f"
				;;
			esac
			# Names are sent once each when they must be misses.
			extra=""
			[ "$test" = hits ] || extra="-n 1"
			# shellcheck disable=SC2086
			run "$test" "$t" "$r" "$q" 0 "$f" $extra
		done
	done
done

# ---- b, c: latency at a fixed rate that every server sustains ----------------------
# A quarter of the lowest median capacity of the four servers: well inside
# every server's quota, so the percentiles show the software, not the
# throttling (benchtool.py rate says why not half).
rate_for() {
	$TOOL rate --runs "$OUT/runs.tsv" --test "$1" --targets "$SERVERS"
}
RATE_HITS=${BENCH_RATE_HITS:-$(rate_for hits)}
RATE_MIXED=${BENCH_RATE_MIXED:-$(rate_for mixed)}
echo "bench: latency runs at $RATE_HITS qps (hits) and $RATE_MIXED qps (mixed)"
for r in $(seq 1 "$ROUNDS"); do
	for test in lat-hits lat-mixed; do
		for t in $(rotate $((r - 1)) echo $SERVERS); do
			if [ "$test" = lat-hits ]; then
				f="$T_TMP/hits" rate=$RATE_HITS extra=""
			else
				f="$T_TMP/q" rate=$RATE_MIXED extra="-n 1"
				$TOOL zipf --names "$NAMES" --count $((RATE_MIXED * SECS * 2)) \
				    --miss-frac "$MISS_FRAC" --tag "l$r$t$$" --seed $((r + 100)) >"$f"
			fi
			# shellcheck disable=SC2086
			run "$test" "$t" "$r" "$QUOTA" "$rate" "$f" -Q "$rate" -v $extra
		done
	done
done

# ---- report ----------------------------------------------------------------------
echo "- load average after the run: $(cut -d' ' -f1-3 /proc/loadavg); the whole bench took $(($(date +%s) - T0)) s" >>"$FACTS"
q=$QUOTA
[ "$CG_MODE" = none ] && q=none
$TOOL report --runs "$OUT/runs.tsv" --mem "$OUT/mem.tsv" --facts "$FACTS" \
    --out "$OUT" --quota "$q"

# Stop every server by PID now (the EXIT trap does it too, on any exit).
for t in $TARGETS; do kill -TERM "${PID[$t]}" 2>/dev/null; done
for t in $TARGETS; do wait_pid "${PID[$t]}" 10; done
exit 0
