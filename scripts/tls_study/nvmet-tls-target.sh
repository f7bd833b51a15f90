#!/bin/sh
# nvmet-tls-target.sh: the guest kernel's nvmet with TLS 1.3 (PSK) on port 4420, for
# scripts/tls_study/kernel_handshake.py (study, not product). Run in the trixie guest:
#   LINUXVM_RELEASE=trixie ../shared/linuxvm/run -p 14420:4420 -p 19999:9999 \
#     -e KEY=NVMeTLSkey-1:01:...: -e HOSTNQN=... scripts/tls_study/nvmet-tls-target.sh
# Files KEY with `nvme check-tls-key --identity=0 --insert` (libnvme's derivation) into
# .nvme, prints the filed key (description + payload in hex, so the host can compare
# its own derivation), configures nvmet (addr_tsas=tls1.3, addr_treq=${TREQ:-required}),
# prints "NVMET-TLS-READY", serves until something connects to 9999 or TIMEOUT, then
# prints dmesg and the tlshd log.
set -u
NQN=${NQN:-nqn.2014-08.org.nvmexpress:linuxvm-tls}
TREQ=${TREQ:-required}
TIMEOUT=${TIMEOUT:-120}
CFG=/sys/kernel/config/nvmet
S=$CFG/subsystems/$NQN
command -v tlshd > /dev/null || { echo "no tlshd (use LINUXVM_RELEASE=trixie)"; exit 2; }
echo "kernel $(uname -r), $(nvme version | head -n 1), $(tlshd -v 2>&1 | head -n 1)"
sed "s/^loglevel=.*/loglevel=${TLSHD_LOGLEVEL:-1}/; s/^tls=.*/tls=${TLSHD_GNUTLS_DEBUG:-0}/" /etc/tlshd.conf > /tmp/tlshd.conf
tlshd -s -c /tmp/tlshd.conf > /tmp/tlshd.log 2>&1 &
TLSHD=$!
nvme check-tls-key --hostnqn="$HOSTNQN" --subsysnqn="$NQN" --keydata="$KEY" --identity=0 --insert
for id in $(keyctl rlist %:.nvme); do
  keyctl setperm "$id" 0x3f3f0000 2>&1
  echo "KEYRING-KEY $(keyctl rdescribe "$id" | sed 's/^[^;]*;[^;]*;[^;]*;[^;]*;//') $(keyctl pipe "$id" | od -An -tx1 -v | tr -d ' \n')"
done
mkdir "$S"
echo 1 > "$S/attr_allow_any_host"
truncate -s 16M /tmp/tls-ns.img
mkdir "$S/namespaces/1"
echo /tmp/tls-ns.img > "$S/namespaces/1/device_path"
echo 1 > "$S/namespaces/1/buffered_io"
echo 1 > "$S/namespaces/1/enable"
P=$CFG/ports/1
mkdir "$P"
echo tcp > "$P/addr_trtype"; echo ipv4 > "$P/addr_adrfam"
echo 0.0.0.0 > "$P/addr_traddr"; echo 4420 > "$P/addr_trsvcid"
echo tls1.3 > "$P/addr_tsas"; echo "$TREQ" > "$P/addr_treq"
ln -s "$S" "$P/subsystems/$NQN"
echo "NVMET-TLS-READY nqn=$NQN port=4420 addr_tsas=$(cat "$P/addr_tsas") addr_treq=$(cat "$P/addr_treq")"
timeout "$TIMEOUT" nc -l -p 9999 < /dev/null > /dev/null 2>&1
echo "--- dmesg"; dmesg | sed -n 's/^\[[ 0-9.]*\] //; /TLS\|tls\|nvmet\|handshake/p'
echo "--- tlshd.log"; cat /tmp/tlshd.log
rm -f "$P/subsystems/$NQN"; rmdir "$P"
echo 0 > "$S/namespaces/1/enable"; rmdir "$S/namespaces/1"; rmdir "$S"
kill "$TLSHD" 2> /dev/null
echo "NVMET-TLS-DONE"
