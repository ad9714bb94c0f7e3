#!/bin/sh
# Writes the CNI config of {{ cluster }}'s pod network from flannel's lease (flannel owns pod
# CIDRs): bridge + host-local over FLANNEL_SUBNET, as flannel's CNI plugin delegates.
set -eu
SUBNET_ENV="${SUBNET_ENV:-/run/flannel/subnet.env}"
CNI_CONF_DIR="${CNI_CONF_DIR:-/etc/cni/net.d}"
WAIT_SECONDS="${WAIT_SECONDS:-600}"
CONF="$CNI_CONF_DIR/10-provision-pods.conflist"
n=0
until [ -s "$SUBNET_ENV" ]; do
  [ "$n" -lt "$WAIT_SECONDS" ] || { echo "cni-config: no $SUBNET_ENV (flanneld?)" >&2; exit 1; }
  sleep 1; n=$((n + 1))
done
. "$SUBNET_ENV"
: "${FLANNEL_NETWORK:?}" "${FLANNEL_SUBNET:?}"
# 10.2.34.1/24 -> network 10.2.34.0/24, gateway 10.2.34.1
subnet=$(echo "$FLANNEL_SUBNET" | awk -F/ '{ split($1, o, ".")
  ip = ((o[1] * 256 + o[2]) * 256 + o[3]) * 256 + o[4]; s = 2 ^ (32 - $2); n = ip - ip % s
  printf "%d.%d.%d.%d/%d", int(n / 16777216), int(n / 65536) % 256, int(n / 256) % 256, n % 256, $2 }')
# flanneld masquerades itself when FLANNEL_IPMASQ is true
masq=true; [ "${FLANNEL_IPMASQ:-false}" != true ] || masq=false
mkdir -p "$CNI_CONF_DIR"
cat > "$CONF.tmp" <<CONFIG
{"cniVersion": "1.0.0", "name": "{{ cluster }}-pods", "plugins": [
 {"type": "bridge", "bridge": "cni0", "isGateway": true, "isDefaultGateway": true,
  "ipMasq": $masq, "hairpinMode": true, "mtu": ${FLANNEL_MTU:-1450},
  "ipam": {"type": "host-local", "ranges": [[{"subnet": "$subnet", "gateway": "${FLANNEL_SUBNET%/*}"}]],
           "routes": [{"dst": "$FLANNEL_NETWORK"}]}},
 {"type": "portmap", "capabilities": {"portMappings": true}}]}
CONFIG
mv "$CONF.tmp" "$CONF"
