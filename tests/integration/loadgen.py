#!/usr/bin/env python3
"""loadgen: a bounded, steady-rate UDP DNS load generator for loopback tests.

Sends one query for a unique name every 1/RATE seconds for SECONDS seconds to
127.0.0.1 (or ::1) PORT, waits for each reply up to --timeout seconds, then
prints one JSON summary line and exits.  Query number N (0-based) is sent at
N/RATE seconds after the start and asks for

    q<N>-<RUN><SUFFIX>   type --type (default: q17-ab12cd.example. A)

so each is a cache miss, and a server-side log line tells when the client
sent it (N / RATE).  Only 127.0.0.1 and ::1 are accepted as targets; the rate
is capped at 2000 qps, the duration at 60 s and the timeout at 10 s, so one
run never sends more than 120000 queries nor lasts longer than 70 s.  SIGINT
or SIGTERM stops sending early; the replies still due are awaited and the
summary is printed as usual (with "stopped_early": true).

  loadgen.py --port P --rate R --seconds T [--timeout 3] [--run TAG]
             [--suffix .example.] [--type A] [--skip-first S]
             [--window-file FILE] [--server 127.0.0.1]

Summary keys: sent, answered, lost (no reply within --timeout), late (replies
after the timeout: counted lost), mismatched (replies matching no query),
rcodes {NAME: count}, latency_ms {p50, p90, p99, max} over answered queries,
latency_ms_by_rcode, and with --skip-first S an "after_skip" object with the
same keys for the queries sent at or after S seconds.  --window-file writes
one JSON object per line per second of sending time: t (second), sent,
answered, lost, rcodes, p50, p99 (by the time each query was sent).
"""

import argparse
import json
import os
import random
import selectors
import signal
import socket
import struct
import sys
import time

ALLOWED = ("127.0.0.1", "::1")
RATE_MAX = 2000
SECONDS_MAX = 60
TIMEOUT_MAX = 10.0
TYPES = {"A": 1, "NS": 2, "SOA": 6, "MX": 15, "TXT": 16, "AAAA": 28}
RCODES = {0: "NOERROR", 1: "FORMERR", 2: "SERVFAIL", 3: "NXDOMAIN",
          4: "NOTIMP", 5: "REFUSED"}


def die(msg):
    print(json.dumps({"error": msg}))
    sys.exit(2)


def encode_name(name):
    out = b""
    for label in name.rstrip(".").split("."):
        b = label.encode("ascii")
        if not 0 < len(b) < 64:
            die("bad name " + name)
        out += bytes([len(b)]) + b
    return out + b"\x00"


def build_query(qid, name, qtype):
    # RD set, one question, and an OPT record (UDP size 1232), like dig.
    hdr = struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 1)
    opt = b"\x00" + struct.pack("!HHIH", 41, 1232, 0, 0)
    return hdr + encode_name(name) + struct.pack("!HH", qtype, 1) + opt


def parse_reply(m):
    """(id, rcode, lower-cased qname) of a reply, or None."""
    if len(m) < 12:
        return None
    qid, flags, qd = struct.unpack("!HHH", m[:6])
    if not flags & 0x8000 or qd != 1:
        return None
    labels, i = [], 12
    while i < len(m):
        n = m[i]
        if n == 0:
            break
        if n >= 64 or i + 1 + n > len(m):
            return None
        labels.append(m[i + 1:i + 1 + n].decode("ascii", "replace").lower())
        i += 1 + n
    else:
        return None
    return qid, flags & 0xF, ".".join(labels) + "."


def pct(sorted_vals, p):
    if not sorted_vals:
        return None
    k = min(len(sorted_vals) - 1, max(0, int(round(p / 100.0 *
                                                   len(sorted_vals) + 0.5)) - 1))
    return round(sorted_vals[k], 3)


def lat_summary(vals):
    v = sorted(vals)
    return {"n": len(v), "p50": pct(v, 50), "p90": pct(v, 90),
            "p99": pct(v, 99), "max": round(v[-1], 3) if v else None}


def summarize(recs):
    """recs: list of (sent_at, latency_ms or None, rcode or None)."""
    rc, lat, by = {}, [], {}
    answered = 0
    for _, l, r in recs:
        if l is None:
            continue
        answered += 1
        name = RCODES.get(r, "RCODE%d" % r)
        rc[name] = rc.get(name, 0) + 1
        lat.append(l)
        by.setdefault(name, []).append(l)
    return {"sent": len(recs), "answered": answered,
            "lost": len(recs) - answered, "rcodes": rc,
            "latency_ms": lat_summary(lat),
            "latency_ms_by_rcode": {k: lat_summary(v) for k, v in by.items()}}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--server", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--rate", type=float, required=True)
    ap.add_argument("--seconds", type=float, required=True)
    ap.add_argument("--timeout", type=float, default=3.0)
    ap.add_argument("--run", default=None)
    ap.add_argument("--suffix", default=".example.")
    ap.add_argument("--type", default="A")
    ap.add_argument("--skip-first", type=float, default=None)
    ap.add_argument("--window-file", default=None)
    a = ap.parse_args()

    if a.server not in ALLOWED:
        die("only 127.0.0.1 and ::1 are allowed targets")
    if not 0 < a.port < 65536:
        die("bad port")
    if not 0 < a.rate <= RATE_MAX:
        die("rate must be in (0, %d]" % RATE_MAX)
    if not 0 < a.seconds <= SECONDS_MAX:
        die("seconds must be in (0, %d]" % SECONDS_MAX)
    if not 0 < a.timeout <= TIMEOUT_MAX:
        die("timeout must be in (0, %g]" % TIMEOUT_MAX)
    qtype = TYPES.get(a.type.upper())
    if qtype is None:
        die("unknown type " + a.type)
    run = a.run or "%x%04x" % (os.getpid() & 0xffff, random.getrandbits(16))
    suffix = a.suffix if a.suffix.startswith(".") else "." + a.suffix
    if not suffix.endswith("."):
        suffix += "."

    fam = socket.AF_INET6 if ":" in a.server else socket.AF_INET
    sock = socket.socket(fam, socket.SOCK_DGRAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    except OSError:
        pass
    sock.connect((a.server, a.port))
    sock.setblocking(False)
    sel = selectors.DefaultSelector()
    sel.register(sock, selectors.EVENT_READ)

    stop = {"flag": False}

    def on_signal(signum, frame):
        stop["flag"] = True
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)

    total = int(a.rate * a.seconds)
    interval = 1.0 / a.rate
    sent_at = []          # per N: seconds after start
    latency = []          # per N: ms or None
    rcode = []            # per N
    pending = {}          # id -> (N, qname)
    deadline_q = []       # N in send order, for expiry
    qid_of = []           # per N: its ID
    expire_i = 0
    mismatched = late = send_errors = 0
    t0 = time.monotonic()
    n = 0
    hard_end = t0 + a.seconds + a.timeout + 5.0

    while True:
        now = time.monotonic()
        if now > hard_end:
            break
        # Send what is due (catching up if the loop fell behind).
        while n < total and not stop["flag"] and now - t0 >= n * interval:
            qid = random.getrandbits(16)
            tries = 0
            while qid in pending and tries < 100:
                qid = random.getrandbits(16)
                tries += 1
            if qid in pending:
                break   # 65536 outstanding: wait for some to expire
            name = "q%d-%s%s" % (n, run, suffix)
            try:
                sock.send(build_query(qid, name, qtype))
            except (BlockingIOError, ConnectionRefusedError, OSError):
                send_errors += 1
            pending[qid] = (n, name.lower())
            qid_of.append(qid)
            sent_at.append(now - t0)
            latency.append(None)
            rcode.append(None)
            deadline_q.append(n)
            n += 1
            now = time.monotonic()
        # Expire queries older than the timeout.
        while expire_i < len(deadline_q):
            k = deadline_q[expire_i]
            if t0 + sent_at[k] + a.timeout > now:
                break
            if latency[k] is None and pending.get(qid_of[k], (-1,))[0] == k:
                del pending[qid_of[k]]
            expire_i += 1
        done_sending = n >= total or stop["flag"]
        if done_sending and not pending:
            break
        if done_sending:
            wait = 0.05
        else:
            wait = max(0.0, t0 + n * interval - time.monotonic())
        for _ in sel.select(min(wait, 0.05)):
            while True:
                try:
                    m = sock.recv(4096)
                except (BlockingIOError, InterruptedError):
                    break
                except ConnectionRefusedError:
                    continue
                rt = time.monotonic()
                p = parse_reply(m)
                if p is None:
                    mismatched += 1
                    continue
                if p[0] not in pending:
                    late += 1       # its query already timed out
                    continue
                k, nm = pending[p[0]]
                if nm != p[2]:
                    mismatched += 1
                    continue
                del pending[p[0]]
                latency[k] = (rt - (t0 + sent_at[k])) * 1000.0
                rcode[k] = p[1]

    recs = list(zip(sent_at, latency, rcode))
    out = summarize(recs)
    out.update({"run": run, "rate": a.rate, "seconds": a.seconds,
                "timeout_s": a.timeout, "late": late,
                "mismatched": mismatched, "send_errors": send_errors,
                "stopped_early": n < total,
                "elapsed_s": round(time.monotonic() - t0, 3)})
    if a.skip_first is not None:
        out["after_skip"] = summarize([r for r in recs
                                       if r[0] >= a.skip_first])
        out["after_skip"]["skip_first_s"] = a.skip_first
    if a.window_file:
        with open(a.window_file, "w") as f:
            secs = int(max(sent_at) if sent_at else 0) + 1
            for s in range(secs):
                w = summarize([r for r in recs if s <= r[0] < s + 1])
                f.write(json.dumps({
                    "t": s, "sent": w["sent"], "answered": w["answered"],
                    "lost": w["lost"], "rcodes": w["rcodes"],
                    "p50": w["latency_ms"]["p50"],
                    "p99": w["latency_ms"]["p99"]}) + "\n")
    print(json.dumps(out, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
