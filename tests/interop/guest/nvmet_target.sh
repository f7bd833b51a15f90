#!/bin/sh
# nvmet_target.sh: the guest kernel's NVMe/TCP target (nvmet), with a control channel so a
# test on the host can change ANA states and unlink/relink ports while I/O runs.
# Runs in the linuxvm guest (busybox ash), started by tests/interop/test_kernel_target.py:
#   ../shared/linuxvm/run -p H1:4420 -p H2:4421 -p HC:9998 -e PORTS="4420 4421" nvmet_target.sh
#
# Setup (like ../shared/linuxvm/examples/nvmet-target.sh, NSCOUNT 1): one subsystem NQN that
# allows any host, one namespace (nsid 1, ANA group 1) backed by a memory-backed null_blk,
# one nvmet port per entry of PORTS (port ids 1, 2, ... in that order). ANA group 1 is
# optimized on port 1 and non-optimized on the others. Then it prints
#   NVMET-READY nqn=<NQN> ports=<p1,p2> ctl=<CTL_PORT>
# and serves until "stop" arrives on the control port or TIMEOUT seconds pass, then prints
# the nvme/nvmet kernel log between "=== BEGIN dmesg" / "=== END dmesg rc=0" and removes
# the target.
#
# Control channel: guest TCP port CTL_PORT (busybox `nc -ll -e`, one command per
# connection). Send one line, read the reply until the connection closes; the reply's first
# line is "OK ..." or "ERR ...". PORT is a port id (1, 2, ...) or its TCP port (4420, ...).
#   ana PORT STATE   echo STATE > ports/ID/ana_groups/1/ana_state
#                    (optimized | non-optimized | inaccessible | persistent-loss | change)
#   unlink PORT      rm ports/ID/subsystems/NQN (nvmet drops that port's controllers and,
#                    with no subsystem left on it, stops listening)
#   link PORT        ln -s the subsystem into ports/ID/subsystems again (listens again)
#   state            one line per port: "port ID TRSVCID linked=0|1 ana=STATE"
#   dmesg            the last nvme/nvmet kernel log lines
#   blocked          the load and the kernel stacks of blocked tasks (SysRq w), for a hang
#   stop             tear down and exit
#
# Settings (environment; `run -e NAME=VALUE`):
#   NQN       subsystem NQN (default nqn.2014-08.org.nvmexpress:linuxvm-test)
#   PORTS     TCP ports to listen on (default "4420 4421")
#   CTL_PORT  control port (default 9998)
#   SIZE_MB   namespace size in MiB (default 256)
#   BS        logical block size (default 512)
#   TIMEOUT   seconds to serve at most (default 240)
set -u
NQN=${NQN:-nqn.2014-08.org.nvmexpress:linuxvm-test}
PORTS=${PORTS:-4420 4421}
CTL_PORT=${CTL_PORT:-9998}
SIZE_MB=${SIZE_MB:-256}
BS=${BS:-512}
TIMEOUT=${TIMEOUT:-240}
CFG=/sys/kernel/config/nvmet
NULLB=/sys/kernel/config/nullb
S=$CFG/subsystems/$NQN
STOP_FLAG=/tmp/nvmet-stop

say() { echo "nvmet-target: $*"; }

# port_id ARG: the nvmet port id for a port id or a TCP port number; empty if unknown.
port_id() {
  for p in "$CFG"/ports/*; do
    [ -d "$p" ] || continue
    id=${p##*/}
    if [ "$1" = "$id" ] || [ "$1" = "$(cat "$p/addr_trsvcid")" ]; then
      echo "$id"
      return
    fi
  done
}

# One control command (stdin/stdout are the control connection).
control() {
  read -r cmd arg1 arg2 || { echo "ERR empty"; return; }
  case $cmd in
    ana|unlink|link)
      id=$(port_id "${arg1:-}")
      [ -n "$id" ] || { echo "ERR unknown port ${arg1:-}"; return; }
      P=$CFG/ports/$id ;;
  esac
  case $cmd in
    ana)
      case ${arg2:-} in
        optimized|non-optimized|inaccessible|persistent-loss|change) ;;
        *) echo "ERR bad ANA state ${arg2:-}"; return ;;
      esac
      if out=$(echo "$arg2" > "$P/ana_groups/1/ana_state" 2>&1); then
        echo "OK port $id ana $(cat "$P/ana_groups/1/ana_state")"
      else
        echo "ERR $out"
      fi ;;
    unlink)
      if out=$(rm "$P/subsystems/$NQN" 2>&1); then echo "OK port $id unlinked"
      else echo "ERR $out"; fi ;;
    link)
      if out=$(ln -s "$S" "$P/subsystems/$NQN" 2>&1); then echo "OK port $id linked"
      else echo "ERR $out"; fi ;;
    state)
      echo "OK"
      for p in "$CFG"/ports/*; do
        linked=0
        [ -e "$p/subsystems/$NQN" ] && linked=1
        echo "port ${p##*/} $(cat "$p/addr_trsvcid") linked=$linked" \
          "ana=$(cat "$p/ana_groups/1/ana_state")"
      done ;;
    dmesg)
      echo "OK"
      dmesg | grep -i nvme | tail -n 60 ;;
    blocked)
      # What hangs: every task in uninterruptible sleep with its kernel stack (SysRq w), and
      # the load, so a control command with no reply can be told from a starved guest.
      echo "OK $(cat /proc/loadavg)"
      echo w > /proc/sysrq-trigger
      sleep 1
      dmesg | tail -n 120 ;;
    stop)
      touch "$STOP_FLAG"
      echo "OK stopping" ;;
    *)
      echo "ERR unknown command $cmd" ;;
  esac
}

if [ "${1:-}" = "--control" ]; then
  control
  exit 0
fi

setup() {
  set -e
  mkdir "$S"
  echo 1 > "$S/attr_allow_any_host"
  echo "linuxvm" > "$S/attr_model" 2>/dev/null || true
  pid=0
  for port in $PORTS; do
    pid=$((pid + 1))
    P=$CFG/ports/$pid
    mkdir "$P"
    echo tcp > "$P/addr_trtype"
    echo ipv4 > "$P/addr_adrfam"
    echo 0.0.0.0 > "$P/addr_traddr"
    echo "$port" > "$P/addr_trsvcid"
    if [ $pid = 1 ]; then st=optimized; else st=non-optimized; fi
    echo $st > "$P/ana_groups/1/ana_state"
  done
  d=$NULLB/linuxvm1
  mkdir "$d"
  echo "$SIZE_MB" > "$d/size"
  echo "$BS" > "$d/blocksize"
  echo 1 > "$d/memory_backed"
  echo 1 > "$d/power"
  if [ -b /dev/linuxvm1 ]; then dev=/dev/linuxvm1; else dev="/dev/nullb$(cat "$d/index")"; fi
  N=$S/namespaces/1
  mkdir "$N"
  printf %s "$dev" > "$N/device_path"
  echo 1 > "$N/ana_grpid"
  echo 1 > "$N/enable"
  say "namespace 1: $dev (${SIZE_MB} MiB, ${BS}-byte blocks, ANA group 1)"
  pid=0
  for port in $PORTS; do
    pid=$((pid + 1))
    ln -s "$S" "$CFG/ports/$pid/subsystems/$NQN"
    say "port $pid: tcp 0.0.0.0:$port ($(cat "$CFG/ports/$pid/ana_groups/1/ana_state"))"
  done
  set +e
}

teardown() {
  for p in "$CFG"/ports/*; do
    rm -f "$p/subsystems/$NQN"
    rmdir "$p"
  done
  echo 0 > "$S/namespaces/1/enable"
  rmdir "$S/namespaces/1"
  rmdir "$S"
  d=$NULLB/linuxvm1
  [ -d "$d" ] && { echo 0 > "$d/power"; rmdir "$d"; }
  say "target removed"
}

rm -f "$STOP_FLAG"
setup
# A persistent control server: nc forks `sh $0 --control` per connection.
nc -ll -p "$CTL_PORT" -e sh "$0" --control &
NC_PID=$!
waited=0
until netstat -ltn | grep -q ":$CTL_PORT "; do
  sleep 0.1
  waited=$((waited + 1))
  [ $waited -lt 100 ] || { say "control port $CTL_PORT not listening"; exit 3; }
done
echo "NVMET-READY nqn=$NQN ports=$(echo $PORTS | tr ' ' ,) ctl=$CTL_PORT"

start=$(cut -d. -f1 /proc/uptime)
while [ ! -e "$STOP_FLAG" ]; do
  now=$(cut -d. -f1 /proc/uptime)
  if [ $((now - start)) -ge "$TIMEOUT" ]; then
    say "timeout after ${TIMEOUT}s"
    break
  fi
  sleep 0.2
done
[ -e "$STOP_FLAG" ] && say "stop requested"
kill "$NC_PID" 2>/dev/null
echo "=== BEGIN dmesg"
dmesg | grep -iE 'nvme|nvmet' | tail -n 200
echo "=== END dmesg rc=0"
teardown
