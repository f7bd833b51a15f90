#!/bin/sh
# The kernel host against a target with a unique discovery NQN (TP 8013): `nvme discover` with
# the well-known and with the unique NQN, and a persistent discovery controller on the unique
# one (its subsysnqn, a log read through it, its removal).
# Then, with IO_PORT and NQN, an I/O controller's Identify Controller as nvme-cli prints it
# (the CQT the target advertises shows in nvme-cli 2.13's id-ctrl).
# Environment: ADDR (10.0.2.2), DISC_PORT, UNIQUE (the unique discovery NQN), IO_PORT, NQN.
set -u
ADDR=${ADDR:-10.0.2.2}

begin() { echo "=== BEGIN $1"; }
end() { echo "=== END $1 rc=$2"; }
step() {
  _name=$1
  shift
  begin "$_name"
  "$@" 2>&1
  _rc=$?
  end "$_name" "$_rc"
  return "$_rc"
}

step discover-well-known nvme discover -t tcp -a "$ADDR" -s "$DISC_PORT"
step discover-unique nvme discover -t tcp -a "$ADDR" -s "$DISC_PORT" -n "$UNIQUE"
step persistent nvme discover -t tcp -a "$ADDR" -s "$DISC_PORT" -n "$UNIQUE" -p
for c in /sys/class/nvme/nvme*; do  # INFO lines go outside the steps
  [ -e "$c/subsysnqn" ] && echo "INFO dev=${c##*/} subsysnqn=$(cat "$c/subsysnqn")"
done
dev=$(for c in /sys/class/nvme/nvme*; do
  [ "$(cat "$c/subsysnqn" 2>/dev/null)" = "$UNIQUE" ] && echo "${c##*/}"; done | head -1)
step discover-through-persistent nvme discover -d "${dev:-none}"
step disconnect-persistent nvme disconnect -d "${dev:-none}"
if [ -n "${IO_PORT:-}" ] && [ -n "${NQN:-}" ]; then
  step connect-io nvme connect -t tcp -a "$ADDR" -s "$IO_PORT" -n "$NQN"
  io=$(for c in /sys/class/nvme/nvme*; do
    [ "$(cat "$c/subsysnqn" 2>/dev/null)" = "$NQN" ] && echo "${c##*/}"; done | head -1)
  step id-ctrl nvme id-ctrl "/dev/${io:-none}"
  step disconnect-io nvme disconnect -n "$NQN"
fi
begin dmesg-nvme
dmesg | grep -i nvme | tail -20
end dmesg-nvme 0
