#!/bin/sh
# tls_host.sh: the kernel's NVMe/TCP host with TLS 1.3 and a pre-shared key (TP 8011) against our
# target on the host (tests/interop/test_kernel_tls_target.py). Needs the trixie guest (Linux
# 6.12 + tlshd from ktls-utils 1.0.0): Debian 12's 6.1 has no NVMe/TCP TLS.
#
# The kernel does the record layer (kTLS); tlshd, started here, does each queue's handshake. The
# PSKs are filed in the .nvme keyring with `nvme check-tls-key --identity=0 --insert`, which
# (nvme-cli 2.13 / libnvme 1.13) files the compat-derived TLS PSK under the identity
# "NVMe0R0<h> <hostnqn> <subnqn>" (docs/TLS.md). Keys inserted:
#   KA for host HA and NQN, and for HA and the discovery NQN (discover --tls)
#   KB (an 02 / SHA-384, 48-byte key) for host HB and NQN
#   KX for host HW and NQN: the target knows HW with another key (the wrong-key case)
# Steps (=== BEGIN/END markers, parsed by interop_harness.GuestRun):
#   keys                  insert the PSKs (prints "KEYSERIAL <name> <hex serial>")
#   discover              plain `nvme discover` to the TLS-allowed port: treq / sectype
#   discover-tls          `nvme discover --tls` to the TLS-required port
#   tls                   HA --tls to the required port: connects (+ -info, -fio, -disconnect)
#   plain                 HA without --tls to the required port: refused
#   allowed-plain         HA without --tls to the allowed port: connects in the clear (+ ...)
#   allowed-tls           HA --tls to the allowed port: connects over TLS (+ ...)
#   wrongkey              HW --tls with a key the target does not have: refused
#   sha384                HB --tls with the 02 key: connects (+ -info, -fio, -disconnect)
#   dmesg-nvme, tlshd-log the guest's logs
# A <case>-info step prints "tls_key=<serial in hex|none> queue_count=N" and tlshd's lines of
# that connect ("Using psk identity", "Session description", "successful", "failed").
# Environment: ADDR (10.0.2.2), PORT_REQ, PORT_ALLOWED, NQN, HA HB HW (host NQNs, uuid form),
# KA KB KX (NVMeTLSkey-1 keys), FIO_SIZE (2M).
set -u
ADDR=${ADDR:-10.0.2.2}
FIO_SIZE=${FIO_SIZE:-2M}
DISC_NQN=nqn.2014-08.org.nvmexpress.discovery
TLSHD_LOG=/tmp/tlshd.log

if ! command -v tlshd > /dev/null || [ ! -e /sys/module/nvme_keyring ]; then
  echo "TLS-UNSUPPORTED kernel $(uname -r) has no NVMe/TCP TLS (CONFIG_NVME_TCP_TLS) or no tlshd"
  exit 2
fi

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

echo "INFO kernel=$(uname -r) nvme_cli=$(nvme version | sed -n 's/^nvme version \([^ ]*\).*/\1/p')" \
  "tlshd=$(tlshd -v 2>&1 | sed -n 's/.*ktls-utils \([^ ]*\).*/\1/p')"

# tlshd: the kernel's TLS handshake agent (netlink "handshake" upcalls), logging each handshake.
# Its log is opened for appending, so that it can be truncated between cases.
sed "s/^loglevel=.*/loglevel=1/" /etc/tlshd.conf > /tmp/tlshd.conf
: > "$TLSHD_LOG"
tlshd -s -c /tmp/tlshd.conf >> "$TLSHD_LOG" 2>&1 &
TLSHD=$!
for _ in $(seq 1 50); do
  grep -q "priority string" "$TLSHD_LOG" && break
  sleep 0.1
done

insert() {  # NAME HOSTNQN SUBNQN KEY
  _out=$(nvme check-tls-key --hostnqn="$2" --subsysnqn="$3" --keydata="$4" --identity=0 \
           --insert 2>&1) || { echo "$1: $_out"; return 1; }
  echo "KEYSERIAL $1 $(echo "$_out" | sed -n 's/^Inserted TLS key //p')"
}
keys() {
  insert A "$HA" "$NQN" "$KA" &&
    insert A-discovery "$HA" "$DISC_NQN" "$KA" &&
    insert B "$HB" "$NQN" "$KB" &&
    insert X "$HW" "$NQN" "$KX" &&
    keyctl show %:.nvme | tail -n +2
}

connect() {  # HOSTNQN TCPPORT [nvme connect options...]
  _host=$1 _port=$2
  shift 2
  : > "$TLSHD_LOG"
  timeout 60 nvme connect -t tcp -a "$ADDR" -s "$_port" -n "$NQN" --hostnqn="$_host" \
    --hostid="${_host##*uuid:}" "$@"
}
controller() {  # the sysfs directory of NQN's controller
  for _c in /sys/class/nvme/nvme*; do
    [ "$(cat "$_c/subsysnqn" 2>/dev/null)" = "$NQN" ] && { echo "$_c"; return 0; }
  done
  return 1
}
info() {  # how the controller is connected, and what tlshd said about it
  _c=$(controller) || { echo "no controller for $NQN"; return 1; }
  echo "tls_key=$(cat "$_c/tls_key" 2>/dev/null || echo none) queue_count=$(cat "$_c/queue_count")"
  grep -E 'Using psk identity|Session description|successful|failed|error' "$TLSHD_LOG" |
    sed 's/^tlshd\[[0-9]*\]: //' | sort | uniq -c
  return 0
}
device() {  # the namespace block device of NQN's controller, once it shows up
  for _ in $(seq 1 50); do
    if _c=$(controller); then
      for n in /dev/"${_c##*/}"n1 /dev/nvme*n1; do
        [ -b "$n" ] && { echo "$n"; return 0; }
      done
    fi
    sleep 0.1
  done
  return 1
}
verify() {  # fio writes and reads back FIO_SIZE with checksums
  dev=$(device) || { echo "no namespace device"; return 1; }
  fio --name=tls --filename="$dev" --rw=randwrite --bs=4k --size="$FIO_SIZE" --direct=1 \
      --ioengine=io_uring --iodepth=8 --verify=crc32c --verify_fatal=1 --do_verify=1 \
      --output-format=terse --minimal > /tmp/fio.out 2>&1
  _rc=$?
  [ $_rc = 0 ] || tail -n 20 /tmp/fio.out
  return $_rc
}
refused() {  # after a connect that should have failed: tlshd's lines, no controller left
  if ! info; then
    grep -v 'priority string' "$TLSHD_LOG" | sed 's/^tlshd\[[0-9]*\]: //' | sort | uniq -c
    dmesg | tail -n 5
  fi
  nvme disconnect -n "$NQN" > /dev/null 2>&1
  return 0
}
connected_case() {  # NAME HOSTNQN TCPPORT [options]: connect, info, fio, disconnect
  _case=$1
  shift
  if step "$_case" connect "$@"; then
    step "$_case-info" info
    step "$_case-fio" verify
    step "$_case-disconnect" nvme disconnect -n "$NQN"
  else
    step "$_case-info" refused
  fi
}
refused_case() {  # NAME HOSTNQN TCPPORT [options]
  _case=$1
  shift
  step "$_case" connect "$@"
  step "$_case-info" refused
}

step keys keys
step discover nvme discover -t tcp -a "$ADDR" -s "$PORT_ALLOWED" --hostnqn="$HA" --hostid="${HA##*uuid:}"
step discover-tls nvme discover -t tcp -a "$ADDR" -s "$PORT_REQ" --hostnqn="$HA" \
  --hostid="${HA##*uuid:}" --tls
connected_case tls "$HA" "$PORT_REQ" --tls
refused_case plain "$HA" "$PORT_REQ"
connected_case allowed-plain "$HA" "$PORT_ALLOWED"
connected_case allowed-tls "$HA" "$PORT_ALLOWED" --tls
refused_case wrongkey "$HW" "$PORT_REQ" --tls
connected_case sha384 "$HB" "$PORT_REQ" --tls

begin dmesg-nvme
dmesg | grep -iE 'nvme|tls|handshake' | tail -40
end dmesg-nvme 0
kill "$TLSHD" 2> /dev/null
exit 0
