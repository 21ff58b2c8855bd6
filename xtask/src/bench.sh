#!/bin/sh
# The VM side of `cargo xtask bench` (xtask/src/bench.sh; runs as root under
# busybox sh in a 6.12 guest booted with qemu -icount, so guest time advances
# with instructions executed and only ratios between set-ups mean anything).
#
# Every workload runs REPS times per set-up, interleaved: in each round, each
# set-up in turn (untraced, ovltrace-fentry, ovltrace-kprobe, bpftrace-kprobe,
# bpftrace-kfunc, floor-kprobe, floor-kfunc) starts its tracer once and runs
# every workload, each on a fresh overlay mount with a fresh upper layer.
# Then, with BENCH_STATS=1, one more round of the traced set-ups runs with
# kernel.bpf_stats_enabled=1 and reads every BPF program's run count and run
# time before and after each workload. Its times are not used for the
# medians (the statistics add two clock reads per program run); they are
# reported on STATRUN lines.
# stdout carries machine-readable lines only:
#   INFO key value...
#   RESULT workload setup rep elapsed_ns tracer_cpu_ns extra...
#   STATRUN workload setup elapsed_ns extra...
#   PROGSTAT workload setup prog_id type name run_cnt run_time_ns
# and sections (==> BEGIN json-ovltrace-MODE-REP / ==> END ...) with
# ovltrace's JSON report of each timed round.
# Progress goes to stderr.
set -u

REPS=${BENCH_REPS:-3}
WORKLOADS=${BENCH_WORKLOADS:-"copyup bigfiles lookups"}
SETUPS=${BENCH_SETUPS:-"untraced ovltrace-fentry ovltrace-kprobe bpftrace-kprobe bpftrace-kfunc floor-kprobe floor-kfunc"}
# 1: a round with kernel.bpf_stats_enabled=1 after the timed rounds.
STATS=${BENCH_STATS:-1}
# Workload sizes (the issue's figures by default).
CU_DIRS=${BENCH_CU_DIRS:-200}
CU_FILES=${BENCH_CU_FILES:-100}
CU_BYTES=${BENCH_CU_BYTES:-100}
BIG_FILES=${BENCH_BIG_FILES:-20}
BIG_MIB=${BENCH_BIG_MIB:-32}
LK_LAYERS=${BENCH_LK_LAYERS:-32}
LK_EXISTING=${BENCH_LK_EXISTING:-5000}
LK_PASSES=${BENCH_LK_PASSES:-20}

H=/host/bench_guest
B=/bench

say() { echo "bench: [$(cut -d' ' -f1 /proc/uptime)] $*" >&2; }
die() { say "FAILED: $*"; exit 1; }
section() {
	echo "==> BEGIN $1"
	cat "$2"
	[ -n "$(tail -c 1 "$2")" ] && echo
	echo "==> END $1"
}

mkdir -p $B
mount -t tmpfs -o size=1600m bench $B || die "mounting tmpfs on $B"
echo "INFO guest_kernel $(uname -r)"
echo "INFO guest_mem_kb $(grep MemTotal /proc/meminfo | tr -s ' ' | cut -d' ' -f2)"
echo "INFO guest_cpus $(grep -c ^processor /proc/cpuinfo)"
echo "INFO guest_clocksource $(cat /sys/devices/system/clocksource/clocksource0/current_clocksource)"
echo "INFO bpftrace $(bpftrace --version 2>&1)"
echo "INFO ovltrace $(ovltrace --version 2>&1)"

# bpftrace doing ovltrace's job: latency histograms of copy-ups and lookups,
# with kprobe/kretprobe and with kfunc/kretfunc (fentry/fexit; the overlay
# module's BTF).
cat > /tmp/bpftrace-kprobe.bt <<'EOF'
kprobe:ovl_copy_up_one { @cu[tid] = nsecs; }
kretprobe:ovl_copy_up_one /@cu[tid]/ { @copy_up_ns = hist(nsecs - @cu[tid]); delete(@cu[tid]); }
kprobe:ovl_lookup { @lk[tid] = nsecs; }
kretprobe:ovl_lookup /@lk[tid]/ { @lookup_ns = hist(nsecs - @lk[tid]); delete(@lk[tid]); }
EOF
cat > /tmp/bpftrace-kfunc.bt <<'EOF'
kfunc:overlay:ovl_copy_up_one { @cu[tid] = nsecs; }
kretfunc:overlay:ovl_copy_up_one /@cu[tid]/ { @copy_up_ns = hist(nsecs - @cu[tid]); delete(@cu[tid]); }
kfunc:overlay:ovl_lookup { @lk[tid] = nsecs; }
kretfunc:overlay:ovl_lookup /@lk[tid]/ { @lookup_ns = hist(nsecs - @lk[tid]); delete(@lk[tid]); }
EOF
# The floors: the same four probes with empty programs.
cat > /tmp/floor-kprobe.bt <<'EOF'
kprobe:ovl_copy_up_one {}
kretprobe:ovl_copy_up_one {}
kprobe:ovl_lookup {}
kretprobe:ovl_lookup {}
EOF
cat > /tmp/floor-kfunc.bt <<'EOF'
kfunc:overlay:ovl_copy_up_one {}
kretfunc:overlay:ovl_copy_up_one {}
kfunc:overlay:ovl_lookup {}
kretfunc:overlay:ovl_lookup {}
EOF
cat > /tmp/append.sh <<'EOF'
# Appends a line to every file given: each append copies a whole file up.
for f in "$@"; do echo x >> "$f" || exit 1; done
EOF

# ---------------------------------------------------------------- tracers --
TPID=
TLOG=
tracer_start() { # setup tag
	TPID=
	case $1 in
	untraced) return 0 ;;
	ovltrace-fentry | ovltrace-kprobe)
		ovltrace run --probe ${1#ovltrace-} --json /tmp/$2.json > /tmp/$2.out 2> /tmp/$2.err &
		TPID=$!; TLOG=/tmp/$2.err; ready='^Tracing' ;;
	bpftrace-kprobe | bpftrace-kfunc | floor-kprobe | floor-kfunc)
		bpftrace /tmp/$1.bt > /tmp/$2.out 2> /tmp/$2.err &
		TPID=$!; TLOG=/tmp/$2.out; ready='^Attaching' ;;
	*) die "unknown set-up $1" ;;
	esac
	i=0
	until grep -q "$ready" $TLOG 2>/dev/null; do
		if ! kill -0 $TPID 2>/dev/null || [ $i -ge 3000 ]; then
			cat /tmp/$2.out /tmp/$2.err >&2
			die "$1 did not start"
		fi
		sleep 0.1
		i=$((i + 1))
	done
}

tracer_stop() { # setup tag timed|stats
	[ -z "$TPID" ] && return 0
	kill -INT $TPID
	wait $TPID
	rc=$?
	[ $rc -eq 0 ] || { cat /tmp/$2.out /tmp/$2.err >&2; die "$1 exited with $rc"; }
	case $1 in
	ovltrace-*) [ "$3" = timed ] && section "json-$2" /tmp/$2.json ;;
	esac
	rm -f /tmp/$2.json /tmp/$2.out /tmp/$2.err
}

# CPU time (ns) and context switches of the tracer's threads so far.
tracer_cpu() {
	if [ -n "$TPID" ]; then $H cpu $TPID; else echo 0 0; fi
}

# Every loaded BPF program: id type name run_cnt run_time_ns.
progstats() { $H progstats > "$1" || die "reading the BPF programs' statistics"; }

# Lets deferred kernel work (freed memory, RCU) finish; costs no host time
# (-icount sleep=off skips idle time).
settle() {
	sync
	echo 3 > /proc/sys/vm/drop_caches
	sleep 1
}

# --------------------------------------------------------------- workloads --
# Entries in the run's upper layer, itself not counted: the copy-ups made.
copied_up() { echo $(($(find $d/up | wc -l) - 1)); }

# prep_W builds the lower layers once; mount_W mounts a fresh overlay on $d/m
# (upper $d/up); timed_W runs the timed part and sets ELAPSED (ns) and EXTRA.

prep_copyup() {
	$H tree $B/cu/lower/tree $CU_DIRS $CU_FILES $CU_BYTES > /dev/null || die "building the tree"
}
mount_copyup() {
	mount -t overlay overlay -o lowerdir=$B/cu/lower,upperdir=$d/up,workdir=$d/work $d/m
}
timed_copyup() {
	set -- $($H time chown -R 1:1 $d/m/tree)
	[ "${2:-1}" = 0 ] || die "chown -R failed"
	ELAPSED=$1
	EXTRA="copied_up=$(copied_up)"
}

prep_bigfiles() {
	mkdir -p $B/big/lower
	i=1
	while [ $i -le $BIG_FILES ]; do
		$H bigfile $B/big/lower/f$i $BIG_MIB > /dev/null || die "writing big files"
		i=$((i + 1))
	done
}
mount_bigfiles() {
	mount -t overlay overlay -o lowerdir=$B/big/lower,upperdir=$d/up,workdir=$d/work $d/m
}
timed_bigfiles() {
	set -- $($H time sh /tmp/append.sh $d/m/f*)
	[ "${2:-1}" = 0 ] || die "appends failed"
	ELAPSED=$1
	EXTRA="copied_up=$(copied_up) upper_kb=$(du -sk $d/up | cut -f1)"
}

prep_lookups() {
	$H lookup-layers $B/lk $LK_LAYERS $LK_EXISTING > /dev/null || die "building the layers"
	LK_LOWER=$B/lk/l1
	i=2
	while [ $i -le $LK_LAYERS ]; do
		LK_LOWER=$LK_LOWER:$B/lk/l$i
		i=$((i + 1))
	done
}
mount_lookups() {
	mount -t overlay overlay -o lowerdir=$LK_LOWER,upperdir=$d/up,workdir=$d/work $d/m
}
timed_lookups() {
	set -- $($H lookups $d/m/d $LK_EXISTING $LK_PASSES)
	[ $# -eq 3 ] || die "lookups failed"
	ELAPSED=$1
	EXTRA="found=$2 missing=$3 copied_up=$(copied_up)"
}

# ------------------------------------------------------------------- main --
for w in $WORKLOADS; do
	say "$w: preparing the lower layers"
	prep_$w
done
echo "INFO free_after_prep $(free -m | grep Mem: | tr -s ' ')"
# One workload ($w) on a fresh overlay; $1 = timed or stats.
run_workload() {
	d=$B/run/$w-$tag
	mkdir -p $d
	# The upper layer on its own tmpfs: unmounting frees it at once.
	mount -t tmpfs -o size=1200m run $d || die "tmpfs for $w-$tag"
	mkdir -p $d/up $d/work $d/m
	mount_$w || die "mounting the overlay for $w-$tag"
	settle
	if [ "$1" = timed ]; then
		before=$(tracer_cpu)
		timed_$w
		after=$(tracer_cpu)
		set -- $before $after
		echo "RESULT $w $s $rep $ELAPSED $(($3 - $1)) $EXTRA tracer_switches=$(($4 - $2))"
		say "$w-$tag: $ELAPSED ns ($EXTRA)"
	else
		progstats /tmp/progs.before
		timed_$w
		progstats /tmp/progs.after
		echo "STATRUN $w $s $ELAPSED $EXTRA"
		# The programs that ran during the workload, with their deltas.
		awk -v w=$w -v s=$s 'NR == FNR { c[$1] = $4; t[$1] = $5; next }
			NF == 5 && $4 - c[$1] > 0 {
				print "PROGSTAT", w, s, $1, $2, $3, $4 - c[$1], $5 - t[$1] }' \
			/tmp/progs.before /tmp/progs.after
		say "$w-$tag: $ELAPSED ns with BPF statistics on"
	fi
	umount $d/m || die "umount $d/m"
	umount $d || die "umount $d"
	rmdir $d
}

rep=1
while [ $rep -le $REPS ]; do
	for s in $SETUPS; do
		# One tracer session per set-up and round, over every workload:
		# starting tracers is the slow part under emulation.
		tag=$s-$rep
		say "$tag: starting"
		tracer_start $s $tag
		for w in $WORKLOADS; do
			run_workload timed
		done
		tracer_stop $s $tag timed
	done
	rep=$((rep + 1))
done
if [ "$STATS" = 1 ]; then
	# Statistics in a round of their own: counting costs two clock reads
	# per program run, which the timed rounds must not include.
	echo 1 > /proc/sys/kernel/bpf_stats_enabled || die "enabling kernel.bpf_stats_enabled"
	echo "INFO bpf_stats_enabled $(cat /proc/sys/kernel/bpf_stats_enabled)"
	for s in $SETUPS; do
		[ $s = untraced ] && continue
		tag=$s-stats
		say "$tag: starting"
		tracer_start $s $tag
		for w in $WORKLOADS; do
			run_workload stats
		done
		tracer_stop $s $tag stats
	done
	echo 0 > /proc/sys/kernel/bpf_stats_enabled
fi
echo "INFO done"
