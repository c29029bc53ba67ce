#!/usr/bin/env python3
"""benchtool: the number-crunching half of tests/bench/compare.sh.

  benchtool.py zipf --names N --count C --miss-frac F --tag TAG
               [--s 1.0] [--seed 1]
      Prints C dnsperf query lines: with probability 1-F a name n<k>.bench.test
      (k in 1..N drawn with Zipf-like popularity, weight 1/k^s: the warmed,
      cached names), else a name never asked before, x<i>.<TAG>.bench.test.

  benchtool.py header
      Prints the header line of the per-run TSV.

  benchtool.py record --test T --target X --round R --quota Q --rate RATE
               --lines L --dnsperf OUT --times TIMES --before SNAP --after SNAP
               --tsv FILE
      Appends one TSV line for one dnsperf run to FILE, and prints it: dnsperf's summary, the CPU
      the server and the upstream used (from /proc ticks in the snapshots),
      the cgroup's throttled periods, dnsperf's own CPU (from the shell's
      `times`), how idle the machine was, latency percentiles when dnsperf
      ran with -v, and who limited the run.

  benchtool.py rate --runs TSV --test T --targets "A B ..."
      Prints the fixed rate for the latency runs: a quarter of the lowest
      median capacity of the targets in test T, rounded down to 500.

  benchtool.py report --runs TSV --mem TSV --facts FILE --out DIR
      Prints the summary table, writes DIR/results.md and draws
      DIR/capacity.png and DIR/latency.png with gnuplot.

Everything it reads was written by compare.sh; it sends no traffic.
"""

import argparse
import math
import os
import random
import re
import shutil
import statistics
import subprocess
import sys

CLK_TCK = os.sysconf("SC_CLK_TCK")
COLS = ["test", "target", "round", "quota", "rate", "qps", "sent",
        "completed", "lost", "runtime", "lines", "srv_cpu", "throttled",
        "up_queries", "up_cpu", "perf_cpu", "idle", "others", "irq",
        "p50_ms", "p99_ms",
        "resp_size", "bound"]
# A run is server-bound when the server used this share of its quota.
AT_QUOTA = 0.90
# A fixed-rate run that reaches less than this share of the rate fell short.
RATE_OK = 0.97
# A fixed-rate run throttled in more than this % of the periods.
THROTTLED_MAX = 5.0
# Other processes using this % of one core or more contend with the run.
OTHERS_MAX = 20.0
PEERS = ["unbound", "dnsdist", "dnsmasq"]
SERVERS = ["stubborn"] + PEERS
TARGETS = SERVERS + ["echo"]


def zipf(a):
    rng = random.Random(a.seed)
    cum, acc = [], 0.0
    for k in range(1, a.names + 1):
        acc += 1.0 / k ** a.s
        cum.append(acc)
    picks = rng.choices(range(1, a.names + 1), cum_weights=cum, k=a.count)
    out, miss = [], 0
    for k in picks:
        if rng.random() < a.miss_frac:
            miss += 1
            out.append("x%d.%s.bench.test A" % (miss, a.tag))
        else:
            out.append("n%d.bench.test A" % k)
    sys.stdout.write("\n".join(out) + "\n")


def read_snap(path):
    d = {}
    with open(path) as f:
        for ln in f:
            k, _, v = ln.strip().partition("=")
            if k:
                try:
                    d[k] = float(v)
                except ValueError:
                    d[k] = None
    return d


def dnsperf_summary(path):
    text = open(path, errors="replace").read()

    def num(label):
        m = re.search(r"^\s*%s:\s*([0-9.]+)" % re.escape(label), text, re.M)
        return float(m.group(1)) if m else None
    m = re.search(r"Average packet size:\s*request (\d+), response (\d+)",
                  text)
    lat = [float(x) for x in
           re.findall(r"^> [A-Z]+ \S+ \S+ ([0-9.]+)$", text, re.M)]
    return {
        "qps": num("Queries per second"),
        "sent": num("Queries sent"),
        "completed": num("Queries completed"),
        "lost": num("Queries lost"),
        "runtime": num("Run time (s)"),
        "resp_size": float(m.group(2)) if m else None,
        "lat": lat,
    }


def pct(values, p):
    """The p-th percentile (nearest rank) of values, or None."""
    if not values:
        return None
    v = sorted(values)
    return v[min(len(v) - 1, max(0, math.ceil(p / 100.0 * len(v)) - 1))]


def child_cpu(path):
    """User + system seconds of the children, from bash's `times`."""
    try:
        lines = open(path).read().split("\n")
        t = 0.0
        for part in lines[1].split():
            m = re.match(r"(\d+)m([0-9.]+)s", part)
            t += int(m.group(1)) * 60 + float(m.group(2))
        return t
    except (OSError, IndexError, AttributeError):
        return None


def fmt(v, nd=1):
    if v is None:
        return "-"
    if isinstance(v, str):
        return v
    return "%.*f" % (nd, v)


def record(a):
    s = dnsperf_summary(a.dnsperf)
    b, e = read_snap(a.before), read_snap(a.after)
    run = s["runtime"] or (e.get("t", 0) - b.get("t", 0)) or 1e-9

    def delta(k):
        if b.get(k) is None or e.get(k) is None:
            return None
        return e[k] - b[k]
    srv = delta("srv_ticks")
    srv_cpu = 100.0 * srv / CLK_TCK / run if srv is not None else None
    up = delta("up_ticks")
    up_cpu = 100.0 * up / CLK_TCK / run if up is not None else None
    per, thr = delta("periods"), delta("throttled")
    throttled = 100.0 * thr / per if per else None
    tot, idle = delta("cpu_total"), delta("cpu_idle")
    idle_pct = 100.0 * idle / tot if tot else None
    pc = child_cpu(a.times)
    perf_cpu = 100.0 * pc / run if pc is not None else None
    # What everything else on the machine used, in % of one core: the busy
    # share of all CPUs minus the server, dnsperf and the upstream.
    # Interrupt and softirq time is left out: it is mostly the loopback
    # packets of this very run, which the kernel charges to no process.
    others = irq_pct = None
    irq = delta("cpu_irq")
    if tot and irq is not None:
        irq_pct = irq / tot * 100.0 * os.cpu_count()
    if tot and None not in (srv_cpu, perf_cpu, up_cpu, irq_pct):
        busy = (tot - idle) / tot * 100.0 * os.cpu_count() - irq_pct
        others = max(0.0, busy - srv_cpu - perf_cpu - up_cpu)
    p50 = pct(s["lat"], 50)
    p99 = pct(s["lat"], 99)
    quota = float(a.quota) if a.quota not in ("", "none") else None
    qps = s["qps"] or 0.0

    def why():
        # The server had quota left: say what held the load generator.
        if idle_pct is not None and idle_pct < 10:
            return "LOADGEN(machine busy: %.0f%% idle, others %.0f%%)" % (
                idle_pct, others or 0)
        return "LOADGEN(dnsperf %.0f%% CPU)" % (perf_cpu or 0)
    # Who limited the run.  Capacity runs (no rate) should be bound by the
    # server's quota; fixed-rate runs should reach their rate.
    if quota is None:
        bound = "no-quota"
    elif a.rate > 0:
        if qps >= RATE_OK * a.rate:
            bound = "rate-met"
        elif srv_cpu is not None and srv_cpu >= AT_QUOTA * quota:
            bound = "server-short"
        else:
            bound = why()
    elif srv_cpu is not None and srv_cpu >= AT_QUOTA * quota:
        bound = "quota"
    else:
        bound = why()
    if up_cpu is not None and up_cpu >= 90.0:
        bound += "+UPSTREAM-BUSY"
    if a.lines and s["sent"] is not None and s["sent"] >= a.lines:
        bound += "+names-ran-out"
    # Percentiles of a throttled server show the quota's 100 ms period.
    if a.rate > 0 and throttled is not None and throttled > THROTTLED_MAX:
        bound += "+THROTTLED"
    if others is not None and others >= OTHERS_MAX:
        bound += "+CONTENDED"
    row = [a.test, a.target, str(a.round), a.quota, str(a.rate),
           fmt(qps, 0), fmt(s["sent"], 0), fmt(s["completed"], 0),
           fmt(s["lost"], 0), fmt(s["runtime"], 3), str(a.lines),
           fmt(srv_cpu), fmt(throttled), fmt(delta("up_queries"), 0),
           fmt(up_cpu), fmt(perf_cpu), fmt(idle_pct), fmt(others),
           fmt(irq_pct),
           fmt(p50 * 1000 if p50 is not None else None, 3),
           fmt(p99 * 1000 if p99 is not None else None, 3),
           fmt(s["resp_size"], 0), bound]
    with open(a.tsv, "a") as f:
        f.write("\t".join(row) + "\n")
    d = dict(zip(COLS, row))
    line = ("bench: %(test)-9s %(target)-11s round %(round)s quota %(quota)-4s"
            " qps %(qps)7s lost %(lost)5s server CPU %(srv_cpu)5s%% "
            "throttled %(throttled)5s%% upstream q %(up_queries)7s "
            "dnsperf CPU %(perf_cpu)5s%% idle %(idle)5s%% others "
            "%(others)5s%%" % d)
    if d["p50_ms"] != "-":
        line += " p50 %(p50_ms)s ms p99 %(p99_ms)s ms" % d
    print(line + "  [%s]" % d["bound"])


def rate(a):
    """A quarter of the lowest median qps of the targets, down to a multiple
    of 500 (at least 500).  Paced queries cost more CPU each than a flood
    (less batching per wake-up): at half the capacity the slowest server
    already meets its quota now and then, and its p99 shows the throttling."""
    ag = Agg(load_tsv(a.runs))
    meds = [ag.med(a.test, t, "qps") for t in a.targets.split()]
    meds = [m for m in meds if m]
    low = min(meds) if meds else 1000
    print(max(500, int(low / 4 / 500) * 500))


def load_tsv(path):
    rows = []
    if not os.path.exists(path):
        return rows
    with open(path) as f:
        head = f.readline().rstrip("\n").split("\t")
        for ln in f:
            v = ln.rstrip("\n").split("\t")
            if len(v) == len(head):
                rows.append(dict(zip(head, v)))
    return rows


def fnum(x):
    try:
        return float(x)
    except (TypeError, ValueError):
        return None


def median(vals):
    vals = [v for v in vals if v is not None]
    return statistics.median(vals) if vals else None


def si(v):
    if v is None:
        return "-"
    return "{:,.0f}".format(v)


def ratio(a, b):
    if a is None or b is None or b == 0:
        return "-"
    return "%.2f" % (a / b)


class Agg:
    """Medians per (test, target) over the rounds."""

    def __init__(self, rows):
        self.by = {}
        for r in rows:
            self.by.setdefault((r["test"], r["target"]), []).append(r)

    def runs(self, test, target):
        return self.by.get((test, target), [])

    def med(self, test, target, col):
        return median([fnum(r[col]) for r in self.runs(test, target)])

    def spread(self, test, target, col):
        v = [fnum(r[col]) for r in self.runs(test, target)]
        v = [x for x in v if x is not None]
        if not v:
            return "-"
        return "%s–%s" % (si(min(v)), si(max(v)))

    def flags(self, test, target):
        bad = [r for r in self.runs(test, target)
               if r["bound"] not in ("quota", "rate-met")]
        if not bad:
            return ""
        kinds = sorted(set(r["bound"] for r in bad))
        return "%d/%d runs: %s" % (len(bad), len(self.runs(test, target)),
                                   ", ".join(kinds))


def paired_list(ag, a, b):
    """[(ratio, flagged)] of a's qps over b's, round by round."""
    ra = {r["round"]: r for r in ag.runs("hits", a)}
    rb = {r["round"]: r for r in ag.runs("hits", b)}
    out = []
    for k in sorted(set(ra) & set(rb), key=int):
        qa, qb = fnum(ra[k]["qps"]), fnum(rb[k]["qps"])
        if qa and qb:
            bad = any(r["bound"] not in ("quota", "rate-met")
                      for r in (ra[k], rb[k]))
            out.append((qa / qb, bad))
    return out


def paired(ag, a, b):
    return ", ".join("%.2fx%s" % (q, "*" if bad else "")
                     for q, bad in paired_list(ag, a, b)) or "-"


def md_table(head, rows):
    out = ["| " + " | ".join(head) + " |",
           "|" + "|".join("---" for _ in head) + "|"]
    for r in rows:
        out.append("| " + " | ".join(r) + " |")
    return "\n".join(out)


def text_table(head, rows):
    w = [max(len(str(x)) for x in col) for col in zip(head, *rows)]
    line = lambda r: "  ".join(str(x).rjust(w[i]) if i else str(x).ljust(w[i])
                               for i, x in enumerate(r))
    return "\n".join([line(head), line(["-" * x for x in w])] +
                     [line(r) for r in rows])


def report(a):
    rows = load_tsv(a.runs)
    mem = {r["server"]: r for r in load_tsv(a.mem)}
    facts = open(a.facts).read() if os.path.exists(a.facts) else ""
    ag = Agg(rows)
    quota = a.quota
    present = [s for s in SERVERS if ag.runs("hits", s) or s in mem]
    peers = [p for p in PEERS if p in present]
    rounds = max([int(r["round"]) for r in rows] or [0])
    qlabel = ("%s%% of one core" % quota) if quota != "none" else "NO QUOTA"

    lat_rate = {t: median([fnum(r["rate"]) for r in rows if r["test"] == t])
                for t in ("lat-hits", "lat-mixed")}

    # --- the summary: one row per metric, ratios to each peer -------------
    head = ["metric", "stubborn"] + peers + ["echo"] + \
        ["stubborn/%s" % p for p in peers]
    summary = []

    def add(label, vals, nd=0, better=""):
        cells = [label + better]
        for t in ["stubborn"] + peers + ["echo"]:
            v = vals.get(t)
            cells.append(("{:,.%df}" % nd).format(v) if v is not None
                         else "-")
        for p in peers:
            cells.append(ratio(vals.get("stubborn"), vals.get(p)))
        summary.append(cells)

    for test, label in (("hits", "cache hits"), ("misses", "cache misses"),
                        ("mixed", "mixed (Zipf, ~90% hits)")):
        add("%s, qps at %s" % (label, qlabel),
            {t: ag.med(test, t, "qps") for t in TARGETS}, 0, " ↑")
    for test, label in (("lat-hits", "hits"), ("lat-mixed", "mixed")):
        if not any(ag.runs(test, t) for t in TARGETS):
            continue
        r = lat_rate[test]
        for col in ("p50_ms", "p99_ms"):
            add("%s at %s qps, %s ms" % (label, si(r), col[:3]),
                {t: ag.med(test, t, col) for t in TARGETS}, 3, " ↓")
    if mem:
        add("memory per cached entry, bytes",
            {s: fnum(mem[s]["bytes_per_entry"]) for s in mem}, 0, " ↓")
        add("answer wire size, bytes",
            {s: fnum(mem[s]["resp_size"]) for s in mem}, 0, "")
    s1 = ag.med("hits", "stubborn", "qps")
    s2 = ag.med("hits", "stubborn-2w", "qps")
    e1 = ag.med("hits", "echo", "qps")
    e2 = ag.med("hits", "echo-2x", "qps")
    e2t = ag.med("hits", "echo-2t", "qps")

    out = []
    out.append("# stubborn vs its peers: `make bench`\n")
    out.append(facts.strip() + "\n")
    out.append("## Summary\n")
    out.append("Medians of %d round(s); ↑ higher is better, ↓ lower is "
               "better; a stubborn/peer ratio above 1 means stubborn has "
               "more of that quantity.  echo is the ceiling: a UDP echo "
               "under the same quota, with the same load generator.  "
               "stubborn ran with its rate limits lifted (per-client and "
               "per-upstream qps 1000000, 100000 outstanding upstream "
               "queries): its defaults would refuse this load from one "
               "client.\n" % rounds)
    out.append(md_table(head, summary) + "\n")
    scal = ""
    if s1 and s2:
        scal = ("stubborn 2 workers at %s%% / 1 worker at %s%%: **%.2fx** "
                "(%s vs %s qps; target >= 1.9x)" %
                (2 * int(quota), quota, s2 / s1, si(s2), si(s1)))
        if e1 and e2t:
            scal += "; echo with 2 threads (an SO_REUSEPORT socket each, " \
                "as the workers) at %s%% / echo at %s%%: %.2fx (%s qps), " \
                "the most two threads can show with this harness; " \
                "stubborn 2 workers / echo 2 threads: %.2f" % (
                    2 * int(quota), quota, e2t / e1, si(e2t), s2 / e2t)
        if e1 and e2:
            scal += "; echo, one thread, at %s%% / %s%%: %.2fx (%s vs %s " \
                "qps)" % (2 * int(quota), quota, e2 / e1, si(e2), si(e1))
        s1x2 = ag.med("hits", "stubborn-2x", "qps")
        if s1x2:
            scal += "; stubborn 1 worker at %s%% / %s%%: %.2fx (%s qps: " \
                "twice the CPU without a second worker)" % (
                    2 * int(quota), quota, s1x2 / s1, si(s1x2))
        scal += ".  Per round, stubborn 2 workers %s; 1 worker %s; echo " \
            "2 threads %s; echo 1 thread %s (* = a run of the pair was " \
            "flagged below)" % (
                paired(ag, "stubborn-2w", "stubborn"),
                paired(ag, "stubborn-2x", "stubborn"),
                paired(ag, "echo-2t", "echo"),
                paired(ag, "echo-2x", "echo"))
        clean = [r for r in paired_list(ag, "stubborn-2w", "stubborn")
                 if not r[1]]
        if not clean:
            scal += ".  NOT CONCLUSIVE: every round had a flagged run"
        out.append("Scaling (cache hits): " + scal + ".\n")
    elif quota == "none":
        out.append("Scaling: SKIP (it needs a CPU quota).\n")

    # --- limits -----------------------------------------------------------
    notes = []
    for (test, target), rs in sorted(ag.by.items()):
        f = ag.flags(test, target)
        if f:
            notes.append("- %s / %s: %s" % (test, target, f))
    out.append("## Who limited each run\n")
    out.append(
        "A capacity run is server-bound (`quota`) when the server used at "
        "least %d%% of its CPU quota.  `LOADGEN` marks runs where it used "
        "less: the load generator, not the server, was the limit, and the "
        "qps understates the server; `machine busy` when the CPUs were less "
        "than 10%% idle (dnsperf could not get more CPU: `others` is what "
        "processes other than the server, dnsperf and the upstream used, in "
        "%% of one core), else dnsperf's own CPU use is given.  "
        "A fixed-rate run is `rate-met` when it reached %d%% of the rate; "
        "`server-short` when it did not while the server was at its quota, "
        "`LOADGEN` when it did not and the server had quota left.  "
        "`THROTTLED`: a fixed-rate run whose server was throttled in more "
        "than %d%% of the quota periods: its p99 shows the quota more than "
        "the software.  `CONTENDED`: processes other than the server, "
        "dnsperf and the upstream used %d%% of a core or more during the "
        "run (the machine is shared): read it with care, even when the "
        "server reached its quota, because a starved load generator makes "
        "each query cost the server more.  "
        "`UPSTREAM-BUSY`: the upstream used >= 90%% of a core.  "
        "`names-ran-out`: dnsperf sent every name of the file before the "
        "time limit (the qps is still right, over a shorter run).\n"
        % (AT_QUOTA * 100, RATE_OK * 100, THROTTLED_MAX, OTHERS_MAX))
    out.append("\n".join(notes) + "\n" if notes else
               "Every run was bound by the server's quota (capacity) or "
               "met its rate (latency), unthrottled and uncontended.\n")
    upmax = max([fnum(r["up_cpu"]) or 0 for r in rows
                 if r["test"] in ("misses", "mixed", "lat-mixed")] or [0])
    out.append("The upstream (fakeup, no CPU quota) used at most %.0f%% of "
               "one core during any run with cache misses.\n" % upmax)

    # --- details per test ---------------------------------------------------
    out.append("## Capacity under a CPU quota (dnsperf unthrottled)\n")
    for test, label in (("hits", "cache hits"), ("misses", "cache misses"),
                        ("mixed", "mixed: Zipf-like popularity over the "
                                  "cached names, ~10% names never asked")):
        tg = [t for t in TARGETS + ["stubborn-2w", "stubborn-2x", "echo-2x",
                                    "echo-2t"]
              if ag.runs(test, t)]
        if not tg:
            continue
        h = ["target", "quota %", "median qps", "min–max", "% of echo",
             "stubborn ÷ this", "server CPU %", "throttled periods %",
             "upstream/answers", "dnsperf CPU %", "idle %", "others %",
             "lost", "limit"]
        ec = ag.med(test, "echo", "qps")
        st = ag.med(test, "stubborn", "qps")
        rr = []
        for t in tg:
            q = ag.med(test, t, "qps")
            comp = ag.med(test, t, "completed")
            upq = ag.med(test, t, "up_queries")
            rr.append([t, ag.runs(test, t)[0]["quota"], si(q),
                       ag.spread(test, t, "qps"),
                       "%.0f%%" % (100 * q / ec) if q and ec else "-",
                       ratio(st, q), fmt(ag.med(test, t, "srv_cpu")),
                       fmt(ag.med(test, t, "throttled")),
                       ratio(upq, comp)
                       if t not in ("echo", "echo-2x", "echo-2t") else "-",
                       fmt(ag.med(test, t, "perf_cpu"), 0),
                       fmt(ag.med(test, t, "idle"), 0),
                       fmt(ag.med(test, t, "others"), 0),
                       si(ag.med(test, t, "lost")),
                       ag.flags(test, t) or "quota"])
        out.append("### %s\n" % label)
        out.append(md_table(h, rr) + "\n")

    for test, label in (("lat-hits", "cache hits"),
                        ("lat-mixed", "mixed (Zipf, ~90% hits)")):
        tg = [t for t in TARGETS if ag.runs(test, t)]
        if not tg:
            continue
        out.append("## Latency at a fixed rate: %s, %s qps, %s\n" %
                   (label, si(lat_rate[test]), qlabel))
        out.append("dnsperf -Q at a quarter of the lowest median capacity "
                   "of the four servers, so no server should reach its "
                   "quota (the throttled column checks); "
                   "percentiles over every answered query of a run (dnsperf "
                   "-v), median over the runs.  When the machine is busy "
                   "(low idle %, high others %), p99 shows the scheduler "
                   "more than the server.\n")
        h = ["target", "p50 ms", "p99 ms", "stubborn p50 ÷ this",
             "stubborn p99 ÷ this", "achieved qps", "lost", "server CPU %",
             "throttled periods %", "idle %", "others %", "limit"]
        rr = []
        for t in tg:
            rr.append([t, fmt(ag.med(test, t, "p50_ms"), 3),
                       fmt(ag.med(test, t, "p99_ms"), 3),
                       ratio(ag.med(test, "stubborn", "p50_ms"),
                             ag.med(test, t, "p50_ms")),
                       ratio(ag.med(test, "stubborn", "p99_ms"),
                             ag.med(test, t, "p99_ms")),
                       si(ag.med(test, t, "qps")),
                       si(ag.med(test, t, "lost")),
                       fmt(ag.med(test, t, "srv_cpu")),
                       fmt(ag.med(test, t, "throttled")),
                       fmt(ag.med(test, t, "idle"), 0),
                       fmt(ag.med(test, t, "others"), 0),
                       ag.flags(test, t) or "rate-met"])
        out.append(md_table(h, rr) + "\n")

    if mem:
        out.append("## Memory per cached entry\n")
        out.append(
            "RSS growth while the server cached `entries` names it had never "
            "seen (after 1000 others), divided by the entries; for servers "
            "that allocate their cache slots at start-up, plus what one slot "
            "costs (RSS at start minus that of a twin with a small cache, "
            "divided by the slots).  The answers are dnsperf's average "
            "response size on the wire.\n")
        h = ["server", "entries", "RSS at start KiB", "RSS before KiB",
             "RSS after KiB", "growth/entry B", "preallocated/slot B",
             "bytes/entry", "avg answer wire B", "bytes/entry ÷ wire",
             "stubborn ÷ this", "fill lost", "upstream queries", "note"]
        rr = []
        sb = fnum(mem.get("stubborn", {}).get("bytes_per_entry"))
        for s in SERVERS:
            if s not in mem:
                continue
            m = mem[s]
            bpe, wire = fnum(m["bytes_per_entry"]), fnum(m["resp_size"])
            rr.append([s, si(fnum(m["entries"])), si(fnum(m["rss_start"])),
                       si(fnum(m["rss_before"])), si(fnum(m["rss_after"])),
                       si(fnum(m["growth_per_entry"])),
                       si(fnum(m["prealloc_per_slot"])), si(bpe), si(wire),
                       ratio(bpe, wire), ratio(sb, bpe), m["lost"],
                       m["up_queries"], m.get("note", "")])
        out.append(md_table(h, rr) + "\n")

    out.append("## Charts\n")
    out.append("![capacity](capacity.png)\n\n![latency](latency.png)\n")
    out.append("Every run: `runs.tsv` in this directory (one line per "
               "dnsperf run; CPU columns in % of one core).\n")
    md = "\n".join(out)
    with open(os.path.join(a.out, "results.md"), "w") as f:
        f.write(md)

    # --- stdout -------------------------------------------------------------
    print()
    print("bench: medians of %d round(s); stubborn ran with its rate limits "
          "LIFTED (--client-qps, --client-qps-cookie, --upstream-qps "
          "1000000, --upstream-max-outstanding 100000)" % rounds)
    print(text_table(head, summary))
    if scal:
        print("scaling: " + scal)
    if notes:
        print("runs to read with care (see results.md, 'Who limited each "
              "run'; LOADGEN = the load generator, not the server, was the "
              "limit):")
        cont = [r for r in rows if "CONTENDED" in r["bound"]]
        if cont:
            print("- CONTENDED (other processes used >= %d%% of a core): %d "
                  "of %d runs" % (OTHERS_MAX, len(cont), len(rows)))
        for (test, target), rs in sorted(ag.by.items()):
            bad = [r["bound"].replace("+CONTENDED", "") for r in rs]
            bad = [b for b in bad if b not in ("quota", "rate-met")]
            if bad:
                print("- %s / %s: %d/%d runs: %s" % (
                    test, target, len(bad), len(rs),
                    ", ".join(sorted(set(bad)))))
    else:
        print("every capacity run was bound by the server's quota; every "
              "fixed-rate run met its rate; none was contended or throttled")
    print("upstream (fakeup, no quota) used at most %.0f%% of one core in "
          "any run with misses" % upmax)
    charts(a.out, ag, peers, qlabel)
    print("bench: wrote %s/results.md, runs.tsv, capacity.png, latency.png"
          % a.out)


def charts(out, ag, peers, qlabel):
    gp = shutil.which("gnuplot")
    if gp is None:
        print("bench: gnuplot is not installed, no charts")
        return
    targets = ["stubborn"] + peers + ["echo"]
    with open(os.path.join(out, "capacity.dat"), "w") as f:
        f.write("# target hits misses mixed\n")
        for t in targets:
            f.write("%s %s\n" % (t, " ".join(
                "%.0f" % (ag.med(x, t, "qps") or 0)
                for x in ("hits", "misses", "mixed"))))
    with open(os.path.join(out, "latency.dat"), "w") as f:
        f.write("# target hits_p50 hits_p99 mixed_p50 mixed_p99\n")
        for t in targets:
            f.write("%s %s\n" % (t, " ".join(
                "%.4f" % (ag.med(x, t, c) or 0)
                for x in ("lat-hits", "lat-mixed")
                for c in ("p50_ms", "p99_ms"))))
    term = "pngcairo size 900,500 font 'sans,10'"
    chk = subprocess.run([gp, "-e", "set terminal pngcairo"],
                         capture_output=True, text=True)
    if chk.returncode != 0 or "unknown" in chk.stderr.lower():
        term = "png size 900,500"
    script = """
set terminal %(term)s
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.8 border -1
set key below noenhanced
set boxwidth 0.9
set grid ytics
set yrange [0:*]
set datafile missing '0'
set output '%(out)s/capacity.png'
set title 'Queries per second at %(q)s (median; higher is better)'
set ylabel 'qps'
plot '%(out)s/capacity.dat' using 2:xtic(1) title 'cache hits', \\
     '' using 3 title 'cache misses', '' using 4 title 'mixed (~90%% hits)'
set output '%(out)s/latency.png'
set title 'Latency at a fixed rate, %(q)s (median of runs; lower is better)'
set ylabel 'ms'
set logscale y
set yrange [*:*]
plot '%(out)s/latency.dat' using 2:xtic(1) title 'hits p50', \\
     '' using 3 title 'hits p99', '' using 4 title 'mixed p50', \\
     '' using 5 title 'mixed p99'
""" % {"term": term, "out": out, "q": qlabel}
    with open(os.path.join(out, "charts.gp"), "w") as f:
        f.write(script)
    r = subprocess.run([gp, os.path.join(out, "charts.gp")],
                       capture_output=True, text=True)
    if r.returncode != 0:
        print("bench: gnuplot failed: " + r.stderr.strip()[:500])


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    z = sub.add_parser("zipf")
    z.add_argument("--names", type=int, required=True)
    z.add_argument("--count", type=int, required=True)
    z.add_argument("--miss-frac", type=float, default=0.1)
    z.add_argument("--s", type=float, default=1.0)
    z.add_argument("--seed", type=int, default=1)
    z.add_argument("--tag", required=True)
    sub.add_parser("header")
    r = sub.add_parser("record")
    for k in ("test", "target", "quota", "dnsperf", "times", "before",
              "after"):
        r.add_argument("--" + k, required=True)
    r.add_argument("--round", type=int, required=True)
    r.add_argument("--tsv", required=True)
    r.add_argument("--rate", type=int, default=0)
    r.add_argument("--lines", type=int, default=0)
    rt = sub.add_parser("rate")
    for k in ("runs", "test", "targets"):
        rt.add_argument("--" + k, required=True)
    rp = sub.add_parser("report")
    for k in ("runs", "mem", "facts", "out", "quota"):
        rp.add_argument("--" + k, required=True)
    a = p.parse_args()
    if a.cmd == "zipf":
        if not 0 < a.names <= 10_000_000 or not 0 < a.count <= 10_000_000:
            sys.exit("zipf: --names and --count must be in 1..10000000")
        zipf(a)
    elif a.cmd == "header":
        print("\t".join(COLS))
    elif a.cmd == "record":
        record(a)
    elif a.cmd == "rate":
        rate(a)
    else:
        report(a)


if __name__ == "__main__":
    main()
