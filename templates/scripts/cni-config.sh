#!/bin/sh
# Pod network of {{ cluster }}: write the CNI network config from the subnet flannel leased this
# host. flannel owns pod CIDRs (one lease per host in etcd); kube-controller-manager allocates
# none. Pods get addresses from FLANNEL_SUBNET through bridge + host-local (what flannel's own
# CNI plugin hands to them), a route to the whole pod network, and portmap for hostPort.
# SUBNET_ENV, CNI_CONF_DIR and WAIT_SECONDS override the defaults (tests).
set -eu
SUBNET_ENV="${SUBNET_ENV:-/run/flannel/subnet.env}"
CNI_CONF_DIR="${CNI_CONF_DIR:-/etc/cni/net.d}"
WAIT_SECONDS="${WAIT_SECONDS:-600}"
CONF="$CNI_CONF_DIR/10-provision-pods.conflist"

waited=0
until [ -s "$SUBNET_ENV" ]; do
  if [ "$waited" -ge "$WAIT_SECONDS" ]; then
    echo "cni-config: no $SUBNET_ENV after ${WAIT_SECONDS}s (is flanneld running?)" >&2
    exit 1
  fi
  sleep 1
  waited=$((waited + 1))
done

# shellcheck disable=SC1090
. "$SUBNET_ENV"
: "${FLANNEL_NETWORK:?missing in subnet.env}" "${FLANNEL_SUBNET:?missing in subnet.env}"
FLANNEL_MTU="${FLANNEL_MTU:-1450}"
FLANNEL_IPMASQ="${FLANNEL_IPMASQ:-false}"

# FLANNEL_SUBNET is the bridge address with the lease's prefix (10.2.34.1/24): host-local wants
# the network (10.2.34.0/24) and that address as the gateway.
subnet=$(echo "$FLANNEL_SUBNET" | awk -F/ '{
  split($1, o, "."); ip = ((o[1] * 256 + o[2]) * 256 + o[3]) * 256 + o[4]
  size = 2 ^ (32 - $2); net = ip - ip % size
  printf "%d.%d.%d.%d/%d", int(net / 16777216), int(net / 65536) % 256, int(net / 256) % 256, net % 256, $2 }')
gateway=${FLANNEL_SUBNET%/*}
# flanneld masquerades pod traffic leaving the pod network itself when FLANNEL_IPMASQ is true.
if [ "$FLANNEL_IPMASQ" = true ]; then bridge_masq=false; else bridge_masq=true; fi

mkdir -p "$CNI_CONF_DIR"
cat > "$CONF.tmp" <<CONFIG
{
  "cniVersion": "1.0.0",
  "name": "{{ cluster }}-pods",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "cni0",
      "isGateway": true,
      "isDefaultGateway": true,
      "ipMasq": $bridge_masq,
      "hairpinMode": true,
      "mtu": $FLANNEL_MTU,
      "ipam": {
        "type": "host-local",
        "ranges": [[{"subnet": "$subnet", "gateway": "$gateway"}]],
        "routes": [{"dst": "$FLANNEL_NETWORK"}]
      }
    },
    {
      "type": "portmap",
      "capabilities": {"portMappings": true}
    }
  ]
}
CONFIG
mv "$CONF.tmp" "$CONF"
echo "cni-config: pods on this host get addresses from $subnet (pod network $FLANNEL_NETWORK)"
