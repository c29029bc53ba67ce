#!/usr/bin/env python3
"""udpmitm: a UDP relay on loopback that tampers with answers, for tests.

  udpmitm.py --listen PORT --to PORT --mode-file FILE [--pidfile FILE]

Relays datagrams from clients on 127.0.0.1:PORT to the server on
127.0.0.1:TO and its answers back.  Before each answer it reads FILE, one
word, the mode:
  pass           the answer as it is
  corrupt-first  a copy with one byte of its last 16 flipped, then the answer
  corrupt-only   only that copy: the client never gets a good answer
  replay-first   the previous answer relayed (to any client), again, then
                 the answer
Only loopback addresses are used.  It stops on SIGTERM, or after 120 s (a
test that forgot it must not leave it running).
"""
import argparse
import os
import selectors
import signal
import socket
import sys
import time


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--listen", type=int, required=True)
    ap.add_argument("--to", type=int, required=True)
    ap.add_argument("--mode-file", required=True)
    ap.add_argument("--pidfile")
    a = ap.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    front = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    front.bind(("127.0.0.1", a.listen))
    sel = selectors.DefaultSelector()
    sel.register(front, selectors.EVENT_READ, None)
    backs = {}  # client address -> its socket to the server
    last = None  # the last answer relayed
    if a.pidfile:
        with open(a.pidfile + ".tmp", "w") as f:
            f.write("%d\n" % os.getpid())
        os.rename(a.pidfile + ".tmp", a.pidfile)
    end = time.monotonic() + 120
    while time.monotonic() < end:
        for key, _ in sel.select(timeout=1):
            if key.data is None:
                data, client = front.recvfrom(65535)
                b = backs.get(client)
                if b is None:
                    if len(backs) >= 256:
                        continue
                    b = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                    b.connect(("127.0.0.1", a.to))
                    backs[client] = b
                    sel.register(b, selectors.EVENT_READ, client)
                b.send(data)
                continue
            client = key.data
            data = key.fileobj.recv(65535)
            try:
                with open(a.mode_file) as f:
                    mode = f.read().strip()
            except OSError:
                mode = "pass"
            if mode in ("corrupt-first", "corrupt-only") and len(data) > 16:
                bad = bytearray(data)
                bad[-1 - (len(data) % 16)] ^= 0x5A
                front.sendto(bytes(bad), client)
                if mode == "corrupt-only":
                    continue
            elif mode == "replay-first" and last is not None:
                front.sendto(last, client)
            last = data
            front.sendto(data, client)


if __name__ == "__main__":
    main()
