#!/bin/bash
# Measures stubborn's resident memory with a full cache, to size the
# Kubernetes memory requests and limits (config/kubernetes/).  Not part of
# make check: it sends a few hundred thousand queries and takes about a
# minute.
#
# stubborn runs with the given cache-size and workers against build/fakeup,
# both on 127.0.0.1 ports picked here.  dnsperf then asks NAMES distinct
# names once each, shaped like a Kubernetes pod's traffic (ndots:5 search
# expansions, NXDOMAIN under cluster.local, A and AAAA of service names and
# of external names), which is more than the cache holds, so it fills and
# evicts.  The per-upstream and per-client budgets are lifted so the fill
# is not throttled (they bound upstream traffic, not memory).
#
# Usage: BUILD=build bash tests/deploy/memory.sh CACHE_SIZE WORKERS [NAMES]
# Prints RSS (VmRSS) and peak RSS (VmHWM) idle, after the fill (with the
# cache's own byte and entry counts from /metrics), after snapshot saves,
# and of a restarted process that loaded the snapshot.
set -u
cd "$(dirname "$0")/../.." || exit 1
BUILD=${BUILD:-build}
CACHE=${1:?cache-size}
WORKERS=${2:?workers}
NAMES=${3:-400000}
[ "$NAMES" -le 2000000 ] || { echo "at most 2000000 names" >&2; exit 2; }

tmp=$(mktemp -d /tmp/stubborn-mem.XXXXXX)
pids=""
cleanup() {
	for p in $pids; do kill -TERM "$p" 2>/dev/null; done
	wait 2>/dev/null
	rm -rf "$tmp"
}
trap cleanup EXIT INT TERM

# A free port on 127.0.0.1, UDP and TCP, below the ephemeral range.
port() {
	local p
	for _ in $(seq 1 200); do
		p=$((20000 + RANDOM % 12700))
		if ! ss -Hlnu "sport = :$p" | grep -q . &&
		    ! ss -Hlnt "sport = :$p" | grep -q .; then
			echo "$p"
			return 0
		fi
	done
	return 1
}
up=$(port); dns=$(port); met=$(port)

"$BUILD/fakeup" --listen "127.0.0.1:$up" --zone-ttl 3600 --neg-ttl 3600 \
    --pidfile "$tmp/fk.pid" 2>"$tmp/fk.err" &
pids="$pids $!"
for _ in $(seq 1 50); do [ -e "$tmp/fk.pid" ] && break; sleep 0.1; done

"$BUILD/stubborn" --listen "127.0.0.1:$dns" --upstream "127.0.0.1:$up" \
    --metrics "127.0.0.1:$met" --cache-size "$CACHE" --workers "$WORKERS" \
    --upstream-qps 1000000 --upstream-max-outstanding 100000 \
    --client-qps 1000000 --client-qps-cookie 1000000 \
    --max-negative-ttl 3600 --log-level warn \
    --snapshot "$tmp/cache.snapshot" --snapshot-interval 3 \
    2>"$tmp/stubborn.log" &
spid=$!
pids="$pids $spid"
for _ in $(seq 1 50); do
	ss -Hlnu "src 127.0.0.1:$dns" | grep -q . && break
	sleep 0.1
done

rss() { awk '/^VmRSS|^VmHWM/ { printf "%s %d MiB  ", $1, $2 / 1024 }' "/proc/$spid/status"; echo; }
cachestat() {
	python3 - "$met" <<'PY'
import sys, urllib.request
body = urllib.request.urlopen("http://127.0.0.1:%s/metrics" % sys.argv[1], timeout=5).read().decode()
for line in body.splitlines():
    if line.startswith("stubborn_cache") and not line.startswith("#"):
        print("   ", line)
PY
}
echo "cache-size $CACHE, workers $WORKERS, $NAMES names"
sleep 1  # let the workers finish allocating before the idle reading
printf 'idle:        '; rss

# A pod in namespace "shop" asking for "cart", "api.example.com", ...:
# every name is tried under the search list first (NXDOMAIN), then as is.
python3 - "$NAMES" >"$tmp/names" <<'PY'
import sys
n = int(sys.argv[1])
search = ["shop.svc.cluster.local.", "svc.cluster.local.", "cluster.local."]
out = []
i = 0
while len(out) < n:
    if i % 4 == 0:
        base = "svc%d.shop.svc.cluster.local." % i     # a service: answers
        out.append("%s A" % base)
        out.append("%s AAAA" % base)
    else:
        base = "host%d.example.com" % i                  # external name
        for s in search:
            out.append("nx-%d.%s A" % (i, s))            # expansion: NXDOMAIN
        out.append("%s. A" % base)
        out.append("%s. AAAA" % base)
    i += 1
print("\n".join(out[:n]))
PY

dnsperf -s 127.0.0.1 -p "$dns" -d "$tmp/names" -n 1 -c 20 -q 500 \
    -Q 15000 -t 5 -l 180 >"$tmp/dnsperf.out" 2>&1
grep -E 'Queries (sent|completed|lost)|Response codes' "$tmp/dnsperf.out" | sed 's/^ */    /'
printf 'after fill:  '; rss
cachestat
# A snapshot save (every 3 s here) must fit in the same memory.
sleep 7  # two save intervals
printf 'after saves: '; rss
ls -l "$tmp/cache.snapshot" | awk '{ printf "    snapshot file %d MiB\n", $5 / 1048576 }'

# A restart loads the snapshot: the warm process's memory.
kill -TERM "$spid"
wait "$spid"
"$BUILD/stubborn" --listen "127.0.0.1:$dns" --upstream "127.0.0.1:$up" \
    --cache-size "$CACHE" --workers "$WORKERS" --max-negative-ttl 3600 \
    --log-level warn --snapshot "$tmp/cache.snapshot" \
    --snapshot-interval 0 2>"$tmp/stubborn2.log" &
spid=$!
pids="$pids $spid"
sleep 5  # the snapshot loads in the background; 5 s is ample for ~30 MiB
printf 'restarted:   '; rss
