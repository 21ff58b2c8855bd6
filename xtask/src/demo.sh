#!/bin/sh
# The workload of `cargo xtask demo` (runs inside the VM; xtask/src/demo.sh).
# Builds a 3-layer overlay in /tmp, traces it with ovltrace for a few seconds
# and causes copy-ups by writing to lower-layer files.
set -u
d=/tmp/demo
mkdir -p $d/l1 $d/l2 $d/l3 $d/upper $d/work $d/merged
mkdir -p $d/l3/etc $d/l2/var/log $d/l1/app/data
echo "base config" > $d/l3/etc/app.conf
dd if=/dev/zero of=$d/l2/var/log/big.log bs=1024 count=4096 2>/dev/null
echo "v1" > $d/l1/app/data/state
mount -t overlay overlay \
	-o lowerdir=$d/l1:$d/l2:$d/l3,upperdir=$d/upper,workdir=$d/work $d/merged

ovltrace run --duration 5s 2> /tmp/ovltrace.err &
tracer=$!
# ovltrace prints a line starting with "Tracing" once every probe is attached.
i=0
until grep -q '^Tracing' /tmp/ovltrace.err 2>/dev/null; do
	if ! kill -0 $tracer 2>/dev/null || [ $i -ge 600 ]; then
		break
	fi
	sleep 0.1
	i=$((i + 1))
done

echo "one more line" >> $d/merged/etc/app.conf
echo "appended" >> $d/merged/var/log/big.log
echo "v2" > $d/merged/app/data/state
ls $d/merged/etc/missing 2>/dev/null

wait $tracer
rc=$?
cat /tmp/ovltrace.err >&2
echo "ovltrace exited with $rc"
echo "upper layer now holds:"
find $d/upper | sort
