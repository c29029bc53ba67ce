#!/usr/bin/env python3
"""tcpchurn: new TCP connections that each displace the idle one before.

  tcpchurn.py --port P --connections N [--timeout 2] [--tag T]

Opens N connections to 127.0.0.1 PORT one after the other.  On each it
asks one A query (<tag>-<i>.example.), reads the answer and leaves the
connection open and idle; then it waits up to --timeout seconds for the
server to close the connection before it (which a server at a
tcp-max-connections of 1 does to make room).  Prints one line:
"served S displaced D" (S answers with the right ID and NOERROR, D earlier
connections closed by the server).  N <= 100, timeout <= 30.
"""

import argparse
import socket
import struct
import sys


def recv_exact(s, n):
    out = b""
    while len(out) < n:
        b = s.recv(n - len(out))
        if not b:
            return None
        out += b
    return out


def ask(s, qid, name):
    qname = b"".join(bytes([len(l)]) + l.encode()
                     for l in name.split(".") if l) + b"\0"
    m = struct.pack(">HHHHHH", qid, 0x0100, 1, 0, 0, 0) + qname + \
        struct.pack(">HH", 1, 1)
    s.sendall(struct.pack(">H", len(m)) + m)
    n = recv_exact(s, 2)
    body = n and recv_exact(s, struct.unpack(">H", n)[0])
    return bool(body) and len(body) >= 4 and \
        struct.unpack(">H", body[:2])[0] == qid and body[3] & 15 == 0


def closed_by_server(s):
    try:
        return s.recv(1) == b""
    except socket.timeout:
        return False
    except OSError:
        return True


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--connections", type=int, required=True)
    ap.add_argument("--timeout", type=float, default=2)
    ap.add_argument("--tag", default="churn")
    a = ap.parse_args()
    if not (0 < a.connections <= 100 and 0 < a.timeout <= 30):
        sys.exit("tcpchurn: connections <= 100, timeout <= 30")
    served = displaced = 0
    prev = None
    for i in range(a.connections):
        s = socket.create_connection(("127.0.0.1", a.port), timeout=a.timeout)
        try:
            served += ask(s, i + 1, "%s-%d.example" % (a.tag, i))
        except OSError:
            pass
        if prev is not None:
            displaced += closed_by_server(prev)
            prev.close()
        prev = s
    prev.close()
    print("served %d displaced %d" % (served, displaced))


if __name__ == "__main__":
    main()
