#!/bin/bash
# Runs in the guest (suite "facts"): records what the real kernel and tools
# answer where internal/node/mapper's unit tests use fakes (fake sysfs,
# fake kernel log, fake rbd-nbd output), so each fake can be checked
# against the real thing. Output: one "== what" section per fact.
# Needs a cluster (CEPH_CONF, CEPH_POOL) and the rbd and nbd modules.
set -u
P=${CEPH_POOL:-kube}
fact() { echo; echo "== $*"; }
run() { echo "\$ $*"; timeout 120 "$@"; echo "[exit $?]"; }

fact "supported_features"
cat /sys/bus/rbd/supported_features
ls /sys/bus/rbd

rbd create "$P/facts" --size 64M --image-feature layering
rbd create "$P/facts-j" --size 64M --image-feature layering,exclusive-lock,journaling

fact "krbd: rbd map (stdout, then stderr)"
dev=$(rbd map "$P/facts")
echo "stdout: $dev"
id=${dev#/dev/rbd}
fact "krbd: sysfs attributes of devices/$id (config_info not shown: it holds the key)"
for a in /sys/bus/rbd/devices/"$id"/*; do
  [ -f "$a" ] && [ "${a##*/}" != config_info ] && printf '%s=%q\n' "${a##*/}" "$(cat "$a" 2>&1)"
done
printf 'block ro=%s\n' "$(cat /sys/block/rbd"$id"/ro)"
fact "krbd: remove while the device is held open (exec 3<$dev)"
exec 3<"$dev"
echo "$id" >/sys/bus/rbd/remove_single_major
echo "[write exit $?]"
exec 3<&-
fact "krbd: remove right after a writer closed the device (udev probes it)"
dd if=/dev/zero of="$dev" bs=4k count=1 oflag=direct status=none
echo "$id" >/sys/bus/rbd/remove_single_major
echo "[write exit $?]"
[ -e "/sys/bus/rbd/devices/$id" ] && { sleep 2; run rbd unmap "$dev"; }

fact "krbd: journaling image, rbd map (stdout and stderr apart)"
n0=$(dmesg | wc -l)
rbd map "$P/facts-j" >/tmp/facts.out 2>/tmp/facts.err
echo "[exit $?]"; echo "stdout: $(cat /tmp/facts.out)"; echo "stderr: $(cat /tmp/facts.err)"
echo "dmesg: $(dmesg | tail -n +$((n0 + 1)))"

fact "krbd: journaling image, direct write to add_single_major"
n0=$(dmesg | wc -l)
mon=${CEPH_MON_HOST%%,*}
echo "$mon name=admin,secret=$CEPH_ADMIN_KEY $P facts-j -" >/sys/bus/rbd/add_single_major 2>/tmp/facts.err
rc=$? err=$(cat /tmp/facts.err)
echo "[write exit $rc] ${err//"$CEPH_ADMIN_KEY"/KEY}"
echo "dmesg: $(dmesg | tail -n +$((n0 + 1)))"

fact "rbd-nbd: map, list-mapped --format json"
dev=$(rbd-nbd map "$P/facts")
echo "stdout: $dev"
run rbd-nbd list-mapped --format json
fact "rbd-nbd: unmap while the device is held open (exec 3<$dev)"
exec 3<"$dev"
run rbd-nbd unmap "$dev"
echo "after: $(rbd-nbd list-mapped | tail -n +2)"
dd if="$dev" of=/dev/null bs=4k count=1 iflag=direct 2>&1 | head -n 2
exec 3<&-
rbd-nbd list-mapped | grep -q "$dev" && run rbd-nbd unmap "$dev"

fact "rbd-nbd: map of a missing image"
run rbd-nbd map "$P/no-such-image" 2>&1

rbd rm --no-progress "$P/facts" "$P/facts-j" 2>/dev/null || { rbd rm --no-progress "$P/facts"; rbd rm --no-progress "$P/facts-j"; }
