#!/usr/bin/env python3
"""enctool: the arithmetic of tests/bench/encrypted.sh.

  enctool.py sum DNSPERF_OUT TEST TARGET ROUND CPU_PCT SYNS   one TSV row
  enctool.py rate TSV            a quarter of the lowest median capacity
  enctool.py report TSV NAME=LABEL...   the Markdown table
"""
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchtool  # noqa: E402  (dnsperf_summary, pct)


def load(path):
    rows = []
    with open(path) as f:
        head = f.readline().rstrip("\n").split("\t")
        for ln in f:
            rows.append(dict(zip(head, ln.rstrip("\n").split("\t"))))
    return rows


def med(rows, test, target, key):
    v = [float(r[key]) for r in rows
         if r["test"] == test and r["target"] == target and r[key] != "-"]
    return statistics.median(v) if v else None


def main():
    cmd = sys.argv[1]
    if cmd == "sum":
        out, test, target, rnd, cpu, syns = sys.argv[2:8]
        s = benchtool.dnsperf_summary(out)
        p50 = benchtool.pct(s["lat"], 50)
        p99 = benchtool.pct(s["lat"], 99)
        f = lambda v, k=1: "-" if v is None else ("%.*f" % (k, v))  # noqa
        text = open(out, errors="replace").read()
        m = __import__("re").search(r"NOERROR (\d+) \(([0-9.]+)%\)", text)
        ok = float(m.group(2)) if m else 0.0
        print("\t".join([test, target, rnd, f(s["qps"], 0),
                         f(s["completed"], 0), f(s["lost"], 0), cpu, syns,
                         "%.1f" % ok, f((s["qps"] or 0) * ok / 100.0, 0),
                         f(p50 * 1000 if p50 is not None else None, 3),
                         f(p99 * 1000 if p99 is not None else None, 3)]))
    elif cmd == "rate":
        rows = load(sys.argv[2])
        caps = [med(rows, "cap", t, "okqps")
                for t in sorted({r["target"] for r in rows})]
        caps = [c for c in caps if c]
        low = min(caps) if caps else 400
        print(max(100, int(low / 4 / 100) * 100))
    elif cmd == "report":
        rows = load(sys.argv[2])
        labels = dict(a.split("=", 1) for a in sys.argv[3:])
        base = med(rows, "cap", "s-udp", "okqps")
        print("| forwarder, upstream transport | NOERROR answers/s | vs stubborn UDP "
              "| NOERROR % | forwarder CPU % | lost | p50 ms | p99 ms "
              "| TLS handshakes / 1,000 queries |")
        print("|---|---|---|---|---|---|---|---|---|")
        for t, lab in labels.items():
            # A flood makes some answers SERVFAIL (timeouts upstream):
            # only NOERROR answers count as capacity.
            qps = med(rows, "cap", t, "okqps")
            runs = [r for r in rows if r["target"] == t]
            done = sum(float(r["completed"]) for r in runs
                       if r["completed"] != "-")
            # Connections opened to the TLS server per 1,000 queries, over
            # every run of this forwarder.
            per = 1000.0 * sum(float(r["syns"]) for r in runs) / done \
                if done else None
            tls = t.endswith("-dot")
            cells = [
                lab.replace("_", " "),
                "%.0f" % qps if qps else "-",
                "%.2f" % (qps / base) if qps and base else "-",
                "%.1f" % med(rows, "cap", t, "noerror")
                if med(rows, "cap", t, "noerror") is not None else "-",
                "%.0f" % med(rows, "cap", t, "cpu")
                if med(rows, "cap", t, "cpu") is not None else "-",
                "%.0f" % sum(float(r["lost"]) for r in rows
                             if r["target"] == t and r["lost"] != "-"),
                "%.2f" % med(rows, "lat", t, "p50")
                if med(rows, "lat", t, "p50") is not None else "-",
                "%.2f" % med(rows, "lat", t, "p99")
                if med(rows, "lat", t, "p99") is not None else "-",
                ("%.2f" % per) if tls and per is not None else "—",
            ]
            print("| " + " | ".join(cells) + " |")
    else:
        sys.exit("usage: enctool.py sum|rate|report ...")


if __name__ == "__main__":
    main()
