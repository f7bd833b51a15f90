#!/bin/sh
# nvmet_auth_target.sh: the guest kernel's nvmet with DH-HMAC-CHAP host keys, for our
# initiator (tests/interop/test_kernel_auth_initiator.py). Needs Linux 6.12 (the trixie guest):
#   LINUXVM_RELEASE=trixie ../shared/linuxvm/run -p H:4420 -p HC:9998 \
#       -a hosts.txt:/root/auth_hosts.txt nvmet_auth_target.sh
#
# Setup (like ../shared/linuxvm/examples/auth-loopback.sh): one subsystem NQN with
# attr_allow_any_host 0, one namespace (nsid 1) on a memory-backed null_blk, one TCP port
# (PORT on 0.0.0.0), and one configfs host per line of HOSTS_FILE:
#   <hostnqn> <dhchap_key> <dhchap_hash> <dhchap_dhgroup> <dhchap_ctrl_key or ->
# each linked into allowed_hosts. Then it prints
#   NVMET-READY nqn=<NQN> ports=<PORT> ctl=<CTL_PORT>
# (or "NVMET-NOAUTH <why>" and exits 0 when the kernel has no NVMe in-band authentication)
# and serves until "stop" arrives on the control port or TIMEOUT seconds pass.
#
# Control channel: guest TCP port CTL_PORT (busybox `nc -ll -e`, one command per connection),
# replies start with "OK" or "ERR":
#   key HOSTNQN KEY   echo KEY > hosts/HOSTNQN/dhchap_key (for the next authentication)
#   bounce            unlink the subsystem from the port and link it again (nvmet drops the
#                     port's controllers: hosts reconnect)
#   dmesg             the last nvme/nvmet kernel log lines
#   stop              tear down and exit
#
# Settings (environment): NQN, PORT (4420), CTL_PORT (9998), SIZE_MB (64), BS (512),
# TIMEOUT (300), HOSTS_FILE (/root/auth_hosts.txt).
set -u
NQN=${NQN:-nqn.2014-08.org.nvmexpress:linuxvm-auth}
PORT=${PORT:-4420}
CTL_PORT=${CTL_PORT:-9998}
SIZE_MB=${SIZE_MB:-64}
BS=${BS:-512}
TIMEOUT=${TIMEOUT:-300}
HOSTS_FILE=${HOSTS_FILE:-/root/auth_hosts.txt}
CFG=/sys/kernel/config/nvmet
NULLB=/sys/kernel/config/nullb
S=$CFG/subsystems/$NQN
P=$CFG/ports/1
STOP_FLAG=/tmp/nvmet-stop

say() { echo "nvmet-auth-target: $*"; }

control() {
  read -r cmd arg1 arg2 || { echo "ERR empty"; return; }
  case $cmd in
    key)
      H=$CFG/hosts/${arg1:-none}
      [ -d "$H" ] || { echo "ERR unknown host ${arg1:-}"; return; }
      if out=$(echo "${arg2:-}" 2>&1 > "$H/dhchap_key"); then echo "OK key set for $arg1"
      else echo "ERR $out"; fi ;;
    bounce)
      if out=$( { rm "$P/subsystems/$NQN" && sleep 0.5 && ln -s "$S" "$P/subsystems/$NQN"; } 2>&1)
      then echo "OK bounced"; else echo "ERR $out"; fi ;;
    dmesg)
      echo "OK"
      dmesg | grep -i nvme | tail -n 80 ;;
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

modprobe nvme-auth 2>/dev/null
if [ ! -d "$CFG/hosts" ] || [ ! -e /sys/module/nvme_auth ]; then
  echo "NVMET-NOAUTH kernel $(uname -r) has no NVMe in-band authentication (CONFIG_NVME_AUTH)"
  exit 0
fi

setup() {
  set -e
  mkdir "$S"
  echo 0 > "$S/attr_allow_any_host"
  d=$NULLB/authns1
  mkdir "$d"
  echo "$SIZE_MB" > "$d/size"
  echo "$BS" > "$d/blocksize"
  echo 1 > "$d/memory_backed"
  echo 1 > "$d/power"
  if [ -b /dev/authns1 ]; then dev=/dev/authns1; else dev="/dev/nullb$(cat "$d/index")"; fi
  mkdir "$S/namespaces/1"
  printf %s "$dev" > "$S/namespaces/1/device_path"
  echo 1 > "$S/namespaces/1/enable"
  while read -r hostnqn key hash group ctrlkey; do
    [ -n "$hostnqn" ] || continue
    H=$CFG/hosts/$hostnqn
    mkdir "$H"
    echo "$key" > "$H/dhchap_key"
    echo "$hash" > "$H/dhchap_hash"
    echo "$group" > "$H/dhchap_dhgroup"
    [ "$ctrlkey" = "-" ] || echo "$ctrlkey" > "$H/dhchap_ctrl_key"
    ln -s "$H" "$S/allowed_hosts/$hostnqn"
    say "host $hostnqn: $(cat "$H/dhchap_hash") $(cat "$H/dhchap_dhgroup")" \
      "$([ "$ctrlkey" = "-" ] && echo one-way || echo bidirectional)"
  done < "$HOSTS_FILE"
  mkdir "$P"
  echo tcp > "$P/addr_trtype"
  echo ipv4 > "$P/addr_adrfam"
  echo 0.0.0.0 > "$P/addr_traddr"
  echo "$PORT" > "$P/addr_trsvcid"
  ln -s "$S" "$P/subsystems/$NQN"
  say "namespace 1: $dev (${SIZE_MB} MiB, ${BS}-byte blocks); port tcp 0.0.0.0:$PORT"
  set +e
}

teardown() {
  rm -f "$P/subsystems/$NQN"
  rmdir "$P"
  for h in "$S"/allowed_hosts/*; do
    [ -e "$h" ] || [ -L "$h" ] || continue
    n=${h##*/}
    rm -f "$h"
    rmdir "$CFG/hosts/$n"
  done
  echo 0 > "$S/namespaces/1/enable"
  rmdir "$S/namespaces/1"
  rmdir "$S"
  d=$NULLB/authns1
  [ -d "$d" ] && { echo 0 > "$d/power"; rmdir "$d"; }
  say "target removed"
}

rm -f "$STOP_FLAG"
setup
nc -ll -p "$CTL_PORT" -e sh "$0" --control &
NC_PID=$!
waited=0
until netstat -ltn | grep -q ":$CTL_PORT "; do
  sleep 0.1
  waited=$((waited + 1))
  [ $waited -lt 100 ] || { say "control port $CTL_PORT not listening"; exit 3; }
done
echo "NVMET-READY nqn=$NQN ports=$PORT ctl=$CTL_PORT kernel=$(uname -r)"

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
