#!/usr/bin/env python3
"""stormgen: a bounded multi-client UDP DNS load generator for loopback tests.

Simulates many clients at once: each client group sends from its own
loopback source addresses (127.0.0.X, bound explicitly), at its own rate,
either over a list of names (cache hits, or stale answers) or unique names
(cache misses), so a flooding client and a few well-behaved ones can be
measured separately in one run.  Every query is A, RD=1, with an OPT record
(UDP size 1232), so Extended DNS Errors (RFC 8914) come back and are counted.

  stormgen.py --port P --seconds T [--server 127.0.0.1] [--timeout 2]
              [--names FILE] [--suffix storm.example.] [--run TAG]
              [--records FILE] [--windows]
              --group NAME:SRC:RATE:MODE[:NAMES_FILE] [--group ...]

  SRC   one address (127.0.0.2), a range of the last byte (127.0.0.2-101)
        or of addresses (127.0.0.2-127.0.0.101); queries go round-robin
        over the range, one socket per address.  ::1 for IPv6.
  RATE  queries a second for the whole group.
  MODE  "names": cycle over NAMES_FILE (or --names), one name a line;
        "unique": query N of the group asks u<N>-<RUN>-<NAME>.<SUFFIX>,
        a fresh name each time (grep the upstream log for "-<RUN>-<NAME>.").

Analysing a records file afterwards (no traffic):

  stormgen.py --analyze RECORDS [--since S] [--until U] [--group NAME]
              [--names-out FILE]

prints the same summary for the queries sent in [S, U) seconds after the
start (all groups unless --group), including "stale_names": the names with
at least one answer carrying EDE 3 (stale answer) in that interval.
--names-out writes those names, one a line.

Bounds: only loopback targets and sources (127.0.0.0/8, ::1); total rate at
most 5000 qps, at most 30 s, timeout at most 10 s, at most 254 source
addresses; so a run sends at most 150000 queries and lasts at most
T + timeout + 5 s.  SIGINT/SIGTERM stop sending early; replies still due are
awaited and the summary printed ("stopped_early": true).

Latency is measured from just before sendto() to the kernel's receive
timestamp of the reply (SO_TIMESTAMPNS), so the generator's own scheduling
delays do not inflate it (wall-clock receive time when no timestamp came).

Output: one JSON object: sent, answered, lost (no reply within --timeout),
late (replies after their timeout), mismatched, send_errors, rcodes {NAME:
n}, ede {CODE: n} (answers carrying each EDE info code), stale_answers (EDE
3), latency_ms {n, p50, p90, p99, max}, t0_wall (epoch seconds of the
start: a query sent at t0_wall + s has t = s in the records), elapsed_s,
stopped_early, and "groups" {NAME: the same keys plus rate, mode, sources,
and with --windows a per-second list [{t, sent, answered, lost, p99,
stale, stale_names, rcodes}]}.  --records writes one line per query:
t_sent<TAB>group<TAB>name<TAB>rcode<TAB>ede<TAB>latency_ms (rcode -1 and
latency - when lost; ede "-" when none, else codes joined by ",").
"""

import argparse
import ipaddress
import json
import os
import random
import selectors
import signal
import socket
import struct
import sys
import time
from collections import deque

RATE_MAX = 5000
SECONDS_MAX = 30
TIMEOUT_MAX = 10.0
SOURCES_MAX = 254
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)   # Linux value
RCODES = {0: "NOERROR", 1: "FORMERR", 2: "SERVFAIL", 3: "NXDOMAIN",
          4: "NOTIMP", 5: "REFUSED"}
EDE_STALE = 3


def die(msg):
    print(json.dumps({"error": msg}))
    sys.exit(2)


def encode_name(name):
    out = b""
    for label in name.rstrip(".").split("."):
        b = label.encode("ascii")
        if not 0 < len(b) < 64:
            die("bad name %r" % name)
        out += bytes([len(b)]) + b
    if len(out) + 1 > 255:
        die("name too long %r" % name)
    return out + b"\x00"


# Header after the ID: RD, QD=1, AN=0, NS=0, AR=1; question tail; OPT 1232.
HDR_TAIL = struct.pack("!HHHHH", 0x0100, 1, 0, 0, 1)
Q_TAIL = struct.pack("!HH", 1, 1)
OPT = b"\x00" + struct.pack("!HHIH", 41, 1232, 0, 0)


def skip_name(m, i):
    """Offset after the (possibly compressed) name at i, or -1."""
    n = len(m)
    while i < n:
        b = m[i]
        if b == 0:
            return i + 1
        if b & 0xC0 == 0xC0:
            return i + 2 if i + 2 <= n else -1
        if b & 0xC0:
            return -1
        i += 1 + b
    return -1


def parse_ede(m, qend):
    """EDE info codes in the OPT record of reply m (question ends at qend)."""
    an, ns, ar = struct.unpack_from("!HHH", m, 6)
    if ar == 0:
        return ()
    i = qend
    n = len(m)
    for _ in range(an + ns):
        i = skip_name(m, i)
        if i < 0 or i + 10 > n:
            return ()
        i += 10 + struct.unpack_from("!H", m, i + 8)[0]
    codes = []
    for _ in range(ar):
        i = skip_name(m, i)
        if i < 0 or i + 10 > n:
            break
        rtype = struct.unpack_from("!H", m, i)[0]
        rdlen = struct.unpack_from("!H", m, i + 8)[0]
        j, end = i + 10, min(n, i + 10 + rdlen)
        if rtype == 41:
            while j + 4 <= end:
                code, olen = struct.unpack_from("!HH", m, j)
                if code == 15 and olen >= 2 and j + 6 <= end:
                    codes.append(struct.unpack_from("!H", m, j + 4)[0])
                j += 4 + olen
        i += 10 + rdlen
    return tuple(codes)


def pct(sorted_vals, p):
    if not sorted_vals:
        return None
    k = min(len(sorted_vals) - 1,
            max(0, int(round(p / 100.0 * len(sorted_vals) + 0.5)) - 1))
    return round(sorted_vals[k], 3)


def lat_summary(vals):
    v = sorted(vals)
    return {"n": len(v), "p50": pct(v, 50), "p90": pct(v, 90),
            "p99": pct(v, 99), "max": round(v[-1], 3) if v else None}


def summarize(recs, with_names=False):
    """recs: iterable of (t_sent, group, name, rcode, ede_tuple, lat_ms)."""
    sent = answered = stale = 0
    rc, ede, lat = {}, {}, []
    stale_names, names = set(), set()
    for _, _, name, r, codes, l in recs:
        sent += 1
        names.add(name)
        if l is None:
            continue
        answered += 1
        k = RCODES.get(r, "RCODE%d" % r)
        rc[k] = rc.get(k, 0) + 1
        for c in set(codes):
            ede[str(c)] = ede.get(str(c), 0) + 1
        if EDE_STALE in codes:
            stale += 1
            stale_names.add(name)
        lat.append(l)
    out = {"sent": sent, "answered": answered, "lost": sent - answered,
           "rcodes": rc, "ede": ede, "stale_answers": stale,
           "latency_ms": lat_summary(lat), "names": len(names),
           "stale_name_count": len(stale_names)}
    if with_names:
        out["stale_names"] = sorted(stale_names)
    return out


def windows(recs):
    by = {}
    for r in recs:
        by.setdefault(int(r[0]), []).append(r)
    out = []
    for s in range(max(by) + 1 if by else 0):
        w = summarize(by.get(s, []))
        out.append({"t": s, "sent": w["sent"], "answered": w["answered"],
                    "lost": w["lost"], "p99": w["latency_ms"]["p99"],
                    "stale": w["stale_answers"],
                    "stale_names": w["stale_name_count"],
                    "rcodes": w["rcodes"]})
    return out


def loopback(addr):
    try:
        ip = ipaddress.ip_address(addr)
    except ValueError:
        return None
    return ip if ip.is_loopback else None


def parse_sources(spec):
    """127.0.0.2 | 127.0.0.2-101 | 127.0.0.2-127.0.0.101 | ::1."""
    if "-" not in spec:
        ip = loopback(spec)
        if ip is None:
            die("source %s is not a loopback address" % spec)
        return [str(ip)]
    a, b = spec.split("-", 1)
    lo = loopback(a)
    if lo is None or lo.version != 4:
        die("source range %s must be within 127.0.0.0/8" % spec)
    if "." not in b:
        b = a.rsplit(".", 1)[0] + "." + b
    hi = loopback(b)
    if hi is None or hi.version != 4 or int(hi) < int(lo):
        die("bad source range %s" % spec)
    if int(hi) - int(lo) + 1 > SOURCES_MAX:
        die("source range %s has more than %d addresses" % (spec, SOURCES_MAX))
    return [str(ipaddress.ip_address(x)) for x in range(int(lo), int(hi) + 1)]


def read_names(path):
    try:
        with open(path) as f:
            names = [ln.strip() for ln in f if ln.strip() and
                     not ln.startswith("#")]
    except OSError as e:
        die("cannot read %s: %s" % (path, e))
    if not names:
        die("no names in %s" % path)
    for n in names:
        encode_name(n)
    return names


def read_records(path):
    recs = []
    with open(path) as f:
        for ln in f:
            p = ln.rstrip("\n").split("\t")
            if len(p) != 6:
                continue
            codes = () if p[4] == "-" else tuple(int(c) for c in p[4].split(","))
            recs.append((float(p[0]), p[1], p[2], int(p[3]), codes,
                         None if p[5] == "-" else float(p[5])))
    return recs


def analyze(a):
    try:
        recs = read_records(a.analyze)
    except OSError as e:
        die("cannot read %s: %s" % (a.analyze, e))
    lo = a.since if a.since is not None else float("-inf")
    hi = a.until if a.until is not None else float("inf")
    sel = [r for r in recs if lo <= r[0] < hi and
           (a.only_group is None or r[1] == a.only_group)]
    out = summarize(sel, with_names=True)
    out.update({"since": a.since, "until": a.until, "group": a.only_group})
    if a.names_out:
        with open(a.names_out, "w") as f:
            for n in out["stale_names"]:
                f.write(n + "\n")
    print(json.dumps(out, sort_keys=True))
    return 0


class Group:
    def __init__(self, spec, default_names, run, suffix):
        p = spec.split(":")
        # An IPv6 source (::1) has colons: NAME:::1:RATE:MODE[:FILE].
        if len(p) >= 6 and p[1] == "" and p[2] == "" and p[3] == "1":
            p = [p[0], "::1"] + p[4:]
        if len(p) not in (4, 5):
            die("bad --group %s (NAME:SRC:RATE:MODE[:NAMES_FILE])" % spec)
        self.name = p[0]
        if not self.name or not all(c.isalnum() or c == "-" for c in self.name):
            die("group name must be letters, digits and '-': %r" % self.name)
        self.sources = parse_sources(p[1])
        try:
            self.rate = float(p[2])
        except ValueError:
            die("bad rate in --group %s" % spec)
        if not self.rate > 0:
            die("rate must be > 0 in --group %s" % spec)
        self.mode = p[3]
        if self.mode == "names":
            if len(p) == 5:
                self.names = read_names(p[4])
            elif default_names is not None:
                self.names = default_names
            else:
                die("group %s: mode names needs a names file" % self.name)
            self.wire = [encode_name(n) for n in self.names]
        elif self.mode == "unique":
            self.names = None
            self.tag = "-%s-%s.%s" % (run, self.name, suffix)
        else:
            die("mode must be names or unique in --group %s" % spec)
        self.socks = []
        self.k = 0          # queries sent so far
        self.recs = []      # indices into the global record list

    def next_query(self):
        """(socket index within the group, name key, wire name) of query k:
        the key is the index into names, or the unique name itself."""
        k = self.k
        self.k += 1
        ns = len(self.sources)
        if self.names is not None:
            nn = len(self.names)
            j = k % nn
            # Decorrelate sources from names: every source asks every name.
            return (k + k // nn) % ns, j, self.wire[j]
        name = "u%d%s" % (k, self.tag)
        return k % ns, name, encode_name(name)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--server", default="127.0.0.1")
    ap.add_argument("--port", type=int)
    ap.add_argument("--seconds", type=float)
    ap.add_argument("--timeout", type=float, default=2.0)
    ap.add_argument("--names", default=None)
    ap.add_argument("--suffix", default="storm.example.")
    ap.add_argument("--run", default=None)
    ap.add_argument("--group", action="append", default=[])
    ap.add_argument("--records", default=None)
    ap.add_argument("--windows", action="store_true")
    ap.add_argument("--analyze", default=None)
    ap.add_argument("--since", type=float, default=None)
    ap.add_argument("--until", type=float, default=None)
    ap.add_argument("--only-group", "--group-filter", dest="only_group",
                    default=None)
    ap.add_argument("--names-out", default=None)
    a = ap.parse_args()

    if a.analyze:
        if a.only_group is None and len(a.group) == 1 and ":" not in a.group[0]:
            a.only_group = a.group[0]
        return analyze(a)

    server = loopback(a.server)
    if server is None:
        die("only loopback targets (127.0.0.0/8, ::1) are allowed")
    if a.port is None or not 0 < a.port < 65536:
        die("bad port")
    if a.seconds is None or not 0 < a.seconds <= SECONDS_MAX:
        die("seconds must be in (0, %d]" % SECONDS_MAX)
    if not 0 < a.timeout <= TIMEOUT_MAX:
        die("timeout must be in (0, %g]" % TIMEOUT_MAX)
    if not a.group:
        die("at least one --group is needed")
    run = a.run or "%x%04x" % (os.getpid() & 0xffff, random.getrandbits(16))
    if not all(c.isalnum() for c in run):
        die("run tag must be letters and digits")
    suffix = a.suffix.strip(".") + "."
    default_names = read_names(a.names) if a.names else None
    groups = [Group(g, default_names, run, suffix) for g in a.group]
    if len({g.name for g in groups}) != len(groups):
        die("group names must differ")
    if sum(g.rate for g in groups) > RATE_MAX:
        die("total rate must be at most %d" % RATE_MAX)
    if sum(len(g.sources) for g in groups) > SOURCES_MAX:
        die("at most %d source addresses in all" % SOURCES_MAX)

    fam = socket.AF_INET6 if server.version == 6 else socket.AF_INET
    target = (str(server), a.port)
    sel = selectors.DefaultSelector()
    socks = []          # (socket, pending {id: record index}, next id)
    for gi, g in enumerate(groups):
        for src in g.sources:
            if (ipaddress.ip_address(src).version == 6) != (fam == socket.AF_INET6):
                die("source %s and server %s differ in family" % (src, a.server))
            s = socket.socket(fam, socket.SOCK_DGRAM)
            try:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
            except OSError:
                pass
            try:
                s.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
            except OSError:
                pass
            try:
                s.bind((src, 0))
            except OSError as e:
                die("cannot bind %s: %s" % (src, e))
            s.connect(target)
            s.setblocking(False)
            si = len(socks)
            socks.append([s, {}, random.getrandbits(16)])
            g.socks.append(si)
            sel.register(s, selectors.EVENT_READ, si)

    stop = {"flag": False}

    def on_signal(signum, frame):
        stop["flag"] = True
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    # The kernel turns receive timestamps on shortly after the first
    # request (a deferred static key): let that happen before measuring.
    time.sleep(0.05)

    # Records: parallel lists, one entry per query.
    r_t, r_g, r_name, r_rc, r_ede, r_lat, r_qlen = [], [], [], [], [], [], []
    r_send_ns, r_wire = [], []
    expiry = deque()    # (deadline monotonic, record index, sock index, id)
    totals = [int(g.rate * a.seconds) for g in groups]
    mismatched = late = send_errors = 0
    cmsg_space = socket.CMSG_SPACE(16)
    t0 = time.monotonic()
    t0_ns = time.time_ns()
    hard_end = t0 + a.seconds + a.timeout + 5.0

    def drain(si):
        nonlocal mismatched, late
        s, pending, _ = socks[si]
        for _ in range(4096):
            try:
                m, anc, _, _ = s.recvmsg(4096, cmsg_space)
            except (BlockingIOError, InterruptedError):
                return
            except ConnectionRefusedError:
                continue
            rt = None
            for lvl, typ, data in anc:
                if lvl == socket.SOL_SOCKET and typ == SO_TIMESTAMPNS and \
                        len(data) >= 16:
                    sec, nsec = struct.unpack_from("qq", data)
                    rt = sec * 1000000000 + nsec
            if rt is None:
                rt = time.time_ns()
            if len(m) < 12 or not m[2] & 0x80:
                mismatched += 1
                continue
            qid = (m[0] << 8) | m[1]
            k = pending.get(qid)
            if k is None:
                late += 1
                continue
            qend = 12 + r_qlen[k]
            if m[12:qend].lower() != r_wire[k].lower():
                mismatched += 1
                continue
            del pending[qid]
            lat = (rt - r_send_ns[k]) / 1e6
            r_lat[k] = lat if lat >= 0 else (time.time_ns() - r_send_ns[k]) / 1e6
            r_rc[k] = m[3] & 0xF
            try:
                r_ede[k] = parse_ede(m, qend + 4)
            except (struct.error, IndexError):
                r_ede[k] = ()

    while True:
        now = time.monotonic()
        if now > hard_end:
            break
        el = now - t0
        if not stop["flag"]:
            for gi, g in enumerate(groups):
                due = min(totals[gi], int(el * g.rate) + 1)
                while g.k < due:
                    sj, name, wire = g.next_query()
                    si = g.socks[sj]
                    s, pending, qid = socks[si]
                    tries = 0
                    while qid in pending and tries < 70000:
                        qid = (qid + 1) & 0xffff
                        tries += 1
                    if qid in pending:
                        break       # 65536 outstanding on this socket
                    socks[si][2] = (qid + 1) & 0xffff
                    k = len(r_t)
                    tn = time.time_ns()
                    try:
                        s.send(struct.pack("!H", qid) + HDR_TAIL + wire +
                               Q_TAIL + OPT)
                    except (BlockingIOError, ConnectionRefusedError, OSError):
                        send_errors += 1
                    pending[qid] = k
                    r_t.append((tn - t0_ns) / 1e9)
                    r_g.append(gi)
                    r_name.append(name)
                    r_wire.append(wire)
                    r_rc.append(-1)
                    r_ede.append(())
                    r_lat.append(None)
                    r_qlen.append(len(wire))
                    r_send_ns.append(tn)
                    expiry.append((time.monotonic() + a.timeout, k, si, qid))
                    g.recs.append(k)
        # Expire what is overdue.
        now = time.monotonic()
        while expiry and expiry[0][0] <= now:
            _, k, si, qid = expiry.popleft()
            pend = socks[si][1]
            if pend.get(qid) == k:
                del pend[qid]
        done_sending = stop["flag"] or all(
            g.k >= totals[i] for i, g in enumerate(groups))
        if done_sending and (not expiry or
                             not any(x[1] for x in socks)):
            break
        if done_sending:
            wait = 0.02
        else:
            nxt = min((g.k / g.rate) for i, g in enumerate(groups)
                      if g.k < totals[i])
            wait = min(0.01, max(0.001, t0 + nxt - time.monotonic()))
        for key, _ in sel.select(wait):
            drain(key.data)

    elapsed = time.monotonic() - t0
    for s in socks:
        s[0].close()

    def rec(k):
        g = groups[r_g[k]]
        name = r_name[k] if g.names is None else g.names[r_name[k]]
        return (r_t[k], g.name, name, r_rc[k], r_ede[k], r_lat[k])

    allrecs = [rec(k) for k in range(len(r_t))]
    out = summarize(allrecs)
    out.update({"run": run, "seconds": a.seconds, "timeout_s": a.timeout,
                "late": late, "mismatched": mismatched,
                "send_errors": send_errors,
                "stopped_early": any(g.k < totals[i]
                                     for i, g in enumerate(groups)),
                "t0_wall": round(t0_ns / 1e9, 6),
                "elapsed_s": round(elapsed, 3),
                "latency_source": "kernel receive timestamp (SO_TIMESTAMPNS)"})
    out["groups"] = {}
    for g in groups:
        gr = [allrecs[k] for k in g.recs]
        s = summarize(gr)
        s.update({"rate": g.rate, "mode": g.mode,
                  "sources": "%s-%s" % (g.sources[0], g.sources[-1])
                  if len(g.sources) > 1 else g.sources[0],
                  "nsources": len(g.sources)})
        if g.mode == "unique":
            s["name_pattern"] = "u<N>" + g.tag
        if a.windows:
            s["windows"] = windows(gr)
        out["groups"][g.name] = s
    if a.records:
        with open(a.records, "w") as f:
            for r in allrecs:
                f.write("%.6f\t%s\t%s\t%d\t%s\t%s\n" % (
                    r[0], r[1], r[2], r[3],
                    ",".join(str(c) for c in r[4]) if r[4] else "-",
                    "-" if r[5] is None else "%.3f" % r[5]))
    print(json.dumps(out, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
