#!/usr/bin/env python3
"""tcpclient: a bounded DNS-over-TCP client that pipelines, for loopback tests.

  tcpclient.py --port P --rate R --seconds T --names FILE [--timeout 3]

Sends one A query every 1/RATE seconds for SECONDS seconds on one TCP
connection to 127.0.0.1 PORT, cycling over the names in FILE (one a line),
without waiting for answers (RFC 7766 pipelining).  A connection the server
closes is replaced, and the queries it had not answered are sent again on the
new one, as RFC 7766 6.2.1 asks of clients.  A query is lost when no answer
came TIMEOUT seconds after it was first sent.  Prints one JSON line: sent,
answered, lost, rcodes {NAME: count}, reconnects.  Rate <= 1000, seconds <=
60, timeout <= 10.
"""

import argparse
import json
import selectors
import socket
import struct
import sys
import time

RCODES = {0: "NOERROR", 1: "FORMERR", 2: "SERVFAIL", 3: "NXDOMAIN",
          4: "NOTIMP", 5: "REFUSED"}


def query(qid, name):
    q = struct.pack(">HHHHHH", qid, 0x0100, 1, 0, 0, 0)
    for lab in name.rstrip(".").split("."):
        q += bytes([len(lab)]) + lab.encode()
    return q + b"\0" + struct.pack(">HH", 1, 1)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--rate", type=int, required=True)
    ap.add_argument("--seconds", type=float, required=True)
    ap.add_argument("--names", required=True)
    ap.add_argument("--timeout", type=float, default=3)
    a = ap.parse_args()
    if not (0 < a.rate <= 1000 and 0 < a.seconds <= 60 and 0 < a.timeout <= 10):
        sys.exit("tcpclient: rate <= 1000, seconds <= 60, timeout <= 10")
    names = [l.strip() for l in open(a.names) if l.strip()]
    total = int(a.rate * a.seconds)
    pending = {}           # id -> (first sent, wire)
    rcodes = {}
    answered = lost = reconnects = 0
    sel = selectors.DefaultSelector()
    sock = None
    buf = b""

    def connect():
        nonlocal sock, buf
        for _ in range(50):
            try:
                s = socket.create_connection(("127.0.0.1", a.port), timeout=2)
                s.setblocking(False)
                sock, buf = s, b""
                sel.register(sock, selectors.EVENT_READ)
                return
            except OSError:
                time.sleep(0.02)   # a listener between two owners: retry
        sys.exit("tcpclient: cannot connect")

    def send(wire):
        msg = struct.pack(">H", len(wire)) + wire
        sock.setblocking(True)
        try:
            sock.sendall(msg)
        finally:
            sock.setblocking(False)

    connect()
    start = time.monotonic()
    sent = 0
    while True:
        now = time.monotonic()
        while sent < total and now >= start + sent / a.rate:
            qid = sent % 65536
            wire = query(qid, names[sent % len(names)])
            pending[qid] = (now, wire)
            try:
                send(wire)
            except OSError:
                pass       # resent below once the close is seen
            sent += 1
        for qid in [q for q, (t, _) in pending.items() if now - t > a.timeout]:
            del pending[qid]
            lost += 1
        if sent >= total and not pending:
            break
        if now > start + a.seconds + a.timeout + 1:
            lost += len(pending)
            break
        wait = max(0.0, min(0.05, start + sent / a.rate - now))
        closed = False
        for _key, _ev in sel.select(timeout=wait):
            try:
                data = sock.recv(65536)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:
                data = b""
            if not data:
                closed = True
                break
            buf += data
            while len(buf) >= 2:
                n = struct.unpack(">H", buf[:2])[0]
                if len(buf) < 2 + n:
                    break
                m, buf = buf[2:2 + n], buf[2 + n:]
                if len(m) < 12:
                    continue
                qid, flags = struct.unpack(">HH", m[:4])
                if qid in pending:
                    del pending[qid]
                    answered += 1
                    rc = RCODES.get(flags & 0xF, str(flags & 0xF))
                    rcodes[rc] = rcodes.get(rc, 0) + 1
        if closed:
            sel.unregister(sock)
            sock.close()
            reconnects += 1
            connect()
            for qid, (_t, wire) in list(pending.items()):
                try:
                    send(wire)
                except OSError:
                    pass
    print(json.dumps({"sent": sent, "answered": answered, "lost": lost,
                      "rcodes": rcodes, "reconnects": reconnects}))


if __name__ == "__main__":
    main()
