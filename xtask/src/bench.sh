#!/bin/sh
# The VM side of `cargo xtask bench` (xtask/src/bench.sh; runs as root under
# busybox sh in a 6.12 guest booted with qemu -icount, so guest time advances
# with instructions executed and only ratios between set-ups mean anything).
#
# Every workload runs REPS times per set-up, interleaved: in each round, each
# set-up in turn (untraced, ovltrace, bpftrace, floor) starts its tracer once
# and runs every workload, each on a fresh overlay mount with a fresh upper
# layer. stdout carries machine-readable lines only:
#   INFO key value...
#   RESULT workload setup rep elapsed_ns tracer_cpu_ns extra...
# and sections (==> BEGIN json-ovltrace-REP / ==> END ...) with ovltrace's
# JSON report of each round.
# Progress goes to stderr.
set -u

REPS=${BENCH_REPS:-3}
WORKLOADS=${BENCH_WORKLOADS:-"copyup bigfiles lookups"}
SETUPS=${BENCH_SETUPS:-"untraced ovltrace bpftrace floor"}
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

# bpftrace doing ovltrace's job: latency histograms of copy-ups and lookups.
cat > /tmp/hist.bt <<'EOF'
kprobe:ovl_copy_up_one { @cu[tid] = nsecs; }
kretprobe:ovl_copy_up_one /@cu[tid]/ { @copy_up_ns = hist(nsecs - @cu[tid]); delete(@cu[tid]); }
kprobe:ovl_lookup { @lk[tid] = nsecs; }
kretprobe:ovl_lookup /@lk[tid]/ { @lookup_ns = hist(nsecs - @lk[tid]); delete(@lk[tid]); }
EOF
# The floor: the same four probes with empty programs.
cat > /tmp/floor.bt <<'EOF'
kprobe:ovl_copy_up_one {}
kretprobe:ovl_copy_up_one {}
kprobe:ovl_lookup {}
kretprobe:ovl_lookup {}
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
	ovltrace)
		ovltrace run --json /tmp/$2.json > /tmp/$2.out 2> /tmp/$2.err &
		TPID=$!; TLOG=/tmp/$2.err; ready='^Tracing' ;;
	bpftrace)
		bpftrace /tmp/hist.bt > /tmp/$2.out 2> /tmp/$2.err &
		TPID=$!; TLOG=/tmp/$2.out; ready='^Attaching' ;;
	floor)
		bpftrace /tmp/floor.bt > /tmp/$2.out 2> /tmp/$2.err &
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

tracer_stop() { # setup tag
	[ -z "$TPID" ] && return 0
	kill -INT $TPID
	wait $TPID
	rc=$?
	[ $rc -eq 0 ] || { cat /tmp/$2.out /tmp/$2.err >&2; die "$1 exited with $rc"; }
	if [ "$1" = ovltrace ]; then
		section "json-$2" /tmp/$2.json
	fi
	rm -f /tmp/$2.json /tmp/$2.out /tmp/$2.err
}

# CPU time (ns) and context switches of the tracer's threads so far.
tracer_cpu() {
	if [ -n "$TPID" ]; then $H cpu $TPID; else echo 0 0; fi
}

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
rep=1
while [ $rep -le $REPS ]; do
	for s in $SETUPS; do
		# One tracer session per set-up and round, over every workload:
		# starting tracers is the slow part under emulation.
		tag=$s-$rep
		say "$tag: starting"
		tracer_start $s $tag
		for w in $WORKLOADS; do
			d=$B/run/$w-$tag
			mkdir -p $d
			# The upper layer on its own tmpfs: unmounting frees it at once.
			mount -t tmpfs -o size=1200m run $d || die "tmpfs for $w-$tag"
			mkdir -p $d/up $d/work $d/m
			mount_$w || die "mounting the overlay for $w-$tag"
			settle
			before=$(tracer_cpu)
			timed_$w
			after=$(tracer_cpu)
			set -- $before $after
			echo "RESULT $w $s $rep $ELAPSED $(($3 - $1)) $EXTRA tracer_switches=$(($4 - $2))"
			say "$w-$tag: $ELAPSED ns ($EXTRA)"
			umount $d/m || die "umount $d/m"
			umount $d || die "umount $d"
			rmdir $d
		done
		tracer_stop $s $tag
	done
	rep=$((rep + 1))
done
echo "INFO done"
