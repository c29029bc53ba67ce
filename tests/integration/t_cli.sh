#!/bin/bash
# The command line and its exit codes (DESIGN.md section 6): 0 for --help,
# --version, --check-config and a clean SIGTERM/SIGINT; 2 for a bad config
# file or flag, with a message naming the problem ("FILE:LINE: ..."); 1 when
# start-up fails, e.g. an address in use, with a message naming it.
# Whatever would bind port 53 runs in a private network namespace.
. "$(dirname "$0")/lib.sh"

CONF="$ROOT/config/stubborn.conf"
TO=$((10 * SLOW))

# has_line "description" LINE TEXT: TEXT has exactly this line.
has_line() {
	if printf '%s\n' "$3" | grep -Fxq -- "$2"; then ok "$1"; else
		not_ok "$1 (no line '$2' in: $(printf '%s' "$3" | head -c 600))"; fi
}

# run ARGS...: stubborn in the foreground (bounded), sets R_OUT R_ERR R_RC.
run() {
	timeout "$TO" "$STUBBORN" "$@" >"$T_TMP/out" 2>"$T_TMP/err"
	R_RC=$?
	R_OUT=$(cat "$T_TMP/out")
	R_ERR=$(cat "$T_TMP/err")
}

# ---- --version, --help ---------------------------------------------------------
run --version
expect_eq "--version: exit 0" 0 "$R_RC"
expect_match "--version: prints 'stubborn VERSION'" '^stubborn [0-9]+\.[0-9]+' "$R_OUT"

run --help
expect_eq "--help: exit 0" 0 "$R_RC"
help=$R_OUT
keys=$(grep -E '^#?[[:space:]]*[a-z][a-z0-9-]*[[:space:]]*=' "$CONF" |
    sed -E 's/^#?[[:space:]]*([a-z0-9-]+).*/\1/' | sort -u)
check "config/stubborn.conf names some keys ($(echo $keys | wc -w))" test -n "$keys"
missing=""
for k in $keys; do
	printf '%s\n' "$help" | grep -q -- "--$k\b" || missing="$missing $k"
done
expect_eq "--help mentions every key of config/stubborn.conf" "" "${missing# }"
for f in config check-config help version; do
	printf '%s\n' "$help" | grep -q -- "--$f\b" || missing="$missing --$f"
done
expect_eq "--help mentions --config, --check-config, --help, --version" "" "${missing# }"

# ---- bad config file, bad flags: exit 2 -------------------------------------
bad="$T_TMP/bad.conf"
printf '# a comment\nworkers = 1\nno-such-key = 1\n' >"$bad"
run --config "$bad" --check-config
expect_eq "unknown key on line 3: exit 2" 2 "$R_RC"
expect_match "unknown key on line 3: stderr names FILE:3:" "^stubborn: $bad:3: .*no-such-key" "$R_ERR"
printf 'workers = 1\nworkers = 2\n' >"$bad"
run --config "$bad" --check-config
expect_eq "duplicate key on line 2: exit 2, FILE:2:" "2 yes" \
    "$R_RC $(printf '%s' "$R_ERR" | grep -q "$bad:2:" && echo yes || echo no)"
printf 'upstream = 127.0.0.1\ncache-size = lots\n' >"$bad"
run --config "$bad" --check-config
expect_eq "bad value on line 2: exit 2, FILE:2:" "2 yes" \
    "$R_RC $(printf '%s' "$R_ERR" | grep -q "$bad:2:.*cache-size" && echo yes || echo no)"
run --config "$T_TMP/does-not-exist.conf"
expect_eq "missing config file: exit 2" 2 "$R_RC"
expect_match "missing config file: named" 'does-not-exist\.conf' "$R_ERR"

for args in "--workers 99" "--cache-size 12x" "--listen not-an-address" \
    "--log-level loud" "--upstream-timeout 0" "--no-such-flag" "--workers"; do
	# shellcheck disable=SC2086
	run $args --upstream 127.0.0.1:9 --listen 127.0.0.1:9 --check-config
	flag=${args%% *}
	expect_eq "bad flag '$args': exit 2" 2 "$R_RC"
	expect_match "bad flag '$args': stderr names $flag" "^stubborn: .*$flag" "$R_ERR"
done
run --listen 127.0.0.1:5399 --upstream 127.0.0.1:5399 --check-config
expect_eq "upstream = own listen address: exit 2" 2 "$R_RC"
expect_match "upstream = own listen address: says it would query itself" 'itself' "$R_ERR"

# ---- --check-config -----------------------------------------------------------
rconf="$T_TMP/resolv.conf"
printf 'nameserver 127.0.0.1\n' >"$rconf"
run --config "$CONF" --resolv-conf "$rconf" --check-config
expect_eq "--check-config on config/stubborn.conf: exit 0" 0 "$R_RC"
has_line "--check-config prints listen = 127.0.0.53:53" "listen = 127.0.0.53:53" "$R_OUT"
has_line "--check-config prints the upstream from --resolv-conf" "upstream = 127.0.0.1:53" "$R_OUT"
printf '%s\n' "$R_OUT" >"$T_TMP/printed.conf"
# (Comment lines aside: the first print notes where the upstream came from.)
first=$(printf '%s\n' "$R_OUT" | grep -v '^#')
run --config "$T_TMP/printed.conf" --check-config
expect_eq "the printed config reads back (exit 0) and prints the same settings" "0 yes" \
    "$R_RC $([ "$(printf '%s\n' "$R_OUT" | grep -v '^#')" = "$first" ] && echo yes || echo no)"
run --config "$CONF" --resolv-conf "$rconf" --workers 3 --check-config
has_line "a flag overrides the file (--workers 3)" "workers = 3" "$R_OUT"

# ---- no upstream left: exit 2 ---------------------------------------------------
# resolv.conf names only stubborn's own address (127.0.0.1:53 here).  Not
# with --check-config: a real start, in a private network namespace so
# that a bind of port 53 (should the check be missing) stays private.
nsrun() {
	timeout "$TO" unshare -n sh -c 'ip link set lo up && exec "$@"' _ \
	    "$STUBBORN" "$@" >"$T_TMP/out" 2>"$T_TMP/err"
	R_RC=$?
	R_OUT=$(cat "$T_TMP/out")
	R_ERR=$(cat "$T_TMP/err")
}
nsrun --listen 127.0.0.1:53 --resolv-conf "$rconf"
expect_eq "resolv.conf lists only our own address: exit 2" 2 "$R_RC"
expect_match "resolv.conf lists only our own address: clear 'no upstream' message" \
    '^stubborn: no upstream' "$R_ERR"
printf 'nameserver 127.0.0.53\n' >"$T_TMP/resolv.53"
nsrun --config "$CONF" --resolv-conf "$T_TMP/resolv.53"
expect_eq "shipped config, resolv.conf naming only 127.0.0.53: exit 2, 'no upstream'" "2 yes" \
    "$R_RC $(printf '%s' "$R_ERR" | grep -q 'no upstream' && echo yes || echo no)"
printf '# nothing\nsearch example\n' >"$T_TMP/resolv.none"
nsrun --listen 127.0.0.1:53 --resolv-conf "$T_TMP/resolv.none"
expect_eq "resolv.conf without nameserver lines: exit 2, 'no upstream'" "2 yes" \
    "$R_RC $(printf '%s' "$R_ERR" | grep -q 'no upstream' && echo yes || echo no)"
printf 'nameserver 127.0.0.53\nnameserver 127.0.0.9\n' >"$T_TMP/resolv.mixed"
run --config "$CONF" --resolv-conf "$T_TMP/resolv.mixed" --check-config
expect_eq "resolv.conf with our address and another: only the other is an upstream" \
    "0 upstream = 127.0.0.9:53" "$R_RC $(printf '%s\n' "$R_OUT" | grep '^upstream =')"

# ---- address in use: exit 1 -----------------------------------------------------
# A plain listener (no SO_REUSEPORT) holds UDP and TCP on ADDR:PORT.
occupy() {
	python3 - "$1" "$2" "$3" <<'EOF' &
import socket, sys, time
addr, port, ready = sys.argv[1], int(sys.argv[2]), sys.argv[3]
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.bind((addr, port))
t = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT must not fail the bind
t.bind((addr, port)); t.listen(4)
open(ready, "w").close()
time.sleep(60)
EOF
	OCC_PID=$!
	T_PIDS="$T_PIDS $OCC_PID"
	for _ in $(seq 1 50); do [ -e "$3" ] && return 0; sleep 0.1; done
	return 1
}
P=$(pick_port)
occupy 127.0.0.1 "$P" "$T_TMP/occ.ready" || not_ok "python listener started"
run --listen "127.0.0.1:$P" --upstream 127.0.0.1:9 --workers 2
expect_eq "address in use (127.0.0.1:$P held by another program): exit 1" 1 "$R_RC"
expect_match "address in use: stderr names 127.0.0.1:$P" "127\.0\.0\.1:$P" "$R_ERR"
expect_match "address in use: stderr says so" '[Aa]ddress already in use|in use' "$R_ERR"
kill "$OCC_PID" 2>/dev/null; wait "$OCC_PID" 2>/dev/null

# 127.0.0.53:53 in use, as with systemd-resolved's stub listener: the
# message mentions systemd-resolved.  In a private network namespace.
cat >"$T_TMP/ns53.sh" <<'EOF'
ip link set lo up || exit 97
python3 -c '
import socket, sys, time
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.bind(("127.0.0.53", 53))
t = socket.socket(socket.AF_INET, socket.SOCK_STREAM); t.bind(("127.0.0.53", 53)); t.listen(4)
open(sys.argv[1], "w").close()
time.sleep(30)' "$2" &
occ=$!
for _ in $(seq 1 50); do [ -e "$2" ] && break; sleep 0.1; done
"$1" --listen 127.0.0.53:53 --upstream 127.0.0.1:9 --workers 1
rc=$?
kill $occ; wait $occ
exit $rc
EOF
timeout "$TO" unshare -n bash "$T_TMP/ns53.sh" "$STUBBORN" "$T_TMP/ns53.ready" \
    >"$T_TMP/out" 2>"$T_TMP/err"
rc=$?
err=$(cat "$T_TMP/err")
expect_eq "127.0.0.53:53 in use: exit 1" 1 "$rc"
expect_match "127.0.0.53:53 in use: names the address" '127\.0\.0\.53:53' "$err"
expect_match "127.0.0.53:53 in use: mentions systemd-resolved" 'systemd-resolved' "$err"

# A first stubborn holds the address: a second one must not start too
# (SO_REUSEPORT would let it bind and silently share the traffic).
start_fakeup up
start_stubborn --upstream "127.0.0.1:$FK_PORT_up" || not_ok "first stubborn started"
"$STUBBORN" --listen "127.0.0.1:$STUB_PORT" --upstream "127.0.0.1:$FK_PORT_up" \
    --workers 1 >"$T_TMP/out2" 2>"$T_TMP/err2" &
second=$!
T_PIDS="$T_PIDS $second"
rc=running
# (Not under valgrind: bind errors come within milliseconds.)
for _ in $(seq 1 30); do
	if ! kill -0 "$second" 2>/dev/null; then wait "$second"; rc=$?; break; fi
	sleep 0.1
done
if [ "$rc" = running ]; then
	kill -TERM "$second"; wait "$second"
fi
expect_eq "second stubborn on the same address (127.0.0.1:$STUB_PORT): exit 1" 1 "$rc"
expect_match "second stubborn: an error on stderr names the address" "^stubborn: .*127\.0\.0\.1:$STUB_PORT" "$(cat "$T_TMP/err2")"
# The first one is unharmed.
out=$(q www.example.com A)
expect_eq "first stubborn still answers" NOERROR "$(echo "$out" | dig_status)"

# ---- workers = 0: the CPUs this process may use ---------------------------------
# One worker per CPU of the affinity mask, bounded by the cgroup's CPU quota
# (a pod limited to one CPU on a big node starts one); --check-config prints
# the count it chose.
workers_of() { printf '%s\n' "$1" | sed -n 's/^workers = //p'; }
W_ARGS="--listen 127.0.0.1:5300 --upstream 127.0.0.1:9 --workers 0 --check-config"
run $W_ARGS
ncpu=$(nproc)
expect_eq "workers 0: one per CPU of the affinity mask ($ncpu)" "$ncpu" "$(workers_of "$R_OUT")"
taskset -c 0 "$STUBBORN" $W_ARGS >"$T_TMP/out" 2>&1
expect_eq "workers 0 under taskset -c 0: 1" 1 "$(workers_of "$(cat "$T_TMP/out")")"
. ../bench/lib_cg.sh
cg_setup >/dev/null 2>&1
if [ "$CG_MODE" = none ] || [ "$ncpu" -lt 2 ]; then
	echo "SKIP - $T_NAME: workers 0 under a CPU quota: ${CG_WHY:-one CPU only} (no writable cgroup with a CPU quota)"
else
	G=$(cg_new quota)
	# Half a CPU on the group's parent binds the child the process is in.
	cg_quota "$CG_PARENT" 50
	mkdir "$G/child"
	out=$(bash -c 'echo $$ >"$1/cgroup.procs" && exec "$2" $3' _ "$G/child" "$STUBBORN" "$W_ARGS" 2>&1)
	expect_eq "workers 0 in a cgroup whose parent has 50% of a CPU: 1 ($CG_MODE)" 1 "$(workers_of "$out")"
	cg_quota "$CG_PARENT" max
	cg_quota "$G" 150
	out=$(bash -c 'echo $$ >"$1/cgroup.procs" && exec "$2" $3' _ "$G/child" "$STUBBORN" "$W_ARGS" 2>&1)
	expect_eq "workers 0 with 150% of a CPU on $ncpu CPUs: 2" 2 "$(workers_of "$out")"
	rmdir "$G/child" "$G"
	cg_cleanup
fi

# ---- signals ------------------------------------------------------------------
stop_stubborn
start_stubborn --upstream "127.0.0.1:$FK_PORT_up" || not_ok "stubborn started"
out=$(q sigint.example A)
expect_eq "answers before SIGINT" NOERROR "$(echo "$out" | dig_status)"
kill -INT "$STUB_PID"
wait "$STUB_PID"
expect_eq "SIGINT: exit 0" 0 "$?"
check "SIGINT: logs the drain and the stop" grep -q 'msg="stopped"' "$STUB_LOG"
if [ -n "$VALGRIND" ]; then
	if [ -s "$T_TMP/valgrind.$STUB_PORT.log" ]; then
		not_ok "valgrind clean (SIGINT)"; cat "$T_TMP/valgrind.$STUB_PORT.log"
	else
		ok "valgrind clean (SIGINT)"
	fi
fi

t_done
