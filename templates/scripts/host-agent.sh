#!/bin/sh
# provision host-load agent for cluster {{ cluster }}.
# Publishes {"containers": int, "cpu": 0..1, "memory": 0..1, "at": unix seconds} at
# /provision/$AGENT_CLUSTER/hosts/$AGENT_HOST/load in etcd's v2 keyspace with TTL $AGENT_TTL,
# every $AGENT_INTERVAL seconds, over TLS with a client certificate. Needs sh, awk and curl.
# AGENT_ONCE=1 publishes once and exits; AGENT_CONTAINERS_CMD overrides the container count.
set -u
: "${AGENT_CLUSTER:?}" "${AGENT_ETCD_ENDPOINTS:?}" "${AGENT_CA:?}" "${AGENT_CERT:?}" "${AGENT_KEY:?}"
AGENT_INTERVAL="${AGENT_INTERVAL:-10}"
AGENT_TTL="${AGENT_TTL:-60}"
AGENT_HOST="${AGENT_HOST:-$(hostname)}"
PROC="${AGENT_PROC:-/proc}"

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

publish() {
  value=$(printf '{"containers": %d, "cpu": %s, "memory": %s, "at": %d}' \
    "$(containers)" "$(cpu_fraction)" "$(memory_fraction)" "$(date +%s)")
  old_ifs=$IFS; IFS=,
  for endpoint in $AGENT_ETCD_ENDPOINTS; do
    IFS=$old_ifs
    if curl -fsS --max-time 5 --cacert "$AGENT_CA" --cert "$AGENT_CERT" --key "$AGENT_KEY" \
        -X PUT "$endpoint/v2/keys/provision/$AGENT_CLUSTER/hosts/$AGENT_HOST/load" \
        --data-urlencode "value=$value" --data-urlencode "ttl=$AGENT_TTL" >/dev/null; then
      return 0
    fi
  done
  IFS=$old_ifs
  echo "host-agent: no etcd endpoint accepted the load of $AGENT_HOST" >&2
  return 1
}

while :; do
  publish
  status=$?
  if [ "${AGENT_ONCE:-0}" = 1 ]; then exit $status; fi
  sleep "$AGENT_INTERVAL"
done
