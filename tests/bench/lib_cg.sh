# CPU quotas for the benchmarks (bash, sourced after lib.sh): each server
# in a cgroup of its own with cgroup v2 cpu.max, or, where the cpu
# controller is bound to cgroup v1 (as on these machines), with v1 CFS
# bandwidth control, the same kernel mechanism.  The load generator and the
# upstreams stay in the caller's group, which must have no quota.
#
#   cg_setup            finds a usable hierarchy; sets CG_MODE (v2, v1 or
#                       none), CG_PARENT and CG_NOTE (what was used, and why)
#   cg_new NAME         a group for one server; prints its directory
#   cg_quota DIR PCT    PCT percent of one core, or "max"
#   quota_of PID        the quota over PID's group and its ancestors
#   cg_periods DIR      the group's CFS periods and throttled periods
#   cg_cleanup          removes the groups (after their processes exited)

# cg_probe v1|v2 PARENT: can a child group get a quota and a process?
cg_probe() {
	local d="$2/probe" ok=1
	mkdir "$d" 2>/dev/null || return 1
	if [ "$1" = v2 ]; then
		echo "25000 100000" >"$d/cpu.max" 2>/dev/null || ok=0
	else
		{ echo 100000 >"$d/cpu.cfs_period_us" && echo 25000 >"$d/cpu.cfs_quota_us"; } 2>/dev/null || ok=0
	fi
	[ "$ok" = 1 ] && { bash -c 'echo $$ >"$1/cgroup.procs"' _ "$d"; } 2>/dev/null || ok=0
	rmdir "$d" 2>/dev/null
	[ "$ok" = 1 ]
}
# cg_setup: see above.
cg_setup() {
	CG_MODE=none CG_PARENT="" CG_WHY=""
	v2=$(awk '$3 == "cgroup2" { print $2; exit }' /proc/mounts)
	if [ -n "$v2" ]; then
		if ! grep -qw cpu "$v2/cgroup.controllers" 2>/dev/null; then
			CG_WHY="cgroup v2 at $v2 offers no cpu controller (cgroup.controllers: '$(cat "$v2/cgroup.controllers" 2>/dev/null)'); the cpu controller is bound to a cgroup v1 hierarchy"
		elif ! mkdir "$v2/stubborn-bench.$$" 2>/dev/null; then
			CG_WHY="cgroup v2 at $v2 is not writable here"
		elif ! { grep -qw cpu "$v2/cgroup.subtree_control" ||
		    echo +cpu >"$v2/cgroup.subtree_control"; } 2>/dev/null ||
		    ! echo +cpu >"$v2/stubborn-bench.$$/cgroup.subtree_control" 2>/dev/null; then
			CG_WHY="cgroup v2 at $v2: the cpu controller cannot be enabled for a child (cgroup.subtree_control)"
			rmdir "$v2/stubborn-bench.$$" 2>/dev/null
		elif ! cg_probe v2 "$v2/stubborn-bench.$$"; then
			CG_WHY="cgroup v2 at $v2: a process cannot be moved into a group with cpu.max set"
			rmdir "$v2/stubborn-bench.$$" 2>/dev/null
		else
			CG_MODE=v2 CG_PARENT="$v2/stubborn-bench.$$"
		fi
	else
		CG_WHY="no cgroup v2 hierarchy is mounted"
	fi
	if [ "$CG_MODE" = none ]; then
		v1=$(awk '$3 == "cgroup" && $4 ~ /(^|,)cpu(,|$)/ { print $2; exit }' /proc/mounts)
		own=$(awk -F: '$2 ~ /(^|,)cpu(,|$)/ { print $3; exit }' /proc/self/cgroup)
		if [ -n "$v1" ] && mkdir "$v1${own%/}/stubborn-bench.$$" 2>/dev/null; then
			if cg_probe v1 "$v1${own%/}/stubborn-bench.$$"; then
				CG_MODE=v1 CG_PARENT="$v1${own%/}/stubborn-bench.$$"
			else
				rmdir "$v1${own%/}/stubborn-bench.$$"
			fi
		fi
	fi
	case $CG_MODE in
	v2) CG_NOTE="cgroup v2 at ${CG_PARENT%/*}: each server in its own group with cpu.max" ;;
	v1) CG_NOTE="FALLBACK: $CG_WHY.  Used instead: cgroup v1 CFS bandwidth control (cpu.cfs_quota_us / cpu.cfs_period_us = 100000 us) at ${CG_PARENT%/*}, each server in its own group: the same kernel mechanism as v2 cpu.max" ;;
	*) CG_NOTE="NO CPU QUOTA: ${CG_WHY:-}; no cgroup v1 cpu hierarchy is writable either.  Every server ran uncapped and shared the CPUs with dnsperf; the numbers are not capacities per quota, and the scaling test is skipped" ;;
	esac
	echo "bench: CPU quota: $CG_NOTE"
}

cg_cleanup() {
	[ -n "$CG_PARENT" ] || return 0
	local d
	for d in "$CG_PARENT"/*/; do [ -d "$d" ] && rmdir "$d" 2>/dev/null; done
	rmdir "$CG_PARENT" 2>/dev/null
}

# cg_new NAME: a group for one server; prints its directory (empty: none).
cg_new() {
	[ "$CG_MODE" = none ] && return 0
	mkdir "$CG_PARENT/$1" && echo "$CG_PARENT/$1"
}
# cg_quota DIR PERCENT|max: PERCENT of one core, or no limit.
cg_quota() {
	[ -n "$1" ] || return 0
	if [ "$CG_MODE" = v2 ]; then
		if [ "$2" = max ]; then echo "max 100000"; else echo "$(($2 * 1000)) 100000"; fi \
		    >"$1/cpu.max"
	else
		echo 100000 >"$1/cpu.cfs_period_us"
		if [ "$2" = max ]; then echo -1; else echo $(($2 * 1000)); fi >"$1/cpu.cfs_quota_us"
	fi
}
# quota_of PID: the CPU quota over PID's group and its ancestors, or "none".
quota_of() {
	local pid=$1 path mnt f q=""
	if [ "$CG_MODE" = v1 ]; then
		mnt=$(awk '$3 == "cgroup" && $4 ~ /(^|,)cpu(,|$)/ { print $2; exit }' /proc/mounts)
		path=$(awk -F: '$2 ~ /(^|,)cpu(,|$)/ { print $3; exit }' "/proc/$pid/cgroup")
		while :; do
			f="$mnt${path%/}/cpu.cfs_quota_us"
			[ -r "$f" ] && [ "$(cat "$f")" != -1 ] && q="$q $(cat "$f")/$(cat "${f%quota_us}period_us") at ${path:-/};"
			[ -z "$path" ] || [ "$path" = / ] && break
			path=${path%/*}
		done
	else
		mnt=$(awk '$3 == "cgroup2" { print $2; exit }' /proc/mounts)
		path=$(sed -n 's/^0:://p' "/proc/$pid/cgroup")
		while [ -n "$mnt" ]; do
			f="$mnt${path%/}/cpu.max"
			[ -r "$f" ] && case $(cat "$f") in max*) ;; *) q="$q $(cat "$f") at ${path:-/};" ;; esac
			[ -z "$path" ] || [ "$path" = / ] && break
			path=${path%/*}
		done
	fi
	echo "${q:-none}"
}
cg_periods() {
	[ -n "$1" ] && [ -r "$1/cpu.stat" ] || return 0
	awk '$1 == "nr_periods" { print "periods=" $2 } $1 == "nr_throttled" { print "throttled=" $2 }' "$1/cpu.stat"
}

