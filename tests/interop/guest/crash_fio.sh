#!/bin/sh
# crash_fio.sh: the power-cut method against nvmeof-emu, with the target's process as the thing
# that loses power (tests/interop/test_kernel_crash.py). Runs in the linuxvm guest (busybox ash).
#
# One path (one port) to a file-backed namespace. Each cycle i:
#   1. fio writes (random 4 KiB, crc32c verify headers, --verify_state_save) in its own slice
#      of the namespace, [(i-1)*SLICE, i*SLICE), with its own --randseed, in the background:
#      "CRASH-START-i";
#   2. the host SIGKILLs the target at a random moment and starts it again on the same file and
#      port; this script sees the controller leave "live" ("CRASH-DOWN-i") and come back
#      ("CRASH-LIVE-i"): meanwhile the kernel keeps fio's I/O queued (native multipath, a long
#      ctrl-loss-tmo) and re-sends what was in flight, so fio just stalls;
#   3. after POST more seconds of writes on the restarted target, fio is stopped with SIGTERM:
#      it completes what is in flight and saves its verify state on the way out;
#   4. fio --verify_only --verify_state_load=1 (the same job) reads back every write that run
#      saw complete, in issue order: "CRASH-VERIFY-i rc=<n>".
# With CONTROL=1, afterwards, a negative control: "CRASH-CONTROL offset=<o>" names the first
# block the last cycle wrote (from its iolog); the host stops the target, puts that block back
# to what it held before the last cycle, zeros (a lost acknowledged write), and starts it again;
# the last cycle's verify runs again and must fail there: "CRASH-CONTROL-VERIFY rc=<n>".
#
# Why a slice per cycle, never written before: for a write-only job fio 3.33 cannot tell an
# older fio block at the same offset from the one it expects. verify.c takes the expected
# rand_seed from the block's own header unless the job both reads and writes (!td_rw), and
# verify_only skips the numberio check; the header's offset and crc32c match, so a lost write
# over a block of an earlier cycle would verify clean (a first version of this test, whose
# control put back an earlier cycle's block, passed that way; fio 3.39's verify.c is the same). In
# a fresh slice a lost write leaves zeros: "bad magic header 0".
#
# Why fio rides the outage instead of dying on an I/O error: with fast_io_fail the run would end
# on EIO and fio would save its state there too (thread_main saves it on every exit), but the
# verified set would then only be "acknowledged before the kill". Riding it, the set is every
# write acknowledged before the kill, the in-flight ones the kernel re-sent to the new process,
# and those written after; randommap (each block once per pass, no loops) keeps a later write
# from hiding a lost earlier one.
#
# Output: "=== BEGIN/END <step>" blocks and "INFO k=v" lines (interop_harness.GuestRun), the
# markers above, and per cycle the steps write-i / write-i-json / verify-i / verify-i-json
# (fio's JSON on one line).
#
# Settings (environment):
#   ADDR          target address (default 10.0.2.2 = the host's 127.0.0.1)
#   NQN           subsystem NQN
#   PORT          the I/O port
#   CONNECT_ARGS  `nvme connect` timers (default "-k 2 -c 1 -l 300")
#   SEEDS         one fio --randseed per cycle (their number is the number of cycles)
#   SLICE_MIB     MiB of the namespace per cycle (default 128; a cycle must not fill it)
#   RATE_IOPS     fio's write rate cap (default 1000: under KVM a cycle would fill its slice)
#   BS, IODEPTH   fio block size (default 4k) and queue depth (default 16)
#   POST          seconds of writes after the controller is live again (default 2)
#   DOWN_TIMEOUT  seconds from CRASH-START until the controller must have left live (default 60)
#   LIVE_TIMEOUT  seconds until it must be live again (default 90)
#   CONTROL       1 = the negative control after the last cycle (default 1)
set -u
ADDR=${ADDR:-${LINUXVM_HOST_IP:-10.0.2.2}}
NQN=${NQN:?NQN}
PORT=${PORT:?PORT}
CONNECT_ARGS=${CONNECT_ARGS:--k 2 -c 1 -l 300}
SEEDS=${SEEDS:-1 2 3}
SLICE_MIB=${SLICE_MIB:-128}
RATE_IOPS=${RATE_IOPS:-1000}
BS=${BS:-4k}
IODEPTH=${IODEPTH:-16}
POST=${POST:-2}
DOWN_TIMEOUT=${DOWN_TIMEOUT:-60}
LIVE_TIMEOUT=${LIVE_TIMEOUT:-90}
CONTROL=${CONTROL:-1}
WORK=/tmp/crash # fio's --aux-path: local-crash-0-verify.state lands here

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
# show NAME FILE: a file between markers, newlines removed (fio's JSON on one line).
show_json() {
  begin "$1"
  if [ -f "$2" ]; then tr -d '\n' <"$2"; echo; else echo "(no file $2)"; fi
  echo "=== END $1 rc=0"
}
# show_out NAME FILE RC: fio's own output (errors, verify failures) with fio's exit status.
show_out() {
  begin "$1"
  cat "$2" 2>/dev/null
  echo "=== END $1 rc=$3"
}
uptime_s() { cut -d' ' -f1 /proc/uptime; }
now_ds() { # uptime in tenths of a second
  _u=$(cut -d' ' -f1 /proc/uptime)
  echo $((${_u%.*} * 10 + $(echo "${_u#*.}" | cut -c1)))
}

finish() {
  step disconnect nvme disconnect -n "$NQN"
  begin dmesg-nvme
  dmesg | grep -E 'nvme|blk_update|I/O error|Call Trace|WARNING:|BUG:'
  end dmesg-nvme 0
  echo "INFO failed=$FAILED"
  exit "$FAILED"
}

echo "INFO kernel=$(uname -r) multipath=$(cat /sys/module/nvme_core/parameters/multipath)" \
  "fio=$(fio --version)"
mkdir -p "$WORK"

# shellcheck disable=SC2086  # CONNECT_ARGS is a list of options
step connect nvme connect -t tcp -a "$ADDR" -s "$PORT" -n "$NQN" $CONNECT_ARGS || finish

# The subsystem, its controller and the block device of nsid 1 (the multipath head).
SUBSYS= NS= CTRL=
i=0
while [ $i -lt 100 ]; do
  for s in /sys/class/nvme-subsystem/nvme-subsys*; do
    [ "$(cat "$s/subsysnqn" 2>/dev/null)" = "$NQN" ] && SUBSYS=$s
  done
  if [ -n "$SUBSYS" ]; then
    for n in "$SUBSYS"/nvme*; do
      d=${n##*/}
      case $d in
        nvme*c*n*) ;;
        nvme*n*) [ -b "/dev/$d" ] && [ "$(cat "/sys/block/$d/nsid" 2>/dev/null)" = 1 ] && NS=$d ;;
        nvme*) CTRL=$d ;;
      esac
    done
  fi
  [ -n "$NS" ] && [ -n "$CTRL" ] && break
  i=$((i + 1))
  sleep 0.1
done
if [ -z "$NS" ] || [ -z "$CTRL" ]; then
  echo "no block device or controller for nsid 1 appeared"
  FAILED=1
  finish
fi
state() { cat "/sys/class/nvme/$CTRL/state" 2>/dev/null || echo gone; }
echo "INFO ctrl=$CTRL ns=$NS state=$(state)"

# wait_state WANT|!WANT LIMIT: until the controller's state is (not) WANT; 1 on timeout.
wait_state() {
  _deadline=$(($(now_ds) + $2 * 10))
  while [ "$(now_ds)" -lt "$_deadline" ]; do
    case $1 in
      !*) [ "$(state)" != "${1#!}" ] && return 0 ;;
      *) [ "$(state)" = "$1" ] && return 0 ;;
    esac
    sleep 0.05
  done
  return 1
}

# The one job definition; the write run adds --verify_state_save (and --do_verify=0: it is
# stopped by SIGTERM anyway, and a run that ends on its own must not verify here), the verify
# run --verify_only --verify_state_load=1 (fio 3.33 HOWTO: verify_only replays the write
# workload's offsets and seeds, which needs the same job and no time_based) and
# --verify_state_save=0: verify_state_save defaults to 1, and a verify-only run of a write job
# saves its own state on exit too (backend.c thread_main), numberio being every write of its
# dry run (the whole region): the control's second pass would then verify blocks never written.
# --randrepeat=0 --randseed: fio 3.33 seeds the offsets with a constant while randrepeat=1,
# whatever --randseed says (init.c td_fill_rand_seeds_internal); with 0 and an explicit seed
# every generator follows the seed, so the verify run replays the write run exactly.
job() { # job CYCLE SEED
  echo --name=crash --filename="/dev/$NS" --ioengine=io_uring --direct=1 --rw=randwrite \
    --bs="$BS" --iodepth="$IODEPTH" --offset="$((($1 - 1) * SLICE_MIB))M" \
    --size="${SLICE_MIB}M" --randrepeat=0 --randseed="$2" --verify=crc32c \
    --aux-path="$WORK" --eta=never --output-format=json
}

# verify NAME CYCLE SEED: fio --verify_only of the state saved last.
verify() {
  # shellcheck disable=SC2046  # job prints a list of options
  fio $(job "$2" "$3") --verify_only --verify_state_load=1 --verify_state_save=0 \
    --output="$WORK/$1.json" \
    >"$WORK/$1.out" 2>&1
  _vrc=$?
  show_out "$1" "$WORK/$1.out" "$_vrc"
  show_json "$1-json" "$WORK/$1.json"
  return "$_vrc"
}

# SIGPIPE is ignored for fio, as in chaos_fio.sh: Linux 6.1's host may send from fio's own
# context (io_uring) on a socket the dead target left, without MSG_NOSIGNAL.
trap '' PIPE
CYCLE=0
LAST_SEED=
for SEED in $SEEDS; do
  CYCLE=$((CYCLE + 1))
  LAST_SEED=$SEED
  rm -f "$WORK"/local-crash-*-verify.state
  [ "$(state)" = live ] || echo "controller not live before cycle $CYCLE: $(state)"
  # shellcheck disable=SC2046
  fio $(job "$CYCLE" "$SEED") --verify_state_save=1 --do_verify=0 --rate_iops="$RATE_IOPS" \
    --write_iolog="$WORK/write-$CYCLE.iolog" --output="$WORK/write-$CYCLE.json" \
    >"$WORK/write-$CYCLE.out" 2>&1 &
  FIO=$!
  echo "CRASH-START-$CYCLE uptime=$(uptime_s) seed=$SEED"
  # The host kills the target: the controller leaves live. fio must still be writing then.
  DOWN=ok
  _deadline=$(($(now_ds) + DOWN_TIMEOUT * 10))
  while [ "$(state)" = live ]; do
    if ! kill -0 "$FIO" 2>/dev/null; then
      DOWN=fio-ended
      break
    fi
    if [ "$(now_ds)" -ge "$_deadline" ]; then
      DOWN=timeout
      break
    fi
    sleep 0.05
  done
  echo "CRASH-DOWN-$CYCLE uptime=$(uptime_s) state=$(state) result=$DOWN"
  if [ "$DOWN" = ok ] && wait_state live "$LIVE_TIMEOUT"; then
    echo "CRASH-LIVE-$CYCLE uptime=$(uptime_s) rc=0"
    sleep "$POST"
  else
    echo "CRASH-LIVE-$CYCLE uptime=$(uptime_s) rc=1 state=$(state)"
    FAILED=1
  fi
  FIO_ALIVE=1
  kill -0 "$FIO" 2>/dev/null || FIO_ALIVE=0
  kill -TERM "$FIO" 2>/dev/null
  wait "$FIO"
  WRC=$?
  # 128: fio's exit status after a terminating signal (backend.c sig_int), the state saved.
  echo "INFO cycle=$CYCLE write_rc=$WRC fio_alive_at_stop=$FIO_ALIVE" \
    "state_file=$(ls "$WORK"/local-crash-*-verify.state 2>/dev/null | tr '\n' ,)"
  show_out "write-$CYCLE" "$WORK/write-$CYCLE.out" 0
  show_json "write-$CYCLE-json" "$WORK/write-$CYCLE.json"
  verify "verify-$CYCLE" "$CYCLE" "$SEED"
  [ "$_vrc" = 0 ] || FAILED=1
  echo "CRASH-VERIFY-$CYCLE uptime=$(uptime_s) rc=$_vrc"
  # keep the last cycle's iolog (the control reads it), drop the others (tmpfs)
  [ "$CYCLE" -gt 1 ] && rm -f "$WORK/write-$((CYCLE - 1)).iolog"
done

if [ "$CONTROL" = 1 ] && [ -n "$LAST_SEED" ]; then
  # fio's iolog (version 2 or 3): "[time] <file> write <offset> <length>", in issue order.
  OFFSET=$(awk '$0 ~ / write / { for (i = 1; i < NF; i++) if ($i == "write") { print $(i + 1); exit } }' \
    "$WORK/write-$CYCLE.iolog")
  begin control-iolog
  head -n 5 "$WORK/write-$CYCLE.iolog"
  end control-iolog 0
  echo "CRASH-CONTROL offset=${OFFSET:-none} uptime=$(uptime_s)"
  if [ -n "$OFFSET" ] && wait_state '!live' "$DOWN_TIMEOUT" && wait_state live "$LIVE_TIMEOUT"; then
    verify control-verify "$CYCLE" "$LAST_SEED"
    echo "CRASH-CONTROL-VERIFY uptime=$(uptime_s) rc=$_vrc"
  else
    echo "CRASH-CONTROL-VERIFY uptime=$(uptime_s) rc=none state=$(state)"
    FAILED=1
  fi
  # A failed verify is what the control expects; a clean one means the check is not real.
  [ "${_vrc:-1}" = 0 ] && FAILED=1
fi
trap - PIPE
finish
