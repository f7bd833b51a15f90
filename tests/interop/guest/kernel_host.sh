#!/bin/sh
# kernel_host.sh: the guest kernel's NVMe/TCP host against nvmeof-emu running on the
# host (reached as 10.0.2.2). Runs in the linuxvm guest (busybox ash), started by
# tests/interop via `../shared/linuxvm/run -e NAME=VALUE ... kernel_host.sh`.
#
# Every step prints its output between machine-checkable markers:
#   === BEGIN <step>
#   ...output (stdout and stderr)...
#   === END <step> rc=<exit status>
# plus single lines "INFO key=value ..." (devices found, sysfs states).
# A failed step does not stop the script (later steps still run, and `nvme disconnect`
# is always attempted); the exit status is 1 if any step failed.
#
# Settings (environment):
#   ADDR          target address (default 10.0.2.2 = the host's 127.0.0.1)
#   NQN           subsystem NQN (default nqn.2026-11.io.nvmeof-emu:demo)
#   DISC_PORT     discovery port for `nvme discover`; empty = no discovery (default 8009)
#   PORTS         I/O ports to connect to, one controller (path) each (default "4420 4421")
#   CONNECT_ARGS  extra `nvme connect` options, e.g. "-g -G" (header + data digests)
#   ADMIN         1 = id-ctrl/id-ns/ana-log/smart-log/error-log (default 1)
#   FIO_JOBS      fio jobs to run, in order, from: randrw seq1m passthru ns2 randwrite
#                 (default "randrw seq1m passthru")
#   RANDRW_RUNTIME  seconds for the time-based randrw job (default 30)
#   RANDRW_SIZE   region per randrw job; job N uses [N*size, (N+1)*size) (default 32M)
#   FIO_SIZE      bytes written+verified by the other jobs (default 32M)
set -u
ADDR=${ADDR:-${LINUXVM_HOST_IP:-10.0.2.2}}
NQN=${NQN:-nqn.2026-11.io.nvmeof-emu:demo}
DISC_PORT=${DISC_PORT-8009}
PORTS=${PORTS:-4420 4421}
CONNECT_ARGS=${CONNECT_ARGS:-}
ADMIN=${ADMIN:-1}
FIO_JOBS=${FIO_JOBS-randrw seq1m passthru}
RANDRW_RUNTIME=${RANDRW_RUNTIME:-30}
RANDRW_SIZE=${RANDRW_SIZE:-32M}
FIO_SIZE=${FIO_SIZE:-32M}

FAILED=0
begin() { echo "=== BEGIN $1"; }
end() {
  echo "=== END $1 rc=$2"
  [ "$2" = 0 ] || FAILED=1
}
# step NAME CMD [ARGS...]: run CMD with its output between markers; returns its status.
step() {
  _name=$1
  shift
  begin "$_name"
  "$@" 2>&1
  _rc=$?
  end "$_name" "$_rc"
  return "$_rc"
}
# show NAME FILE: print a file between markers (rc 1 if it is missing).
show() {
  begin "$1"
  if [ -f "$2" ]; then cat "$2"; _rc=$?; else echo "(no file $2)"; _rc=1; fi
  echo
  end "$1" "$_rc"
}

echo "INFO kernel=$(uname -r) multipath=$(cat /sys/module/nvme_core/parameters/multipath)" \
  "hostnqn=$(cat /etc/nvme/hostnqn)"

if [ -n "$DISC_PORT" ]; then
  step discover nvme discover -t tcp -a "$ADDR" -s "$DISC_PORT"
fi

for port in $PORTS; do
  # shellcheck disable=SC2086  # CONNECT_ARGS is a list of options
  step "connect@$port" nvme connect -t tcp -a "$ADDR" -s "$port" -n "$NQN" $CONNECT_ARGS
done

# The subsystem, its controllers (one per port) and the multipath head namespaces.
SUBSYS=
NS1= NS2=
i=0
while [ $i -lt 100 ]; do
  for s in /sys/class/nvme-subsystem/nvme-subsys*; do
    [ "$(cat "$s/subsysnqn" 2>/dev/null)" = "$NQN" ] && SUBSYS=$s
  done
  if [ -n "$SUBSYS" ]; then
    for n in "$SUBSYS"/nvme*n*; do
      d=${n##*/}
      case $d in nvme*c*n*) continue ;; esac
      [ -b "/dev/$d" ] || continue
      case $(cat "/sys/block/$d/nsid" 2>/dev/null) in
        1) NS1=$d ;;
        2) NS2=$d ;;
      esac
    done
  fi
  [ -n "$NS1" ] && [ -n "$NS2" ] && break
  i=$((i + 1))
  sleep 0.1
done
CTRLS=
if [ -n "$SUBSYS" ]; then
  for c in "$SUBSYS"/nvme*; do
    d=${c##*/}
    case $d in nvme*n*) continue ;; esac
    CTRLS="$CTRLS $d"
    addr=$(cat "/sys/class/nvme/$d/address" 2>/dev/null | tr -d '\n')
    port=$(echo "$addr" | sed -n 's/.*trsvcid=\([0-9]*\).*/\1/p')
    eval "CTRL_$port=$d"
    for p in "/sys/class/nvme/$d"/nvme*c*n*; do
      [ -e "$p/ana_state" ] || continue
      echo "INFO path=${p##*/} ctrl=$d port=$port nsid=$(cat "$p/nsid" 2>/dev/null)" \
        "ana_state=$(cat "$p/ana_state")"
    done
    echo "INFO ctrl=$d port=$port state=$(cat "/sys/class/nvme/$d/state")" \
      "cntlid=$(cat "/sys/class/nvme/$d/cntlid") transport=$(cat "/sys/class/nvme/$d/transport")" \
      "address=$addr"
  done
fi
echo "INFO subsys=${SUBSYS##*/} ns1=$NS1 ns2=$NS2 ctrls=$(echo $CTRLS | tr ' ' ,)"
if [ -z "$NS1" ]; then
  echo "no namespace block device for nsid 1 appeared"
  FAILED=1
fi

if [ -n "$NS1" ]; then
  step list-subsys nvme list-subsys "/dev/$NS1"
fi

if [ "$ADMIN" = 1 ] && [ -n "$NS1" ]; then
  for port in $PORTS; do
    eval "c=\${CTRL_$port:-}"
    [ -n "$c" ] || { echo "no controller for port $port"; FAILED=1; continue; }
    step "id-ctrl@$port" nvme id-ctrl "/dev/$c" -o json
    step "ana-log@$port" nvme ana-log "/dev/$c"
    step "smart-log@$port" nvme smart-log "/dev/$c"
    step "error-log@$port" nvme error-log "/dev/$c"
  done
  step id-ns1 nvme id-ns "/dev/$NS1" -o json
  [ -n "$NS2" ] && step id-ns2 nvme id-ns "/dev/$NS2" -o json
fi

# fio: results as JSON in /tmp/fio-NAME.json (printed as step fio-json:NAME), fio's
# stdout+stderr (verify errors) in step fio:NAME.
fio_job() {
  _job=$1
  shift
  step "fio:$_job" fio --name="$_job" --eta=never --output-format=json \
    --output="/tmp/fio-$_job.json" "$@"
  show "fio-json:$_job" "/tmp/fio-$_job.json"
}
if [ -n "$NS1" ]; then
  for job in $FIO_JOBS; do
    case $job in
      randrw)
        # Two jobs on disjoint regions (offset_increment = size), each verifying only what
        # it wrote itself. time_based writes for the whole runtime, so the writes are
        # verified inline (verify_backlog: the seed check then uses each block's header) and
        # in the verify pass fio runs after each pass over the region (randommap on: every
        # block once per pass; randrepeat=1: fio 3.33 re-seeds each pass consistently).
        fio_job randrw --filename="/dev/$NS1" --ioengine=io_uring --direct=1 \
          --rw=randrw --bs=4k --iodepth=32 --numjobs=2 \
          --size="$RANDRW_SIZE" --offset_increment="$RANDRW_SIZE" \
          --runtime="$RANDRW_RUNTIME" --time_based --randrepeat=1 \
          --verify=crc32c --do_verify=1 --verify_fatal=1 --verify_backlog=512
        ;;
      seq1m)
        # 1 MiB writes: far above the 8 KiB in-capsule limit, so R2T + H2CData.
        fio_job seq1m --filename="/dev/$NS1" --ioengine=io_uring --direct=1 \
          --rw=write --bs=1M --iodepth=4 --offset=64M --size="$FIO_SIZE" \
          --verify=crc32c --do_verify=1 --verify_fatal=1
        ;;
      passthru)
        # NVMe passthrough (io_uring_cmd) on the multipath head's char device.
        fio_job passthru --filename="/dev/ng${NS1#nvme}" --ioengine=io_uring_cmd \
          --cmd_type=nvme --rw=randwrite --bs=4k --iodepth=16 --offset=128M \
          --size="$FIO_SIZE" --verify=crc32c --do_verify=1 --verify_fatal=1
        ;;
      ns2)
        # The 4 KiB-block namespace, mixed sizes up to 64 KiB.
        fio_job ns2 --filename="/dev/$NS2" --ioengine=io_uring --direct=1 --rw=randwrite \
          --bsrange=4k-64k --iodepth=16 --size="$FIO_SIZE" \
          --verify=crc32c --do_verify=1 --verify_fatal=1
        ;;
      randwrite)
        fio_job randwrite --filename="/dev/$NS1" --ioengine=io_uring --direct=1 \
          --rw=randwrite --bs=4k --iodepth=32 --offset=160M --size="$FIO_SIZE" \
          --verify=crc32c --do_verify=1 --verify_fatal=1
        ;;
      *)
        echo "unknown fio job $job"
        FAILED=1
        ;;
    esac
  done
fi

step disconnect nvme disconnect -n "$NQN"
left=
for s in /sys/class/nvme-subsystem/nvme-subsys*; do
  [ "$(cat "$s/subsysnqn" 2>/dev/null)" = "$NQN" ] && left=${s##*/}
done
echo "INFO after_disconnect_subsys=${left:-none}"

# The kernel's view: every nvme line, and the tail when something failed.
begin dmesg-nvme
dmesg | grep -E 'nvme|blk_update|I/O error|Call Trace|WARNING:|BUG:'
end dmesg-nvme 0
if [ "$FAILED" != 0 ]; then
  begin dmesg-tail
  dmesg | tail -n 50
  end dmesg-tail 0
fi
echo "INFO failed=$FAILED"
exit "$FAILED"
