#!/usr/bin/env python3
"""burst: identical queries from many sockets at once, for loopback tests.

  burst.py --port P --rounds N --sockets S --zone ZONE --tag TAG
           [--gap 0.3] [--timeout 3]

Round r sends the same A query for b<r>-<TAG>.<ZONE> from S UDP sockets
(each its own source port, so SO_REUSEPORT spreads them over the workers)
within a millisecond or so, then waits up to --timeout seconds for every
reply.  A name new to the server is a miss that the queries of each worker
share (coalesced misses).  Only 127.0.0.1 is a target; rounds <= 200,
sockets <= 64, timeout <= 10.  Prints one JSON line: rounds, sent,
answered, lost, rcodes {NAME: count}, seconds.
"""

import argparse
import json
import random
import selectors
import socket
import struct
import sys
import time

RCODES = {0: "NOERROR", 1: "FORMERR", 2: "SERVFAIL", 3: "NXDOMAIN",
          4: "NOTIMP", 5: "REFUSED"}


def query(qid, name):
    q = struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0)
    for lab in name.rstrip(".").split("."):
        q += bytes([len(lab)]) + lab.encode()
    return q + b"\0" + struct.pack("!HH", 1, 1)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--rounds", type=int, required=True)
    ap.add_argument("--sockets", type=int, required=True)
    ap.add_argument("--zone", required=True)
    ap.add_argument("--tag", required=True)
    ap.add_argument("--gap", type=float, default=0.3)
    ap.add_argument("--timeout", type=float, default=3)
    a = ap.parse_args()
    if not (0 < a.rounds <= 200 and 0 < a.sockets <= 64 and
            0 < a.timeout <= 10 and 0 <= a.gap <= 5):
        sys.exit("burst: rounds <= 200, sockets <= 64, timeout <= 10, gap <= 5")
    socks = []
    for _ in range(a.sockets):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("127.0.0.1", 0))
        s.setblocking(False)
        socks.append(s)
    sel = selectors.DefaultSelector()
    for s in socks:
        sel.register(s, selectors.EVENT_READ)
    sent = answered = 0
    rcodes = {}
    t0 = time.monotonic()
    for r in range(a.rounds):
        name = "b%d-%s.%s" % (r, a.tag, a.zone)
        want = {}
        for s in socks:
            qid = random.randrange(65536)
            s.sendto(query(qid, name), ("127.0.0.1", a.port))
            want[s] = qid
            sent += 1
        deadline = time.monotonic() + a.timeout
        while want and time.monotonic() < deadline:
            for key, _ in sel.select(max(0.0, deadline - time.monotonic())):
                s = key.fileobj
                try:
                    m = s.recv(4096)
                except BlockingIOError:
                    continue
                if len(m) < 12 or s not in want:
                    continue
                qid, flags = struct.unpack("!HH", m[:4])
                if qid != want[s]:
                    continue
                del want[s]
                answered += 1
                rc = RCODES.get(flags & 15, str(flags & 15))
                rcodes[rc] = rcodes.get(rc, 0) + 1
        time.sleep(a.gap)
    print(json.dumps({"rounds": a.rounds, "sent": sent, "answered": answered,
                      "lost": sent - answered, "rcodes": rcodes,
                      "seconds": round(time.monotonic() - t0, 2)}))


if __name__ == "__main__":
    main()
