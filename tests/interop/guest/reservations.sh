#!/bin/sh
# reservations.sh: NVMe reservations of nvmeof-emu driven by the guest kernel's NVMe/TCP host
# and nvme-cli's resv-* commands, as two hosts (tests/interop/test_kernel_reservations.py).
# Runs in the linuxvm guest (busybox ash), booted with -k nvme_core.multipath=N so that each
# controller has a block device of its own and each command goes out as the chosen host.
#
# Host A (HOSTNQN_A/HOSTID_A) connects through PORT_A, host B through PORT_B. Every command is
# one step ("=== BEGIN <step>" / output / "=== END <step> rc=<n>"); the test on the host knows
# what each step must answer. The script does not judge, it only runs (a failed command does
# not stop it). Markers for the test:
#   RESV-READY uptime=<s>                  both hosts connected, devices found
#   RESV-PORTKILL uptime=<s> ctrl=<nvmeX>  kill port A now (the script waits for host A's
#                                          controller to leave "live", then to be live again)
#   RESV-PATH-BACK uptime=<s> rc=<n>       host A's controller is live again (rc 0) or not
#   RESV-DONE uptime=<s>                   all steps ran
#
# Settings (environment):
#   ADDR, NQN, PORT_A, PORT_B, HOSTNQN_A, HOSTID_A, HOSTNQN_B, HOSTID_B
#   KEY_A, KEY_B   registration keys (default 0xa1, 0xb2)
#   CONNECT_ARGS   `nvme connect` timers (default "-k 2 -c 1 -l 60")
#   DOWN_TIMEOUT   seconds to wait for host A's controller to leave "live" (default 30)
#   LIVE_TIMEOUT   seconds to wait for it to be live again (default 60)
#   SECTIONS       nvme-cli (default): the nvme-cli resv-* steps and the reset / path kill;
#                  blkpr: the kernel's PR ioctls through util-linux's blkpr instead (needs
#                  LINUXVM_EXTRA_PACKAGES=util-linux-extra, 2.39 or later: trixie)
set -u
ADDR=${ADDR:-${LINUXVM_HOST_IP:-10.0.2.2}}
KEY_A=${KEY_A:-0xa1}
KEY_B=${KEY_B:-0xb2}
CONNECT_ARGS=${CONNECT_ARGS:--k 2 -c 1 -l 60}
DOWN_TIMEOUT=${DOWN_TIMEOUT:-30}
LIVE_TIMEOUT=${LIVE_TIMEOUT:-60}
SECTIONS=${SECTIONS:-nvme-cli}

uptime_s() { cut -d' ' -f1 /proc/uptime; }
now() { cut -d. -f1 /proc/uptime; }
step() {
  _name=$1
  shift
  echo "=== BEGIN $_name"
  "$@" 2>&1
  _rc=$?
  echo "=== END $_name rc=$_rc"
  return "$_rc"
}

finish() {
  step disconnect nvme disconnect -n "$NQN"
  echo "=== BEGIN dmesg-nvme"
  dmesg | grep -E 'nvme|blk_update|I/O error|critical|Call Trace|WARNING:|BUG:'
  echo "=== END dmesg-nvme rc=0"
  echo "RESV-DONE uptime=$(uptime_s)"
  exit "$1"
}

echo "INFO kernel=$(uname -r) multipath=$(cat /sys/module/nvme_core/parameters/multipath)" \
  "nvme_cli=$(nvme version | sed -n 's/^nvme version \([^ ]*\).*/\1/p')"

# shellcheck disable=SC2086  # CONNECT_ARGS is a list of options
step connect-a nvme connect -t tcp -a "$ADDR" -s "$PORT_A" -n "$NQN" \
  --hostnqn="$HOSTNQN_A" --hostid="$HOSTID_A" $CONNECT_ARGS
# shellcheck disable=SC2086
step connect-b nvme connect -t tcp -a "$ADDR" -s "$PORT_B" -n "$NQN" \
  --hostnqn="$HOSTNQN_B" --hostid="$HOSTID_B" $CONNECT_ARGS

# Each host's controller (by its host NQN) and that controller's own nsid 1 block device.
CA= CB= DA= DB=
i=0
while [ $i -lt 100 ]; do
  for c in /sys/class/nvme/nvme*; do
    [ "$(cat "$c/subsysnqn" 2>/dev/null)" = "$NQN" ] || continue
    for n in "$c"/nvme*n*; do
      [ "$(cat "$n/nsid" 2>/dev/null)" = 1 ] && [ -b "/dev/${n##*/}" ] || continue
      case $(cat "$c/hostnqn") in
        "$HOSTNQN_A") CA=${c##*/} DA=${n##*/} ;;
        "$HOSTNQN_B") CB=${c##*/} DB=${n##*/} ;;
      esac
    done
  done
  [ -n "$DA" ] && [ -n "$DB" ] && break
  i=$((i + 1))
  sleep 0.1
done
echo "INFO ctrl_a=${CA:--} dev_a=${DA:--} ctrl_b=${CB:--} dev_b=${DB:--}"
if [ -z "$DA" ] || [ -z "$DB" ]; then
  echo "no nsid 1 block device per host appeared"
  finish 1
fi
for c in "$CA" "$CB"; do
  echo "INFO ctrl=$c cntlid=$(cat "/sys/class/nvme/$c/cntlid") hostid=$(cat "/sys/class/nvme/$c/hostid")" \
    "address=$(cat "/sys/class/nvme/$c/address" | tr -d ' ')"
done
# What the controller and namespace say about reservations (ONCS bit 5, RESCAP) and Host IDs
# (CTRATT bit 0: 128-bit Host Identifier).
echo "INFO ctratt=$(nvme id-ctrl "/dev/$CA" | sed -n 's/^ctratt *: *//p')" \
  "oncs=$(nvme id-ctrl "/dev/$CA" | sed -n 's/^oncs *: *//p')" \
  "rescap=$(nvme id-ns "/dev/$DA" | sed -n 's/^rescap *: *//p')"
echo "RESV-READY uptime=$(uptime_s)"

dev() { if [ "$1" = A ]; then echo "/dev/$DA"; else echo "/dev/$DB"; fi; }
key() { if [ "$1" = A ]; then echo "$KEY_A"; else echo "$KEY_B"; fi; }
dd if=/dev/urandom of=/tmp/blk bs=4096 count=1 2>/dev/null

# register NAME HOST RREGA NRKEY [CRKEY|iekey]
register() {
  _extra=
  case ${5:-} in
    iekey) _extra="--iekey --crkey=0xdead" ;;
    ?*) _extra="--crkey=$5" ;;
  esac
  # shellcheck disable=SC2086
  step "$1" nvme resv-register "$(dev "$2")" -n 1 --rrega="$3" --nrkey="$4" $_extra
}
# acquire NAME HOST RACQA RTYPE [PRKEY]
acquire() {
  step "$1" nvme resv-acquire "$(dev "$2")" -n 1 --crkey="$(key "$2")" --racqa="$3" \
    --rtype="$4" --prkey="${5:-0}"
}
# release NAME HOST RRELA RTYPE [CRKEY]
release() {
  step "$1" nvme resv-release "$(dev "$2")" -n 1 --crkey="${5:-$(key "$2")}" --rrela="$3" \
    --rtype="$4"
}
report() { step "$1" nvme resv-report "$(dev "$2")" -n 1 --eds -o json; }
# 4 KiB at LBA 0 (8 x 512 B) through nvme-cli's passthrough, or dd through the block layer
wr() { step "$1" nvme write "$(dev "$2")" -n 1 -s 0 -c 7 -z 4096 -d /tmp/blk; }
rd() { step "$1" nvme read "$(dev "$2")" -n 1 -s 0 -c 7 -z 4096 -d /tmp/rd; }
ddwrite() { step "$1" dd if=/tmp/blk of="$(dev "$2")" bs=4096 count=1 oflag=direct; }
ddread() { step "$1" dd if="$(dev "$2")" of=/tmp/rd bs=4096 count=1 iflag=direct; }

# wait_state CTRL live|not-live SECONDS: poll the controller's state (every 0.1 s)
wait_state() {
  _deadline=$(($(now) + $3))
  while [ "$(now)" -lt "$_deadline" ]; do
    _s=$(cat "/sys/class/nvme/$1/state" 2>/dev/null)
    case $2:$_s in
      live:live) return 0 ;;
      not-live:live) ;;
      not-live:*) return 0 ;;
    esac
    sleep 0.1
  done
  return 1
}

# -- SECTIONS=blkpr: the kernel's own reservation code instead of nvme-cli's passthrough: the
# block layer's PR ioctls (pr_ops, drivers/nvme/host/pr.c) through util-linux's blkpr. Its
# preempt sends CRKEY = --oldkey (the caller's own key), PRKEY = --key (the key to preempt).
if [ "$SECTIONS" = blkpr ]; then
  pr() {
    _n=$1 _h=$2
    shift 2
    step "$_n" blkpr "$@" "$(dev "$_h")"
  }
  pr pr-reg-a A -c register -k "$KEY_A"
  pr pr-reg-b B -c register -k "$KEY_B"
  report pr-report-registered A
  pr pr-reserve-a A -c reserve -k "$KEY_A" -t exclusive-access
  pr pr-reserve-b B -c reserve -k "$KEY_B" -t exclusive-access
  ddwrite pr-b-ddwrite B
  ddread pr-b-ddread B
  pr pr-release-a-wrongtype A -c release -k "$KEY_A" -t write-exclusive
  report pr-report-reserved A
  pr pr-preempt-b B -c preempt -K "$KEY_B" -k "$KEY_A" -t write-exclusive
  report pr-report-preempted B
  ddwrite pr-a-ddwrite A
  pr pr-reg-a-again A -c register -k "$KEY_A"
  pr pr-preempt-abort-a A -c preempt-abort -K "$KEY_A" -k "$KEY_B" -t exclusive-access
  report pr-report-aborted A
  pr pr-replace-a A -c register -K "$KEY_A" -k 0xa9
  pr pr-release-a A -c release -k 0xa9 -t exclusive-access
  pr pr-reg-b-again B -c register -k "$KEY_B"
  report pr-report-released A
  pr pr-clear-a A -c clear -k 0xa9
  report pr-report-cleared A
  ddwrite pr-b-ddwrite-cleared B
  finish 0
fi

# -- Reservation Register: register, again (same key / another key), replace, unregister -----
register reg-a A 0 "$KEY_A"
register reg-a-same A 0 "$KEY_A"
register reg-a-other A 0 0xa3
register reg-b B 0 "$KEY_B"
step report-noeds nvme resv-report "/dev/$DA" -n 1
report report-registered A
register replace-a A 2 0xa4 "$KEY_A"
register replace-a-stale A 2 0xa5 "$KEY_A"
register replace-a-iekey A 2 "$KEY_A" iekey
register unreg-b-wrong B 1 0 0xbb
register unreg-b B 1 0 "$KEY_B"
report report-unregistered A
register reg-b-again B 0 "$KEY_B"

# -- Reservation Acquire of each type; access of the holder and of B, registered or not ------
for t in 1 2 3 4 5 6; do
  acquire "acq-a-t$t" A 0 "$t"
  acquire "acq-b-t$t" B 0 "$t"
  report "report-t$t" B
  wr "a-write-t$t" A
  rd "a-read-t$t" A
  wr "b-write-reg-t$t" B
  rd "b-read-reg-t$t" B
  if [ "$t" = 2 ]; then
    ddwrite "b-ddwrite-reg-t$t" B
    ddread "b-ddread-reg-t$t" B
  fi
  register "unreg-b-t$t" B 1 0 "$KEY_B"
  wr "b-write-unreg-t$t" B
  rd "b-read-unreg-t$t" B
  register "reg-b-t$t" B 0 "$KEY_B"
  release "rel-a-wrongtype-t$t" A 0 $((t % 6 + 1))
  release "rel-a-t$t" A 0 "$t"
  report "report-released-t$t" A
done

# -- Preempt: B takes A's reservation by A's key; A's registration is gone ------------------
acquire pre-acq-a A 0 1
acquire pre-b B 1 1 "$KEY_A"
report report-preempted B
wr pre-a-write A
rd pre-a-read A
acquire pre-a-acq A 0 1
register pre-reg-a A 0 "$KEY_A"
# -- Preempt and Abort: A takes it back as Exclusive Access --------------------------------
acquire abort-a A 2 2 "$KEY_B"
report report-aborted A
wr abort-b-write B
rd abort-b-read B
# -- Clear -------------------------------------------------------------------------------------
register clear-reg-b B 0 "$KEY_B"
release clear-b-wrong B 1 0 0xbb
release clear-b B 1 0
report report-cleared A
wr clear-b-write B

# -- The reservation survives a controller reset and a killed path -------------------------
register hold-reg-a A 0 "$KEY_A"
register hold-reg-b B 0 "$KEY_B"
acquire hold-acq-a A 0 2
report report-held A
echo "INFO phase=reset ctrl=$CA cntlid=$(cat "/sys/class/nvme/$CA/cntlid")"
step reset-a nvme reset "/dev/$CA"
step reset-a-live wait_state "$CA" live "$LIVE_TIMEOUT"
echo "INFO phase=after-reset ctrl=$CA cntlid=$(cat "/sys/class/nvme/$CA/cntlid")" \
  "state=$(cat "/sys/class/nvme/$CA/state")"
report report-reset A
wr reset-b-write B
rd reset-b-read B
wr reset-a-write A

echo "RESV-PORTKILL uptime=$(uptime_s) ctrl=$CA"
step kill-a-down wait_state "$CA" not-live "$DOWN_TIMEOUT"
echo "INFO phase=down ctrl=$CA state=$(cat "/sys/class/nvme/$CA/state") uptime=$(uptime_s)"
step kill-a-live wait_state "$CA" live "$LIVE_TIMEOUT"
echo "RESV-PATH-BACK uptime=$(uptime_s) rc=$?"
echo "INFO phase=after-kill ctrl=$CA cntlid=$(cat "/sys/class/nvme/$CA/cntlid")" \
  "state=$(cat "/sys/class/nvme/$CA/state") ctrl_b_state=$(cat "/sys/class/nvme/$CB/state")"
report report-killed A
wr kill-b-write B
rd kill-b-read B
wr kill-a-write A
rd kill-a-read A

finish 0
