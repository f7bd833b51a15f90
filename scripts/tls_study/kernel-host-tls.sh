#!/bin/sh
# kernel-host-tls.sh: the guest kernel's nvme-tcp host connects with --tls to a target on
# the host (10.0.2.2:$PORT), for scripts/tls_study/kernel_host_handshake.py (study only).
# Env: KEY (NVMeTLSkey-1), HOSTNQN, HOSTID, NQN, PORT.
set -u
command -v tlshd > /dev/null || { echo "no tlshd (use LINUXVM_RELEASE=trixie)"; exit 2; }
echo "kernel $(uname -r), $(nvme version | head -n 1), $(tlshd -v 2>&1 | head -n 1)"
sed "s/^loglevel=.*/loglevel=${TLSHD_LOGLEVEL:-1}/; s/^tls=.*/tls=${TLSHD_GNUTLS_DEBUG:-0}/" /etc/tlshd.conf > /tmp/tlshd.conf
tlshd -s -c /tmp/tlshd.conf > /tmp/tlshd.log 2>&1 &
TLSHD=$!
nvme check-tls-key --hostnqn="$HOSTNQN" --subsysnqn="$NQN" --keydata="$KEY" --identity=0 --insert
timeout 60 nvme connect -t tcp -a 10.0.2.2 -s "$PORT" -n "$NQN" --hostnqn="$HOSTNQN" --hostid="$HOSTID" \
  --tls -l 1 > /tmp/connect.out 2>&1
echo "nvme connect exit $?: $(cat /tmp/connect.out)"
echo "--- dmesg"; dmesg | sed -n 's/^\[[ 0-9.]*\] //; /TLS\|tls\|nvme\|handshake/p'
echo "--- tlshd.log"; grep -v "gnutls(2)" /tmp/tlshd.log
kill "$TLSHD" 2> /dev/null
echo "KERNEL-HOST-DONE"
