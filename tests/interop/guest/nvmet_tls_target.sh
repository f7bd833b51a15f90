#!/bin/sh
# nvmet_tls_target.sh: the guest kernel's nvmet with NVMe/TCP TLS 1.3 and pre-shared keys (TP
# 8011), for our initiator (tests/interop/test_kernel_tls_initiator.py). Needs Linux 6.12 and
# tlshd (the trixie guest):
#   LINUXVM_RELEASE=trixie ../shared/linuxvm/run -p H1:4420 -p H2:4421 -p HC:9998 \
#       -a keys.txt:/root/tls_keys.txt nvmet_tls_target.sh
#
# Setup (like ../shared/linuxvm/examples/tls-loopback.sh): tlshd (the kernel's TLS handshake
# agent, it does the target's handshakes) started here; one PSK per line of KEYS_FILE
#   <hostnqn> <NVMeTLSkey-1 key>
# filed in the .nvme keyring with `nvme check-tls-key --identity=0 --insert` for (hostnqn, NQN)
# (nvme-cli 2.13: the compat-derived TLS PSK, docs/TLS.md); one subsystem NQN (any host), one
# namespace (nsid 1) on a memory-backed null_blk; two TCP ports on 0.0.0.0 with
# addr_tsas=tls1.3: PORT (addr_treq=required) and PORT2 (addr_treq="not required": TLS or
# plaintext). Then it prints
#   NVMET-READY nqn=<NQN> ports=<PORT>,<PORT2> ctl=<CTL_PORT>
# (or "NVMET-NOTLS <why>" and exits 0 when the kernel has no NVMe/TCP TLS) and serves until
# "stop" arrives on the control port or TIMEOUT seconds pass.
#
# Control channel: guest TCP port CTL_PORT (busybox `nc -ll -e`, one command per connection),
# replies start with "OK" or "ERR":
#   dmesg   the last nvme/nvmet/TLS kernel log lines
#   tlshd   tlshd's log lines since the last "tlshd" command (handshakes, sessions, failures)
#   stop    tear down and exit
#
# Settings (environment): NQN, PORT (4420), PORT2 (4421), CTL_PORT (9998), SIZE_MB (64),
# BS (512), TIMEOUT (300), KEYS_FILE (/root/tls_keys.txt).
set -u
NQN=${NQN:-nqn.2014-08.org.nvmexpress:linuxvm-tls}
PORT=${PORT:-4420}
PORT2=${PORT2:-4421}
CTL_PORT=${CTL_PORT:-9998}
SIZE_MB=${SIZE_MB:-64}
BS=${BS:-512}
TIMEOUT=${TIMEOUT:-300}
KEYS_FILE=${KEYS_FILE:-/root/tls_keys.txt}
CFG=/sys/kernel/config/nvmet
NULLB=/sys/kernel/config/nullb
S=$CFG/subsystems/$NQN
STOP_FLAG=/tmp/nvmet-stop
TLSHD_LOG=/tmp/tlshd.log
TLSHD_SEEN=/tmp/tlshd.seen

say() { echo "nvmet-tls-target: $*"; }

control() {
  read -r cmd _ || { echo "ERR empty"; return; }
  case $cmd in
    dmesg)
      echo "OK"
      dmesg | grep -iE 'nvme|tls|handshake' | tail -n 80 ;;
    tlshd)
      echo "OK"
      seen=$(cat "$TLSHD_SEEN" 2>/dev/null || echo 0)
      total=$(wc -l < "$TLSHD_LOG")
      tail -n +$((seen + 1)) "$TLSHD_LOG" | head -n $((total - seen)) |
        grep -E 'Using psk identity|Session description|successful|failed|error|unknown' |
        sed 's/^tlshd\[[0-9]*\]: //'
      echo "$total" > "$TLSHD_SEEN" ;;
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

if ! command -v tlshd > /dev/null || [ ! -e /sys/module/nvme_keyring ]; then
  echo "NVMET-NOTLS kernel $(uname -r) has no NVMe/TCP TLS (CONFIG_NVME_TARGET_TCP_TLS) or no tlshd"
  exit 0
fi
say "kernel $(uname -r), $(nvme version | head -n 1), $(tlshd -v 2>&1 | head -n 1)"

setup() {
  set -e
  # tlshd, its log opened for appending (a loglevel that names each handshake and its end)
  sed "s/^loglevel=.*/loglevel=1/" /etc/tlshd.conf > /tmp/tlshd.conf
  : > "$TLSHD_LOG"
  tlshd -s -c /tmp/tlshd.conf >> "$TLSHD_LOG" 2>&1 &
  TLSHD=$!
  while read -r hostnqn key; do
    [ -n "$hostnqn" ] || continue
    out=$(nvme check-tls-key --hostnqn="$hostnqn" --subsysnqn="$NQN" --keydata="$key" \
            --identity=0 --insert)
    say "PSK for $hostnqn: ${out#Inserted TLS key }"
  done < "$KEYS_FILE"
  keyctl show %:.nvme | tail -n +2 | sed 's/^/nvmet-tls-target: /'
  mkdir "$S"
  echo 1 > "$S/attr_allow_any_host"
  d=$NULLB/tlsns1
  mkdir "$d"
  echo "$SIZE_MB" > "$d/size"
  echo "$BS" > "$d/blocksize"
  echo 1 > "$d/memory_backed"
  echo 1 > "$d/power"
  if [ -b /dev/tlsns1 ]; then dev=/dev/tlsns1; else dev="/dev/nullb$(cat "$d/index")"; fi
  mkdir "$S/namespaces/1"
  printf %s "$dev" > "$S/namespaces/1/device_path"
  echo 1 > "$S/namespaces/1/enable"
  for id in 1 2; do
    P=$CFG/ports/$id
    mkdir "$P"
    echo tcp > "$P/addr_trtype"
    echo ipv4 > "$P/addr_adrfam"
    echo 0.0.0.0 > "$P/addr_traddr"
    if [ "$id" = 1 ]; then echo "$PORT" > "$P/addr_trsvcid"; else echo "$PORT2" > "$P/addr_trsvcid"; fi
    echo tls1.3 > "$P/addr_tsas"
    if [ "$id" = 1 ]; then echo required > "$P/addr_treq"; else echo "not required" > "$P/addr_treq"; fi
    ln -s "$S" "$P/subsystems/$NQN"
    say "port $id: tcp 0.0.0.0:$(cat "$P/addr_trsvcid") addr_tsas=$(cat "$P/addr_tsas")" \
      "addr_treq=$(cat "$P/addr_treq")"
  done
  say "namespace 1: $dev (${SIZE_MB} MiB, ${BS}-byte blocks)"
  set +e
}

teardown() {
  for id in 1 2; do
    rm -f "$CFG/ports/$id/subsystems/$NQN"
    rmdir "$CFG/ports/$id"
  done
  echo 0 > "$S/namespaces/1/enable"
  rmdir "$S/namespaces/1"
  rmdir "$S"
  d=$NULLB/tlsns1
  [ -d "$d" ] && { echo 0 > "$d/power"; rmdir "$d"; }
  kill "$TLSHD" 2>/dev/null
  say "target removed"
}

rm -f "$STOP_FLAG" "$TLSHD_SEEN"
setup
nc -ll -p "$CTL_PORT" -e sh "$0" --control &
NC_PID=$!
waited=0
until netstat -ltn | grep -q ":$CTL_PORT "; do
  sleep 0.1
  waited=$((waited + 1))
  [ $waited -lt 100 ] || { say "control port $CTL_PORT not listening"; exit 3; }
done
echo "NVMET-READY nqn=$NQN ports=$PORT,$PORT2 ctl=$CTL_PORT kernel=$(uname -r)"

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
dmesg | grep -iE 'nvme|tls|handshake' | tail -n 200
echo "=== END dmesg rc=0"
echo "=== BEGIN tlshd"
grep -E 'Using psk identity|Session description|successful|failed|error' "$TLSHD_LOG" |
  sed 's/^tlshd\[[0-9]*\]: //' | sort | uniq -c
echo "=== END tlshd rc=0"
teardown
