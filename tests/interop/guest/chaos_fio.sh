#!/bin/sh
# chaos_fio.sh: the guest kernel's NVMe/TCP host runs fio verify on the multipath head of
# nvmeof-emu's demo subsystem (two paths) while the test, on the host, breaks and restores
# the paths (tests/interop/test_kernel_chaos.py). Runs in the linuxvm guest (busybox ash).
#
# Output (besides the "=== BEGIN <step>" / "=== END <step> rc=<n>" blocks and "INFO k=v ..."
# lines that tests/interop/interop_harness.py parses):
#   CHAOS-PATHS-LIVE uptime=<s>       both paths are live: (the host may look at its target)
#   CHAOS-FIO-START uptime=<s>        fio starts now: the host begins its fault schedule
#   CHAOS-FIO-DONE uptime=<s> rc=<n>  fio has ended
#   PATHS uptime=<s> <ctrl>@<port>=<ctrl state>/<ana state of the nsid 1 path> ...
#                                     the kernel's view of each path, every PATHS_EVERY s
#
# Settings (environment):
#   ADDR          target address (default 10.0.2.2 = the host's 127.0.0.1)
#   NQN           subsystem NQN (default nqn.2026-11.io.nvmeof-emu:demo)
#   PORTS         the two I/O ports, one controller (path) each
#   CONNECT_ARGS  `nvme connect` timers (default "-k 2 -c 1 -l 60": keep-alive 2 s, reconnect
#                 delay 1 s, ctrl-loss-tmo 60 s)
#   RUNTIME       fio runtime in seconds (time_based, default 80)
#   REGION        region per fio job; job N uses [N*REGION, (N+1)*REGION) (default 32M)
#   NUMJOBS       fio jobs (default 2), each iodepth IODEPTH (default 32)
#   LIVE_TIMEOUT  seconds to wait for both paths to be live, before and after fio (default 90)
#   PATHS_EVERY   seconds between PATHS lines (default 1)
set -u
ADDR=${ADDR:-${LINUXVM_HOST_IP:-10.0.2.2}}
NQN=${NQN:-nqn.2026-11.io.nvmeof-emu:demo}
PORTS=${PORTS:-4420 4421}
CONNECT_ARGS=${CONNECT_ARGS:--k 2 -c 1 -l 60}
RUNTIME=${RUNTIME:-80}
REGION=${REGION:-32M}
NUMJOBS=${NUMJOBS:-2}
IODEPTH=${IODEPTH:-32}
LIVE_TIMEOUT=${LIVE_TIMEOUT:-90}
PATHS_EVERY=${PATHS_EVERY:-1}

FAILED=0
begin() { echo "=== BEGIN $1"; }
end() {
  echo "=== END $1 rc=$2"
  [ "$2" = 0 ] || FAILED=1
}
step() {
  _name=$1
  shift
  begin "$_name"
  "$@" 2>&1
  _rc=$?
  end "$_name" "$_rc"
  return "$_rc"
}
show() {
  begin "$1"
  if [ -f "$2" ]; then cat "$2"; _rc=$?; else echo "(no file $2)"; _rc=1; fi
  echo
  end "$1" "$_rc"
}
uptime_s() { cut -d' ' -f1 /proc/uptime; }

# The last things the script does, whatever happened before.
finish() {
  step disconnect nvme disconnect -n "$NQN"
  begin dmesg-nvme
  dmesg | grep -E 'nvme|blk_update|I/O error|Call Trace|WARNING:|BUG:'
  end dmesg-nvme 0
  if [ "$FAILED" != 0 ]; then
    begin dmesg-tail
    dmesg | tail -n 60
    end dmesg-tail 0
  fi
  echo "INFO failed=$FAILED"
  exit "$FAILED"
}

echo "INFO kernel=$(uname -r) multipath=$(cat /sys/module/nvme_core/parameters/multipath)" \
  "io_timeout=$(cat /sys/module/nvme_core/parameters/io_timeout)" \
  "hostnqn=$(cat /etc/nvme/hostnqn)"

for port in $PORTS; do
  # shellcheck disable=SC2086  # CONNECT_ARGS is a list of options
  step "connect@$port" nvme connect -t tcp -a "$ADDR" -s "$port" -n "$NQN" $CONNECT_ARGS
done

# The subsystem, its multipath head for nsid 1 and its controllers (one per port).
SUBSYS= NS1= CTRLS=
i=0
while [ $i -lt 100 ]; do
  for s in /sys/class/nvme-subsystem/nvme-subsys*; do
    [ "$(cat "$s/subsysnqn" 2>/dev/null)" = "$NQN" ] && SUBSYS=$s
  done
  if [ -n "$SUBSYS" ]; then
    for n in "$SUBSYS"/nvme*n*; do
      d=${n##*/}
      case $d in nvme*c*n*) continue ;; esac
      [ -b "/dev/$d" ] && [ "$(cat "/sys/block/$d/nsid" 2>/dev/null)" = 1 ] && NS1=$d
    done
  fi
  [ -n "$NS1" ] && break
  i=$((i + 1))
  sleep 0.1
done
if [ -z "$NS1" ]; then
  echo "no multipath block device for nsid 1 appeared"
  FAILED=1
  finish
fi
# The namespace's identifiers as the kernel sees them (a test may have set the UUID live).
echo "INFO ns1=$NS1 uuid=$(cat "/sys/block/$NS1/uuid" 2>/dev/null || echo -)"
step ns-descs nvme ns-descs "/dev/$NS1"
for c in "$SUBSYS"/nvme*; do
  d=${c##*/}
  case $d in nvme*n*) continue ;; esac
  CTRLS="$CTRLS $d"
done

# path_state CTRL: "<ctrl state>/<ANA state of its nsid 1 path>"
path_state() {
  _ana=-
  for _p in "/sys/class/nvme/$1"/nvme*c*n*; do
    [ "$(cat "$_p/nsid" 2>/dev/null)" = 1 ] && _ana=$(cat "$_p/ana_state" 2>/dev/null)
  done
  echo "$(cat "/sys/class/nvme/$1/state" 2>/dev/null)/${_ana:--}"
}
paths_line() {
  _line="PATHS uptime=$(uptime_s)"
  for _c in $CTRLS; do
    _port=$(sed -n 's/.*trsvcid=\([0-9]*\).*/\1/p' "/sys/class/nvme/$_c/address" 2>/dev/null)
    _line="$_line $_c@$_port=$(path_state "$_c")"
  done
  echo "$_line"
}
# wait_live NAME: until every controller is live with an optimized or non-optimized path.
wait_live() {
  begin "$1"
  _deadline=$(($(cut -d. -f1 /proc/uptime) + LIVE_TIMEOUT))
  _rc=1
  while [ "$(cut -d. -f1 /proc/uptime)" -lt "$_deadline" ]; do
    _ok=1
    for _c in $CTRLS; do
      case $(path_state "$_c") in
        live/optimized | live/non-optimized) ;;
        *) _ok=0 ;;
      esac
    done
    if [ "$_ok" = 1 ]; then
      _rc=0
      break
    fi
    sleep 0.2
  done
  paths_line
  end "$1" "$_rc"
  return "$_rc"
}

echo "INFO subsys=${SUBSYS##*/} ns1=$NS1 ctrls=$(echo $CTRLS | tr ' ' ,)"
if ! wait_live live-before; then
  echo "the paths did not all become live within $LIVE_TIMEOUT s"
  finish
fi
step list-subsys-before nvme list-subsys "/dev/$NS1"
echo "CHAOS-PATHS-LIVE uptime=$(uptime_s)"

# The kernel's view of the paths while fio runs.
(
  while :; do
    paths_line
    sleep "$PATHS_EVERY"
  done
) &
SAMPLER=$!

# fio verify on the multipath head: NUMJOBS jobs on disjoint regions (offset_increment =
# size), each verifying only what it wrote itself; fio 3.33 pitfalls as in kernel_host.sh:
# randrepeat=1 (each pass re-seeded consistently), verify_backlog (inline verification of
# time_based writes), verify_fatal=1 (the first bad block ends the job with an error).
# SIGPIPE is ignored for fio: Linux 6.1's NVMe/TCP host may send a queued request straight
# from the submitting task (nvme_tcp_queue_request -> nvme_tcp_try_send, io_uring submits in
# fio's own context) on a socket the target has just closed, and its sends do not pass
# MSG_NOSIGNAL, so sk_stream_error() raises SIGPIPE in fio: seen in CI when the target removes
# a subsystem under I/O (fio killed, then a double free in its teardown). Ignored, the send
# fails with EPIPE, which the host handles as the connection error it is (error recovery).
# force_async=1: every request is issued from io_uring's worker threads, blocking, so its bios
# never carry REQ_NOWAIT. Issued inline (the default), a bio is REQ_NOWAIT; when the multipath
# head requeues it during a path's reconnect and resubmits it from nvme_requeue_work while that
# path's queue is frozen, __bio_queue_enter (block/blk-core.c) fails it with BLK_STS_AGAIN, and
# io_rw_should_reissue (io_uring/rw.c) will not reissue from a kworker: fio gets -EAGAIN for a
# write (seen once in a 30-minute soak on Linux 6.1). Nothing reaches the target: the host ends
# the I/O itself, as it would against nvmet.
trap '' PIPE
echo "CHAOS-FIO-START uptime=$(uptime_s)"
fio --name=chaos --filename="/dev/$NS1" --ioengine=io_uring --force_async=1 --direct=1 \
  --rw=randrw --bs=4k --iodepth="$IODEPTH" --numjobs="$NUMJOBS" \
  --size="$REGION" --offset_increment="$REGION" \
  --runtime="$RUNTIME" --time_based --randrepeat=1 \
  --verify=crc32c --do_verify=1 --verify_fatal=1 --verify_backlog=512 \
  --eta=never --output-format=json --output=/tmp/fio.json >/tmp/fio.out 2>&1
FIO_RC=$?
trap - PIPE
echo "CHAOS-FIO-DONE uptime=$(uptime_s) rc=$FIO_RC"
kill "$SAMPLER" 2>/dev/null
wait "$SAMPLER" 2>/dev/null

begin fio
cat /tmp/fio.out
end fio "$FIO_RC"
show fio-json /tmp/fio.json

wait_live live-after
step list-subsys-after nvme list-subsys "/dev/$NS1"
finish
