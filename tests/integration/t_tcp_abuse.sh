#!/bin/bash
# TCP and resource abuse (RFC 7766, RFC 9210 numbers as defaults): 300 idle
# connections from 12 client addresses neither stop UDP nor TCP service,
# and all of them are gone after the idle timeout.
. "$(dirname "$0")/lib.sh"

start_fakeup up
IDLE_MS=$((2000 * SLOW))
start_stubborn --upstream "127.0.0.1:$FK_PORT_up" --tcp-idle-timeout $IDLE_MS

# 300 connections, 25 from each of 127.0.0.2 .. 127.0.0.13, that send
# nothing (under valgrind 60, from 3 addresses, with longer waits).
HOSTS=12
[ -n "$VALGRIND" ] && HOSTS=3
python3 - "$STUB_PORT" "$T_TMP/idle.out" "$HOSTS" $((20 * SLOW)) <<'PY' &
import socket, sys, time
port, out, hosts, hold = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
socks, failed = [], 0
for host in range(2, 2 + hosts):
    for _ in range(25):
        s = socket.socket()
        s.settimeout(2)
        try:
            s.bind(("127.0.0.%d" % host, 0))
            s.connect(("127.0.0.1", port))
            socks.append(s)
        except OSError:
            failed += 1
with open(out, "w") as f:
    f.write("opened %d failed %d\n" % (len(socks), failed))
# Hold them for at most `hold` s; count the ones the server closed.
deadline = time.time() + hold
for s in socks:
    s.setblocking(False)
while time.time() < deadline:
    closed = 0
    for s in socks:
        try:
            if s.recv(1) == b"":
                closed += 1
        except BlockingIOError:
            pass
        except OSError:
            closed += 1
    if closed == len(socks):
        break
    time.sleep(0.2)
with open(out, "a") as f:
    f.write("closed %d of %d after %.1f s\n" % (closed, len(socks), hold - (deadline - time.time())))
PY
HOLD=$!
T_PIDS="$T_PIDS $HOLD"
for _ in $(seq 1 $((50 * SLOW))); do [ -s "$T_TMP/idle.out" ] && break; sleep 0.1; done
expect_match "$((HOSTS * 25)) idle connections attempted" '^opened [0-9]+ failed [0-9]+' "$(head -n1 "$T_TMP/idle.out")"

out=$(q tcp-while-idle.example.com A +tcp)
expect_eq "TCP query answered while $((HOSTS * 25)) idle connections were opened" NOERROR "$(echo "$out" | dig_status)"
out=$(q udp-while-idle.example.com A)
expect_eq "UDP query answered meanwhile" NOERROR "$(echo "$out" | dig_status)"
open_now=$(ss -Htn state established "sport = :$STUB_PORT" | wc -l)
check "connections held by stubborn stay within tcp-max-connections (150): $open_now" \
    test "$open_now" -le 151

wait_pid "$HOLD" $((25 * SLOW))
[ -n "$VALGRIND" ] && echo "# valgrind: $((HOSTS * 25)) idle connections instead of 300, waits x$SLOW"
res=$(tail -n1 "$T_TMP/idle.out")
expect_match "every idle connection closed by the server within the idle timeout + 1 s ($res)" \
    "^closed ([0-9]+) of \\1 after" "$res"
secs=$(echo "$res" | sed -n 's/.* after \([0-9]*\)\..*/\1/p')
check "closed within $(( IDLE_MS / 1000 + 2 * SLOW )) s (took ${secs}s)" test "${secs:-99}" -le $((IDLE_MS / 1000 + 2 * SLOW))

# A client that never reads its answers is cut off at the idle timeout
# instead of holding buffers: pipeline big answers and read nothing.
python3 - "$STUB_PORT" "$T_TMP/slowread.out" $((15 * SLOW)) <<'PY'
import socket, struct, sys, time
port, out, wait = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
def q(i):
    name = b"".join(bytes([len(l)]) + l for l in [b"big-%d" % i, b"example"]) + b"\0"
    m = struct.pack(">HHHHHH", i, 0x0100, 1, 0, 0, 0) + name + struct.pack(">HH", 16, 1)
    return struct.pack(">H", len(m)) + m
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
s.connect(("127.0.0.1", port))
s.settimeout(1)
sent = 0
t0 = time.time()
try:
    while time.time() - t0 < 8 and sent < 4000:
        s.sendall(q(sent % 60000))
        sent += 1
except OSError:
    pass
# Now read nothing and wait for the server to give up on us.
closed_after = None
t1 = time.time()
while time.time() - t1 < wait:
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        time.sleep(0.5)
        s.send(b"")
        # Drain only to detect a close; the server has been blocked long enough.
        if time.time() - t1 > wait * 0.4:
            s.settimeout(0.5)
            while True:
                d = s.recv(65536)
                if not d:
                    closed_after = time.time() - t1
                    break
            break
    except (ConnectionResetError, BrokenPipeError):
        closed_after = time.time() - t1
        break
    except socket.timeout:
        continue
    except OSError:
        closed_after = time.time() - t1
        break
with open(out, "w") as f:
    f.write("sent %d closed %s\n" % (sent, "yes" if closed_after is not None else "no"))
PY
expect_match "a client that never reads is cut off ($(cat "$T_TMP/slowread.out"))" 'closed yes' "$(cat "$T_TMP/slowread.out")"
out=$(q after-slowread.example.com A)
expect_eq "still answering after the slow reader" NOERROR "$(echo "$out" | dig_status)"

stop_stubborn
t_done
