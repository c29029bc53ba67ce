#!/usr/bin/env python3
"""dnsraw: send one raw DNS message to a loopback server and decode the reply.

Only 127.0.0.1 and ::1 are accepted as targets.  Every mode is bounded in
count and time.  Output is one line of key=value per reply, "timeout" when
nothing came back in time, or "closed" when a TCP server closed first.

Build a query:
  dnsraw.py --port P --name www.example.com --type A [--id N]
            [--flags rd,cd,z,qr,aa,tc,ra,ad|0xNNNN] [--opcode N]
            [--class IN|CH|N] [--qdcount N] [--ancount N] [--nscount N]
            [--edns] [--do] [--bufsize N] [--edns-version N]
            [--opt-raw HEX] [--opt-flags 0xNNNN] [--pad N] [--tcp]
Send bytes verbatim:
  dnsraw.py --port P --hex 'ab cd ...' [--tcp]
  --probe NAME [--grace S]      (UDP) right after the message, from the same
                                socket, send an A query for NAME (ID 0xBEEF);
                                print "noreply probe=RCODE" if the probe's
                                reply came and nothing else did within S
                                seconds after it, else the other reply
TCP tricks:
  --tcp-pipeline N NAME...      N queries (IDs --id, --id+1, ...; names
                                cycled) in one write; one line per reply in
                                arrival order, each with id= and qname=
  --tcp-lenprefix-lie short|long  length prefix 5 bytes short / 100 long
  --tcp-split-ms MS             length prefix, MS ms later the message
  --tcp-half-close              with --tcp: shut down the write side right
                                after the query, then read the reply
  --tcp-trickle-ms MS           length prefix promising 300 bytes, then one
                                byte every MS ms until the server closes or
                                --timeout: "closed after=S sent=N" or "open"
  --tcp-idle                    connect, send nothing, print
                                "closed after=SECONDS" or "open"
  --tcp-hold N --hold-seconds S  keep N idle connections open S seconds;
                                prints "held N" once all are connected and
                                "closed K" at the end (K closed by the server)
UDP noise:
  --garbage N [--seed S]        N random datagrams (0..600 bytes); prints
                                "sent=N replies=M" after --timeout
A tiny upstream (for cases fakeup cannot produce):
  --serve-nosoa --port P --log FILE [--serve-seconds S]
                                answers every query NXDOMAIN without SOA
                                (TTL-less negative answer), UDP only
"""

import argparse
import random
import select
import socket
import struct
import sys
import time

TYPES = {
    "A": 1, "NS": 2, "CNAME": 5, "SOA": 6, "PTR": 12, "HINFO": 13, "MX": 15,
    "TXT": 16, "AAAA": 28, "SRV": 33, "OPT": 41, "DS": 43, "RRSIG": 46,
    "DNSKEY": 48, "HTTPS": 65, "IXFR": 251, "AXFR": 252, "ANY": 255,
    "CAA": 257,
}
TYPE_NAMES = {v: k for k, v in TYPES.items()}
CLASSES = {"IN": 1, "CH": 3, "HS": 4, "NONE": 254, "ANY": 255}
RCODES = {0: "NOERROR", 1: "FORMERR", 2: "SERVFAIL", 3: "NXDOMAIN",
          4: "NOTIMP", 5: "REFUSED", 6: "YXDOMAIN", 7: "YXRRSET",
          8: "NXRRSET", 9: "NOTAUTH", 10: "NOTZONE", 16: "BADVERS",
          23: "BADCOOKIE"}
FLAG_BITS = [("qr", 0x8000), ("aa", 0x0400), ("tc", 0x0200), ("rd", 0x0100),
             ("ra", 0x0080), ("z", 0x0040), ("ad", 0x0020), ("cd", 0x0010)]
ALLOWED = ("127.0.0.1", "::1")


def die(msg):
    print("error " + msg)
    sys.exit(2)


def encode_name(name):
    """Presentation name to wire form, keeping letter case exactly."""
    if name in (".", ""):
        return b"\x00"
    out = b""
    for label in name.rstrip(".").split("."):
        b = label.encode("latin-1")
        if len(b) > 255:
            die("label too long to encode")
        out += bytes([len(b)]) + b  # no check: tests send bad labels on purpose
    return out + b"\x00"


def read_name(msg, off):
    """Decodes a possibly compressed name: (text, offset after it)."""
    labels = []
    end = None
    jumps = 0
    while True:
        if off >= len(msg):
            raise ValueError("name runs past the end")
        n = msg[off]
        if n & 0xC0 == 0xC0:
            if off + 1 >= len(msg):
                raise ValueError("truncated pointer")
            if end is None:
                end = off + 2
            jumps += 1
            if jumps > 64:
                raise ValueError("pointer loop")
            off = ((n & 0x3F) << 8) | msg[off + 1]
            continue
        if n & 0xC0:
            raise ValueError("bad label type")
        if n == 0:
            off += 1
            break
        lab = msg[off + 1:off + 1 + n]
        if len(lab) != n:
            raise ValueError("label runs past the end")
        s = ""
        for c in lab:
            if c in b".\\" or c <= 0x20 or c >= 0x7F:
                s += "\\%03d" % c
            else:
                s += chr(c)
        labels.append(s)
        off += 1 + n
    return (".".join(labels) + ".") if labels else ".", (end if end is not None else off)


def parse_type(t):
    t = str(t).upper()
    if t in TYPES:
        return TYPES[t]
    if t.startswith("TYPE"):
        t = t[4:]
    return int(t, 0)


def parse_class(c):
    c = str(c).upper()
    if c in CLASSES:
        return CLASSES[c]
    if c.startswith("CLASS"):
        c = c[5:]
    return int(c, 0)


def parse_flags(s):
    if not s:
        return 0
    if s.lower().startswith("0x") or s.isdigit():
        return int(s, 0)
    v = 0
    names = dict(FLAG_BITS)
    for f in s.replace("+", ",").split(","):
        f = f.strip().lower()
        if not f:
            continue
        if f not in names:
            die("unknown flag " + f)
        v |= names[f]
    return v


def build_query(a, name=None, qid=None):
    name = a.name if name is None else name
    qid = a.id if qid is None else qid
    flags = parse_flags(a.flags)
    flags |= (a.opcode & 0xF) << 11
    edns = a.edns or a.do or a.bufsize is not None or \
        a.edns_version is not None or a.opt_raw is not None or \
        a.opt_flags is not None
    ar = 1 if edns else 0
    qd = 1 if a.qdcount is None else a.qdcount
    an = a.ancount or 0
    ns = a.nscount or 0
    if a.arcount is not None:
        ar = a.arcount
    msg = struct.pack("!HHHHHH", qid & 0xFFFF, flags, qd, an, ns, ar)
    msg += encode_name(name) + struct.pack("!HH", parse_type(a.type),
                                           parse_class(a.qclass))
    if edns:
        rdata = bytes.fromhex(a.opt_raw.replace(" ", "")) if a.opt_raw else b""
        eflags = 0x8000 if a.do else 0
        if a.opt_flags is not None:
            eflags |= int(a.opt_flags, 0)
        ver = a.edns_version or 0
        size = 1232 if a.bufsize is None else a.bufsize
        msg += b"\x00" + struct.pack("!HHBBHH", 41, size, 0, ver, eflags,
                                     len(rdata)) + rdata
    if a.pad:
        msg += b"\x00" * a.pad
    return msg


def decode(msg):
    """One line of key=value describing a DNS message."""
    if len(msg) < 12:
        return "short len=%d hex=%s" % (len(msg), msg.hex())
    qid, flags, qd, an, ns, ar = struct.unpack("!HHHHHH", msg[:12])
    fl = [n for n, b in FLAG_BITS if flags & b]
    out = {"id": qid, "flags": ",".join(fl) if fl else "-",
           "opcode": (flags >> 11) & 0xF, "z": 1 if flags & 0x40 else 0,
           "qdcount": qd, "ancount": an, "nscount": ns, "arcount": ar,
           "len": len(msg)}
    rcode = flags & 0xF
    off = 12
    err = None
    qname = "-"
    qtype = "-"
    qname_hex = "-"
    ttls, nsttls, data, soamin = [], [], [], []
    opt = "no"
    udpsize = ednsver = "-"
    do = "-"
    eflags = "-"
    ede, opts = [], []
    try:
        for i in range(qd):
            start = off
            n, off = read_name(msg, off)
            if off + 4 > len(msg):
                raise ValueError("question truncated")
            t, c = struct.unpack("!HH", msg[off:off + 4])
            if i == 0:
                qname = n
                qname_hex = msg[start:off].hex()
                qtype = TYPE_NAMES.get(t, "TYPE%d" % t)
                out["qclass"] = c
            off += 4
        for sec, count in ((1, an), (2, ns), (3, ar)):
            for _ in range(count):
                owner_off = off
                owner, off = read_name(msg, off)
                if off + 10 > len(msg):
                    raise ValueError("rr truncated")
                t, c, ttl, rdlen = struct.unpack("!HHIH", msg[off:off + 10])
                off += 10
                rd = msg[off:off + rdlen]
                if len(rd) != rdlen:
                    raise ValueError("rdata truncated")
                if t == 41:
                    if opt == "yes":
                        opt = "multiple"
                    else:
                        opt = "yes"
                    udpsize = c
                    rcode |= (ttl >> 24) << 4
                    ednsver = (ttl >> 16) & 0xFF
                    do = 1 if ttl & 0x8000 else 0
                    eflags = "0x%04x" % (ttl & 0xFFFF)
                    if msg[owner_off] != 0:
                        opt += "-badowner"
                    p = 0
                    while p + 4 <= len(rd):
                        oc, ol = struct.unpack("!HH", rd[p:p + 4])
                        opts.append(str(oc))
                        if oc == 15 and ol >= 2:
                            ede.append(str(struct.unpack("!H", rd[p + 4:p + 6])[0]))
                        p += 4 + ol
                elif sec == 1:
                    ttls.append(str(ttl))
                    if t == 1 and rdlen == 4:
                        data.append(socket.inet_ntop(socket.AF_INET, rd))
                    elif t == 28 and rdlen == 16:
                        data.append(socket.inet_ntop(socket.AF_INET6, rd))
                    elif t == 16:
                        data.append("txt%d" % rdlen)
                    else:
                        data.append(TYPE_NAMES.get(t, "TYPE%d" % t))
                elif sec == 2:
                    nsttls.append(str(ttl))
                    if t == 6:
                        try:
                            _, p = read_name(msg, off)
                            _, p = read_name(msg, p)
                            soamin.append(str(struct.unpack("!I", msg[p + 16:p + 20])[0]))
                        except (ValueError, struct.error):
                            soamin.append("?")
                off += rdlen
        if off != len(msg):
            err = "trailing%d" % (len(msg) - off)
    except (ValueError, struct.error) as e:
        err = str(e).replace(" ", "_")
    out.update({"rcode": RCODES.get(rcode, str(rcode)), "rcode_num": rcode,
                "qname": qname, "qname_hex": qname_hex, "qtype": qtype,
                "opt": opt, "udpsize": udpsize, "ednsver": ednsver, "do": do,
                "ednsflags": eflags, "ede": ",".join(ede) or "-",
                "opts": ",".join(opts) or "-", "ttls": ",".join(ttls) or "-",
                "nsttls": ",".join(nsttls) or "-",
                "soamin": ",".join(soamin) or "-",
                "data": ",".join(data) or "-"})
    if err:
        out["parse_error"] = err
    keys = ["id", "flags", "opcode", "rcode", "rcode_num", "z", "qdcount",
            "ancount", "nscount", "arcount", "qname", "qname_hex", "qtype",
            "opt", "udpsize", "ednsver", "do", "ednsflags", "ede", "opts",
            "ttls", "nsttls", "soamin", "data", "len"]
    line = " ".join("%s=%s" % (k, out[k]) for k in keys)
    if "qclass" in out:
        line += " qclass=%d" % out["qclass"]
    if err:
        line += " parse_error=" + err
    return line


def family(addr):
    return socket.AF_INET6 if ":" in addr else socket.AF_INET


def udp_exchange(a, msg):
    s = socket.socket(family(a.server), socket.SOCK_DGRAM)
    s.settimeout(a.timeout)
    s.connect((a.server, a.port))
    try:
        s.send(msg)
        deadline = time.monotonic() + a.timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return "timeout"
            s.settimeout(left)
            try:
                rep = s.recv(65535)
            except ConnectionRefusedError:
                return "refused"
            return decode(rep)
    except socket.timeout:
        return "timeout"
    finally:
        s.close()


def udp_probe(a, msg):
    """Sends msg, then a probe query; reports whether msg got any reply."""
    s = socket.socket(family(a.server), socket.SOCK_DGRAM)
    s.connect((a.server, a.port))
    # The probe is a plain query whatever the options said.
    probe = struct.pack("!HHHHHH", 0xBEEF, 0x0100, 1, 0, 0, 0) + \
        encode_name(a.probe) + struct.pack("!HH", 1, 1)
    others = []
    probe_rc = None
    try:
        s.send(msg)
        s.send(probe)
        deadline = time.monotonic() + a.timeout
        while time.monotonic() < deadline:
            s.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                rep = s.recv(65535)
            except socket.timeout:
                break
            except ConnectionRefusedError:
                return "refused"
            if len(rep) >= 12 and rep[:2] == b"\xbe\xef" and probe_rc is None:
                probe_rc = RCODES.get(rep[3] & 0xF, str(rep[3] & 0xF))
                deadline = time.monotonic() + a.grace
            else:
                others.append(rep)
    finally:
        s.close()
    if others:
        return decode(others[0])
    if probe_rc is None:
        return "timeout"
    return "noreply probe=%s" % probe_rc


def tcp_connect(a):
    s = socket.socket(family(a.server), socket.SOCK_STREAM)
    s.settimeout(a.timeout)
    s.connect((a.server, a.port))
    return s


def recv_exact(s, n, deadline):
    buf = b""
    while len(buf) < n:
        left = deadline - time.monotonic()
        if left <= 0:
            raise socket.timeout()
        s.settimeout(left)
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise EOFError()
        buf += chunk
    return buf


def tcp_read_one(s, deadline):
    ln = struct.unpack("!H", recv_exact(s, 2, deadline))[0]
    return recv_exact(s, ln, deadline)


def tcp_exchange(a, msg):
    try:
        s = tcp_connect(a)
    except ConnectionRefusedError:
        return "refused"
    except socket.timeout:
        return "timeout"
    deadline = time.monotonic() + a.timeout
    try:
        if a.tcp_lenprefix_lie == "short":
            s.sendall(struct.pack("!H", max(len(msg) - 5, 0)) + msg)
        elif a.tcp_lenprefix_lie == "long":
            s.sendall(struct.pack("!H", len(msg) + 100) + msg)
        elif a.tcp_split_ms is not None:
            s.sendall(struct.pack("!H", len(msg)))
            time.sleep(a.tcp_split_ms / 1000.0)
            s.sendall(msg)
        else:
            s.sendall(struct.pack("!H", len(msg)) + msg)
        if a.tcp_half_close:
            s.shutdown(socket.SHUT_WR)
        if a.tcp_lenprefix_lie == "long":
            # Nothing can come back but a close; report when it happens.
            t0 = time.monotonic()
            try:
                data = recv_exact(s, 2, deadline)
                return "data " + data.hex()
            except EOFError:
                return "closed after=%.2f" % (time.monotonic() - t0)
            except ConnectionResetError:
                return "closed after=%.2f" % (time.monotonic() - t0)
        return decode(tcp_read_one(s, deadline))
    except socket.timeout:
        return "timeout"
    except (EOFError, ConnectionResetError, BrokenPipeError):
        return "closed"
    finally:
        s.close()


def tcp_pipeline(a):
    names = a.names or [a.name]
    msgs = []
    for i in range(a.tcp_pipeline):
        q = build_query(a, names[i % len(names)], (a.id + i) & 0xFFFF)
        msgs.append(struct.pack("!H", len(q)) + q)
    try:
        s = tcp_connect(a)
    except (ConnectionRefusedError, socket.timeout):
        print("refused")
        return 1
    deadline = time.monotonic() + a.timeout
    s.sendall(b"".join(msgs))
    got = 0
    try:
        while got < a.tcp_pipeline:
            print(decode(tcp_read_one(s, deadline)))
            sys.stdout.flush()
            got += 1
    except socket.timeout:
        print("timeout")
    except (EOFError, ConnectionResetError):
        print("closed")
    s.close()
    print("replies=%d" % got)
    return 0


def tcp_idle(a):
    s = tcp_connect(a)
    t0 = time.monotonic()
    try:
        data = recv_exact(s, 1, t0 + a.timeout)
        print("data " + data.hex())
    except (EOFError, ConnectionResetError):
        print("closed after=%.2f" % (time.monotonic() - t0))
    except socket.timeout:
        print("open")
    s.close()
    return 0


def tcp_trickle(a):
    s = tcp_connect(a)
    t0 = time.monotonic()
    sent = 0
    try:
        s.sendall(struct.pack("!H", 300))
        while time.monotonic() - t0 < a.timeout and sent < 298:
            r, _, _ = select.select([s], [], [], a.tcp_trickle_ms / 1000.0)
            if r:
                if not s.recv(1):
                    raise EOFError()
                continue
            s.sendall(b"\x00")
            sent += 1
        print("open sent=%d" % sent)
    except (EOFError, ConnectionResetError, BrokenPipeError):
        print("closed after=%.2f sent=%d" % (time.monotonic() - t0, sent))
    s.close()
    return 0


def tcp_hold(a):
    socks = []
    for _ in range(a.tcp_hold):
        socks.append(tcp_connect(a))
    print("held %d" % len(socks))
    sys.stdout.flush()
    closed = set()
    deadline = time.monotonic() + a.hold_seconds
    while time.monotonic() < deadline and len(closed) < len(socks):
        live = [s for s in socks if s not in closed]
        r, _, _ = select.select(live, [], [], max(0.0, min(0.2, deadline - time.monotonic())))
        for s in r:
            try:
                if not s.recv(1):
                    closed.add(s)
            except OSError:
                closed.add(s)
    print("closed %d" % len(closed))
    for s in socks:
        s.close()
    return 0


def garbage(a):
    rnd = random.Random(a.seed)
    s = socket.socket(family(a.server), socket.SOCK_DGRAM)
    s.connect((a.server, a.port))
    s.setblocking(False)
    replies = 0
    for i in range(a.garbage):
        n = rnd.randrange(0, 601)
        pkt = bytes(rnd.randrange(256) for _ in range(n))
        try:
            s.send(pkt)
        except OSError:
            pass
        if i % 20 == 19:
            time.sleep(0.005)
        try:
            while s.recv(65535):
                replies += 1
        except OSError:
            pass
    deadline = time.monotonic() + a.timeout
    while time.monotonic() < deadline:
        r, _, _ = select.select([s], [], [], deadline - time.monotonic())
        if not r:
            break
        try:
            s.recv(65535)
            replies += 1
        except OSError:
            pass
    print("sent=%d replies=%d" % (a.garbage, replies))
    return 0


def serve_nosoa(a):
    """UDP server: NXDOMAIN (or --serve-rcode) without an SOA, bounded."""
    s = socket.socket(family(a.server), socket.SOCK_DGRAM)
    s.bind((a.server, a.port))
    log = open(a.log, "a") if a.log else None
    deadline = time.monotonic() + a.serve_seconds
    while time.monotonic() < deadline:
        r, _, _ = select.select([s], [], [], min(0.5, max(0.0, deadline - time.monotonic())))
        if not r:
            continue
        q, peer = s.recvfrom(65535)
        if len(q) < 12:
            continue
        qid, flags, qd = struct.unpack("!HHH", q[:6])
        if flags & 0x8000 or qd != 1:
            continue
        try:
            name, off = read_name(q, 12)
        except ValueError:
            continue
        qtype = struct.unpack("!H", q[off:off + 2])[0]
        if log:
            log.write("udp %s %s %d\n" % (name, TYPE_NAMES.get(qtype, "TYPE%d" % qtype), qid))
            log.flush()
        rflags = 0x8000 | 0x0400 | 0x0080 | (flags & 0x0110) | (a.serve_rcode & 0xF)
        rep = struct.pack("!HHHHHH", qid, rflags, 1, 0, 0, 0) + q[12:off + 4]
        s.sendto(rep, peer)
    return 0


def main():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--server", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--tcp", action="store_true")
    p.add_argument("--timeout", type=float, default=2.0)
    p.add_argument("--name", default="www.example.com.")
    p.add_argument("--type", default="A")
    p.add_argument("--class", dest="qclass", default="IN")
    p.add_argument("--id", type=lambda x: int(x, 0), default=0x1234)
    p.add_argument("--flags", default="rd")
    p.add_argument("--opcode", type=int, default=0)
    p.add_argument("--qdcount", type=int)
    p.add_argument("--ancount", type=int)
    p.add_argument("--nscount", type=int)
    p.add_argument("--arcount", type=int)
    p.add_argument("--edns", action="store_true")
    p.add_argument("--do", action="store_true")
    p.add_argument("--bufsize", type=int)
    p.add_argument("--edns-version", type=int)
    p.add_argument("--opt-raw")
    p.add_argument("--opt-flags")
    p.add_argument("--pad", type=int, default=0)
    p.add_argument("--hex")
    p.add_argument("--print-query", action="store_true",
                   help="print the query's hex instead of sending it")
    p.add_argument("--probe")
    p.add_argument("--grace", type=float, default=0.3)
    p.add_argument("--tcp-pipeline", type=int)
    p.add_argument("--tcp-lenprefix-lie", choices=["short", "long"])
    p.add_argument("--tcp-split-ms", type=int)
    p.add_argument("--tcp-idle", action="store_true")
    p.add_argument("--tcp-half-close", action="store_true")
    p.add_argument("--tcp-trickle-ms", type=int)
    p.add_argument("--tcp-hold", type=int)
    p.add_argument("--hold-seconds", type=float, default=2.0)
    p.add_argument("--garbage", type=int)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--serve-nosoa", action="store_true")
    p.add_argument("--serve-rcode", type=int, default=3)
    p.add_argument("--serve-seconds", type=float, default=60.0)
    p.add_argument("--log")
    p.add_argument("names", nargs="*")
    a = p.parse_args()

    if a.server not in ALLOWED:
        die("only 127.0.0.1 and ::1 are allowed")
    if a.timeout > 120 or (a.garbage or 0) > 10000 or \
            (a.tcp_pipeline or 0) > 1000 or (a.tcp_hold or 0) > 200 or \
            a.hold_seconds > 120 or a.serve_seconds > 600:
        die("limits exceeded")

    if a.serve_nosoa:
        return serve_nosoa(a)
    if a.garbage:
        return garbage(a)
    if a.tcp_idle:
        return tcp_idle(a)
    if a.tcp_hold:
        return tcp_hold(a)
    if a.tcp_trickle_ms:
        return tcp_trickle(a)
    if a.tcp_pipeline:
        return tcp_pipeline(a)
    if a.hex is not None:
        msg = bytes.fromhex("".join(a.hex.split()))
    else:
        msg = build_query(a)
    if a.print_query:
        print(msg.hex())
        return 0
    if a.tcp:
        print(tcp_exchange(a, msg))
    elif a.probe:
        print(udp_probe(a, msg))
    else:
        print(udp_exchange(a, msg))
    return 0


if __name__ == "__main__":
    sys.exit(main())
