#!/bin/sh
# The kernel host authenticating to our target (DH-HMAC-CHAP), one case per step:
#   right    host A with its key (hmac(sha256), no DH group): connects, fio verify, disconnect
#   wrong    host A with another key: refused
#   nokey    host A with no key: refused (the target requires authentication)
#   bidir    host B, its key and the controller key (hmac(sha384), ffdhe2048): connects, I/O
#   badctrl  host B, its key and a wrong controller key: the host refuses the controller
#   sha512   host C (hmac(sha512), ffdhe4096, a 64-byte key): connects
# Environment: ADDR (10.0.2.2), PORT, NQN, HA HB HC (host NQNs), KA KX KB KC KY KD (secrets).
set -u
ADDR=${ADDR:-10.0.2.2}

begin() { echo "=== BEGIN $1"; }
end() { echo "=== END $1 rc=$2"; }
step() {
  _name=$1
  shift
  begin "$_name"
  "$@" 2>&1
  _rc=$?
  end "$_name" "$_rc"
  return "$_rc"
}
connect() {  # HOSTNQN [nvme connect options...]
  _host=$1
  shift
  nvme connect -t tcp -a "$ADDR" -s "$PORT" -n "$NQN" --hostnqn="$_host" "$@"
}
device() {  # the namespace block device of NQN's controller, once it shows up
  for _ in $(seq 1 50); do
    for c in /sys/class/nvme/nvme*; do
      if [ "$(cat "$c/subsysnqn" 2>/dev/null)" = "$NQN" ]; then
        for n in /dev/"${c##*/}"n1 /dev/nvme*n1; do
          [ -b "$n" ] && { echo "$n"; return 0; }
        done
      fi
    done
    sleep 0.1
  done
  return 1
}
verify() {  # fio writes and reads back 8 MiB with checksums
  dev=$(device) || { echo "no namespace device"; return 1; }
  fio --name=auth --filename="$dev" --rw=randwrite --bs=4k --size=8M --direct=1 \
      --ioengine=io_uring --iodepth=8 --verify=crc32c --verify_fatal=1 --do_verify=1 \
      --output-format=terse --minimal >/dev/null
}
echo "INFO kernel=$(uname -r) nvme_cli=$(nvme version | sed -n 's/^nvme version \([^ ]*\).*/\1/p')"

step right connect "$HA" --dhchap-secret="$KA"
step right-fio verify
step right-disconnect nvme disconnect -n "$NQN"
step wrong connect "$HA" --dhchap-secret="$KX"
nvme disconnect -n "$NQN" >/dev/null 2>&1
step nokey connect "$HA"
nvme disconnect -n "$NQN" >/dev/null 2>&1
step bidir connect "$HB" --dhchap-secret="$KB" --dhchap-ctrl-secret="$KC"
step bidir-fio verify
step bidir-disconnect nvme disconnect -n "$NQN"
step badctrl connect "$HB" --dhchap-secret="$KB" --dhchap-ctrl-secret="$KY"
nvme disconnect -n "$NQN" >/dev/null 2>&1
step sha512 connect "$HC" --dhchap-secret="$KD"
step sha512-disconnect nvme disconnect -n "$NQN"
begin dmesg-nvme
dmesg | grep -i nvme | tail -30
end dmesg-nvme 0
