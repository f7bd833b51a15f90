#!/bin/sh
# kernel-loopback-sha384.sh: Linux 6.12 host <-> nvmet with an NVMe0R02 (48-byte, --hmac=2) PSK in one
# trixie guest, to see which suite tlshd 1.0.0 picks (measured: CHACHA20-POLY1305, a SHA-256 suite).
#   LINUXVM_RELEASE=trixie ../shared/linuxvm/run scripts/tls_study/kernel-loopback-sha384.sh
set -u
NQN=nqn.2014-08.org.nvmexpress:linuxvm-tls; HA=nqn.2014-08.org.nvmexpress:uuid:0d0d0d0d-1111-2222-3333-444444444444
sed "s/^loglevel=.*/loglevel=1/" /etc/tlshd.conf > /tmp/tlshd.conf
tlshd -s -c /tmp/tlshd.conf > /tmp/tlshd.log 2>&1 &
KEY=$(nvme gen-tls-key --hostnqn="$HA" --subsysnqn="$NQN" --hmac=2); echo "KEY $KEY"
nvme check-tls-key --hostnqn="$HA" --subsysnqn="$NQN" --keydata="$KEY" --identity=0 --insert
CFG=/sys/kernel/config/nvmet; S=$CFG/subsystems/$NQN; mkdir $S; echo 1 > $S/attr_allow_any_host
truncate -s 16M /tmp/ns.img; mkdir $S/namespaces/1; echo /tmp/ns.img > $S/namespaces/1/device_path; echo 1 > $S/namespaces/1/enable
P=$CFG/ports/1; mkdir $P; echo tcp > $P/addr_trtype; echo ipv4 > $P/addr_adrfam; echo 127.0.0.1 > $P/addr_traddr; echo 4420 > $P/addr_trsvcid
echo tls1.3 > $P/addr_tsas; echo required > $P/addr_treq; ln -s $S $P/subsystems/$NQN
timeout 60 nvme connect -t tcp -a 127.0.0.1 -s 4420 -n $NQN --hostnqn=$HA --hostid=0d0d0d0d-1111-2222-3333-444444444444 --tls -l 2; echo "connect exit $?"
sleep 1; dmesg | sed -n 's/^\[[ 0-9.]*\] //; /TLS\|tls\|nvme/p'; grep -E "Session desc|successful|failed|unhandled|Using psk" /tmp/tlshd.log
nvme disconnect -n $NQN
