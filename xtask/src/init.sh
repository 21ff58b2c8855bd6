#!/bin/sh
# /init of the ovltrace test VM (xtask/src/init.sh; built into the initramfs).
#
# Serial ports: ttyS0 = kernel console (and this script's progress), ttyS1 =
# the command's stdout, ttyS2 = its stderr, ttyS3 = control channel to the
# harness ("EXIT <code>" or "SETUP-FAILED <reason>").
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export HOME=/root
export TERM=dumb

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs -o mode=1777 tmpfs /tmp
mount -t tmpfs -o mode=755 tmpfs /run
mount -t bpf bpf /sys/fs/bpf
mount -t tracefs tracefs /sys/kernel/tracing
mount -t debugfs debugfs /sys/kernel/debug

CTL=/dev/ttyS3
for tty in /dev/ttyS1 /dev/ttyS2 /dev/ttyS3; do
	# Raw: no \n -> \r\n, no echo; the harness gets the bytes as written.
	stty -F "$tty" raw -echo
done

log() { echo "[$(cut -d' ' -f1 /proc/uptime)] ovltrace-vm: $*" > /dev/console; }
fail() {
	log "setup failed: $*"
	echo "ovltrace-vm: setup failed: $*" > /dev/ttyS2
	echo "SETUP-FAILED $*" > "$CTL"
	poweroff -f
	while :; do sleep 1; done
}

ko=$(find /lib/modules -name overlay.ko | head -n 1)
insmod "$ko" || fail "insmod $ko"

VM_DOCKER=0
VM_CONTAINERD=0
VM_PODMAN=0
VM_DOCKER_TIMEOUT=120
VM_IMAGES=
. /etc/ovltrace-vm/config || fail "reading /etc/ovltrace-vm/config"

if [ "$VM_DOCKER" = 1 ] || [ "$VM_CONTAINERD" = 1 ] || [ "$VM_PODMAN" = 1 ]; then
	mkdir -p /sys/fs/cgroup /dev/pts /dev/shm /var/lib /var/run /var/tmp
	mount -t cgroup2 cgroup2 /sys/fs/cgroup || fail "mounting cgroup2"
	mount -t devpts devpts /dev/pts
	mount -t tmpfs tmpfs /dev/shm
	mount -t tmpfs tmpfs /var/lib
	# Loopback is the only network; containers run with --network none.
	ip link set lo up
fi

if [ "$VM_PODMAN" = 1 ]; then
	# An initramfs root cannot pivot_root; no systemd, no journald.
	mkdir -p /etc/containers
	printf '[engine]\nno_pivot_root = true\ncgroup_manager = "cgroupfs"\nevents_logger = "file"\nruntime = "runc"\n' \
		> /etc/containers/containers.conf
	printf '[storage]\ndriver = "overlay"\nrunroot = "/run/containers/storage"\ngraphroot = "/var/lib/containers/storage"\n' \
		> /etc/containers/storage.conf
fi

if [ "$VM_CONTAINERD" = 1 ] && [ "$VM_DOCKER" != 1 ]; then
	containerd > /var/log/containerd.log 2>&1 &
	waited=0
	until ctr version > /dev/null 2>&1; do
		if [ "$waited" -ge "$VM_DOCKER_TIMEOUT" ]; then
			tail -n 30 /var/log/containerd.log > /dev/ttyS2
			fail "containerd did not answer within ${VM_DOCKER_TIMEOUT}s"
		fi
		sleep 1
		waited=$((waited + 1))
	done
	log "containerd ready after ${waited}s"
fi

if [ "$VM_DOCKER" = 1 ]; then
	containerd > /var/log/containerd.log 2>&1 &
	# An initramfs root cannot pivot_root: DOCKER_RAMDISK makes runc use chroot.
	DOCKER_RAMDISK=true dockerd --bridge=none --iptables=false --ip6tables=false \
		--storage-driver=overlay2 --containerd=/run/containerd/containerd.sock \
		> /var/log/dockerd.log 2>&1 &
	waited=0
	until docker version > /dev/null 2>&1; do
		if [ "$waited" -ge "$VM_DOCKER_TIMEOUT" ]; then
			tail -n 30 /var/log/dockerd.log > /dev/ttyS2
			fail "dockerd did not answer within ${VM_DOCKER_TIMEOUT}s"
		fi
		sleep 1
		waited=$((waited + 1))
	done
	log "dockerd ready after ${waited}s"
	for image in $VM_IMAGES; do
		docker load -q -i "$image" > /dev/console 2>&1 || fail "docker load -i $image"
		rm -f "$image"
	done
	log "docker ready"
fi

cd /tmp
log "running command"
sh /etc/ovltrace-vm/cmd.sh < /dev/null > /dev/ttyS1 2> /dev/ttyS2
rc=$?
log "command exited with $rc"
echo "EXIT $rc" > "$CTL"
poweroff -f
while :; do sleep 1; done
