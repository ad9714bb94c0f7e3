#!/bin/sh
# provision host-load agent for cluster {{ cluster }}.
# Publishes {"containers": int, "cpu": 0..1, "memory": 0..1, "at": unix seconds} at
# /provision/$AGENT_CLUSTER/hosts/$AGENT_HOST/load in etcd's v3 keyspace, attached to a lease
# of $AGENT_TTL seconds that every publish keeps alive, every $AGENT_INTERVAL seconds, over TLS
# with a client certificate. It writes that one key and nothing else.
# Transport (AGENT_TRANSPORT): etcdctl (gRPC: etcd's auth knows the certificate's Common Name)
# when an etcdctl is found, else etcd's JSON gateway with curl (/v3/lease/grant,
# /v3/lease/keepalive, /v3/kv/put; the gateway does not map a certificate to a user, so it
# serves only an etcd without auth). Needs sh, awk, sed, base64, openssl and curl or etcdctl.
# AGENT_ONCE=1 publishes once and exits; AGENT_CONTAINERS_CMD overrides the container count.
set -u
: "${AGENT_CLUSTER:?}" "${AGENT_ETCD_ENDPOINTS:?}" "${AGENT_CA:?}" "${AGENT_CERT:?}" "${AGENT_KEY:?}"
AGENT_INTERVAL="${AGENT_INTERVAL:-10}"
AGENT_TTL="${AGENT_TTL:-60}"
# The host's name: AGENT_HOST (configs made per host), else the CN of its own certificate
# (etcd-agent-<host>: the one load key etcd lets it write), else the hostname.
cert_host() {
  openssl x509 -noout -subject -in "$AGENT_CERT" 2>/dev/null |
    sed -n 's/.*CN *= *etcd-agent-\([A-Za-z0-9.-]*\).*/\1/p'
}
AGENT_HOST="${AGENT_HOST:-$(cert_host)}"
AGENT_HOST="${AGENT_HOST:-$(hostname)}"
PROC="${AGENT_PROC:-/proc}"
TRANSPORT_WANTED="${AGENT_TRANSPORT:-auto}"

# choose_transport: etcdctl when one is found ({{ bin_dir }} holds it on etcd members), else the
# gateway; asked again before every publish, so an etcdctl installed later is picked up.
choose_transport() {
  ETCDCTL="${AGENT_ETCDCTL:-$(command -v etcdctl || true)}"
  if [ -z "$ETCDCTL" ] && [ -x "{{ bin_dir }}/etcdctl" ]; then ETCDCTL="{{ bin_dir }}/etcdctl"; fi
  new_transport=$TRANSPORT_WANTED
  if [ "$new_transport" = auto ]; then
    if [ -n "$ETCDCTL" ]; then new_transport=etcdctl; else new_transport=gateway; fi
  fi
  if [ "$new_transport" != "${AGENT_TRANSPORT_NOW:-}" ]; then LEASE=""; fi  # a lease per transport
  AGENT_TRANSPORT_NOW=$new_transport
}

cpu_sample() {
  # prints "busy total" jiffies from the aggregate cpu line
  awk '/^cpu / { idle = $5 + $6; total = 0; for (i = 2; i <= NF; i++) total += $i; print total - idle, total; exit }' "$PROC/stat"
}

cpu_fraction() {
  set -- $(cpu_sample)
  b1=$1 t1=$2
  sleep 1
  set -- $(cpu_sample)
  awk -v b1="$b1" -v t1="$t1" -v b2="$1" -v t2="$2" \
    'BEGIN { d = t2 - t1; f = (d > 0) ? (b2 - b1) / d : 0; if (f < 0) f = 0; if (f > 1) f = 1; printf "%.3f", f }'
}

memory_fraction() {
  awk '/^MemTotal:/ { t = $2 } /^MemAvailable:/ { a = $2 }
       END { f = (t > 0) ? 1 - a / t : 0; if (f < 0) f = 0; if (f > 1) f = 1; printf "%.3f", f }' "$PROC/meminfo"
}

containers() {
  if [ -n "${AGENT_CONTAINERS_CMD:-}" ]; then
    sh -c "$AGENT_CONTAINERS_CMD"
  else
    # one containerd shim per pod sandbox or container
    ps -e -o comm= 2>/dev/null | grep -c '^containerd-shim' || true
  fi
}

b64() {
  printf '%s' "$1" | base64 | tr -d '\n'
}

KEY_B64=$(b64 "/provision/$AGENT_CLUSTER/hosts/$AGENT_HOST/load")
LEASE=""

# post PATH JSON: the first endpoint that answers; prints etcd's answer, fails on an error.
post() {
  old_ifs=$IFS; IFS=,
  for endpoint in $AGENT_ETCD_ENDPOINTS; do
    IFS=$old_ifs
    answer=$(curl -sS --max-time 5 --cacert "$AGENT_CA" --cert "$AGENT_CERT" --key "$AGENT_KEY" \
      -w '\n%{http_code}' -X POST "$endpoint$1" -d "$2") || continue
    code=$(printf '%s' "$answer" | tail -n 1)
    printf '%s\n' "$answer" | sed '$d'
    [ "$code" = 200 ]
    return
  done
  IFS=$old_ifs
  echo "host-agent: no etcd endpoint answered $1" >&2
  return 1
}

# json_field NAME: the value of "NAME" (a number, or a number in a string) in stdin.
json_field() {
  sed -n "s/.*\"$1\": *\"\{0,1\}\([0-9][0-9]*\)\"\{0,1\}.*/\1/p" | head -n 1
}

ctl() {
  ETCDCTL_API=3 "$ETCDCTL" --endpoints="$AGENT_ETCD_ENDPOINTS" --dial-timeout=5s --command-timeout=5s \
    --cacert="$AGENT_CA" --cert="$AGENT_CERT" --key="$AGENT_KEY" "$@"
}

grant() {
  if [ "$AGENT_TRANSPORT_NOW" = etcdctl ]; then
    # "lease 694d71ddacfda227 granted with TTL(60s)": the ID in hexadecimal, as put takes it
    LEASE=$(ctl lease grant "$AGENT_TTL" | sed -n 's/^lease \([0-9a-f][0-9a-f]*\) granted.*/\1/p')
  else
    LEASE=$(post /v3/lease/grant "{\"TTL\": \"$AGENT_TTL\"}" | json_field ID)
  fi
  [ -n "$LEASE" ]
}

# keepalive: true while the lease exists (etcd answers its remaining TTL, none once expired).
keepalive() {
  [ -n "$LEASE" ] || return 1
  if [ "$AGENT_TRANSPORT_NOW" = etcdctl ]; then
    ttl=$(ctl lease keep-alive --once "$LEASE" 2>/dev/null | sed -n 's/.*TTL(\([0-9][0-9]*\)).*/\1/p')
  else
    ttl=$(post /v3/lease/keepalive "{\"ID\": \"$LEASE\"}" | json_field TTL)
  fi
  [ -n "$ttl" ] && [ "$ttl" -gt 0 ]
}

put() {
  if [ "$AGENT_TRANSPORT_NOW" = etcdctl ]; then
    printf '%s' "$1" | ctl put "/provision/$AGENT_CLUSTER/hosts/$AGENT_HOST/load" --lease="$LEASE" >/dev/null
  else
    post /v3/kv/put "{\"key\": \"$KEY_B64\", \"value\": \"$(b64 "$1")\", \"lease\": \"$LEASE\"}" >/dev/null
  fi
}

publish() {
  choose_transport
  value=$(printf '{"containers": %d, "cpu": %s, "memory": %s, "at": %d}' \
    "$(containers)" "$(cpu_fraction)" "$(memory_fraction)" "$(date +%s)")
  if ! keepalive; then
    grant || { echo "host-agent: cannot get an etcd lease for $AGENT_HOST" >&2; return 1; }
  fi
  if put "$value"; then
    return 0
  fi
  # the lease expired between keepalive and put (etcd restarted, long pause): a new one
  grant && put "$value" && return 0
  echo "host-agent: no etcd endpoint accepted the load of $AGENT_HOST" >&2
  return 1
}

while :; do
  publish
  status=$?
  if [ "${AGENT_ONCE:-0}" = 1 ]; then exit $status; fi
  sleep "$AGENT_INTERVAL"
done
