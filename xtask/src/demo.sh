#!/bin/sh
# The workload of `cargo xtask demo` (runs inside the VM; xtask/src/demo.sh).
# dockerd is running and the demo image is loaded. ovltrace traces while two
# containers of the image write to files that come from different layers,
# then prints its report: per container, the hot files with the layer and
# Dockerfile instruction they were copied up from.
set -u
IMG=demo/shop-api:2.3
COLOR=${COLOR:-never}
say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
[ "$COLOR" = always ] || say() { printf '\n== %s\n' "$*"; }

say "ovltrace run (tracing every overlay mount; Ctrl-C ends it, here SIGINT)"
ovltrace run --color "$COLOR" --top 8 > /tmp/report.txt 2> /tmp/ovltrace.err &
tracer=$!
# ovltrace prints a line starting with "Tracing" once every probe is attached.
i=0
until grep -q '^Tracing' /tmp/ovltrace.err 2>/dev/null; do
	if ! kill -0 $tracer 2>/dev/null || [ $i -ge 600 ]; then
		echo "ovltrace did not start:" >&2
		cat /tmp/ovltrace.err >&2
		exit 1
	fi
	sleep 0.1
	i=$((i + 1))
done
grep '^Tracing' /tmp/ovltrace.err
# The live view beside it; piped, it prints one block per interval.
ovltrace top -i 2s > /tmp/top.txt 2> /tmp/top.err &
top=$!
until grep -q '^Tracing' /tmp/top.err 2>/dev/null || ! kill -0 $top 2>/dev/null; do
	sleep 0.1
done

say "docker run --name shop-api $IMG: appends to the catalog, the index and the config"
docker run --network none --name shop-api $IMG sh -c '
	echo "order 1001" >> /var/lib/app/catalog.db
	echo "warm" >> /var/cache/app/index.bin
	echo "workers=4" >> /etc/app/app.conf' || exit 1

say "docker run --name shop-worker $IMG: chown -R /srv/static (300 files), touches the index"
docker run --network none --name shop-worker $IMG sh -c '
	chown -R 1000:1000 /srv/static
	echo "warm" >> /var/cache/app/index.bin' || exit 1

sleep 2
kill -INT $top $tracer
wait $tracer
rc=$?
wait $top
say "ovltrace report"
cat /tmp/report.txt
if [ $rc != 0 ]; then
	cat /tmp/ovltrace.err >&2
	exit $rc
fi

say "ovltrace top -i 2s (piped: its last block)"
awk '/^ovltrace top/ { block = "" } { block = block $0 "\n" } END { printf "%s", block }' /tmp/top.txt

say "ovltrace layers (a running container of the same image)"
docker run -d --network none --name shop-idle $IMG sleep 600 > /dev/null || exit 1
ovltrace layers
rc=$?
docker rm -f shop-idle > /dev/null
exit $rc
