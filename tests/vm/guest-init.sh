#!/bin/sh
# Stage 2 of the vm-test guest: PID 1 in the overlay root (the host's root,
# read-only, plus a tmpfs). The initramfs has mounted /proc, /sys, /dev and
# the results share at /run/vmtest. Runs /run/vmtest/payload.sh (written by
# tests/vm/runner.py), stores its exit code and powers off.
#
# Exiting PID 1 would panic the kernel; panic=-1 plus QEMU's -no-reboot turn
# that into a QEMU exit as well, so a broken script still ends the run.

out=/run/vmtest
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export HOME=/root LANG=C.UTF-8 TERM=dumb
export VFIO_FLAVOURD_VM_GUEST=1 VFIO_FLAVOURD_VM_SHARE=$out

mkdir -p /dev/pts /dev/shm
mount -t devpts -o gid=5,mode=620 devpts /dev/pts
mount -t tmpfs -o mode=1777,nosuid,nodev shm /dev/shm
# /tmp stays the overlay's: a clone under the host's /tmp must stay visible.
hostname vm-test 2>/dev/null || busybox hostname vm-test

read -r uptime _ </proc/uptime
echo "$uptime" >"$out/booted.tmp" && mv "$out/booted.tmp" "$out/booted"
echo "vm-guest: stage 2 up at ${uptime}s, running payload"

sh "$out/payload.sh" >"$out/payload.log" 2>&1 </dev/null
rc=$?
echo "$rc" >"$out/exitcode.tmp" && mv "$out/exitcode.tmp" "$out/exitcode"
echo "vm-guest: payload exited $rc"
sync
exec busybox poweroff -f
