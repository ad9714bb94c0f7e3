#!/bin/sh
# Run once on the first master of {{ cluster }} (the unit's marker file guards it):
# writes the flannel network config into etcd and creates the bootstrap token and the RBAC
# bindings that let workers join with kubelet TLS bootstrap. Every step treats
# "already exists" as success, so a re-run after a failure repairs.
set -eu

etcd_curl() { curl -sS --max-time 10 --cacert "$BOOTSTRAP_ETCD_CA" --cert "$BOOTSTRAP_ETCD_CERT" --key "$BOOTSTRAP_ETCD_KEY" "$@"; }
kube_curl() { curl -sS --max-time 10 --cacert "$BOOTSTRAP_KUBE_CA" --cert "$BOOTSTRAP_KUBE_CERT" --key "$BOOTSTRAP_KUBE_KEY" "$@"; }

write_flannel_config() {
  config=$(cat "$BOOTSTRAP_FLANNEL_CONFIG")
  old_ifs=$IFS; IFS=,
  for endpoint in $BOOTSTRAP_ETCD_ENDPOINTS; do
    IFS=$old_ifs
    if [ "$BOOTSTRAP_ETCD_API" = v2 ]; then
      # coreos-kubernetes: prevExist=false, and "Key already exists" (412) is success
      code=$(etcd_curl -o /dev/null -w '%{http_code}' -X PUT \
        "$endpoint/v2/keys/coreos.com/network/config?prevExist=false" --data-urlencode "value=$config") || continue
      case $code in 201|412) return 0 ;; esac
    else
      key=$(printf %s /coreos.com/network/config | base64 | tr -d '\n')
      value=$(printf %s "$config" | base64 | tr -d '\n')
      body=$(printf '{"compare":[{"key":"%s","target":"CREATE","create_revision":"0"}],"success":[{"request_put":{"key":"%s","value":"%s"}}]}' "$key" "$key" "$value")
      etcd_curl -f -o /dev/null -X POST "$endpoint/v3/kv/txn" -d "$body" && return 0
    fi
  done
  IFS=$old_ifs
  echo "bootstrap: no etcd endpoint took the flannel network config" >&2
  return 1
}

wait_for_keys() {
  # Its keys and the bootstrap token come over SSH after boot (provision's secrets phase). It
  # waits for them inside its start (a oneshot's start has no timeout) instead of failing and
  # sitting out RestartSec, a window in which the unit looks failed though nothing is wrong.
  waited=0
  until [ -s "$BOOTSTRAP_KUBE_KEY" ] && [ -s "$BOOTSTRAP_ETCD_KEY" ] && [ -s "$BOOTSTRAP_ADDONS/bootstrap-token.yaml" ]; do
    if [ "$waited" -ge "${BOOTSTRAP_KEYS_WAIT:-600}" ]; then
      echo "bootstrap: its keys were not delivered in ${BOOTSTRAP_KEYS_WAIT:-600} s" >&2
      return 1
    fi
    [ "$waited" -gt 0 ] || echo "bootstrap: waiting for its keys (provision's secrets phase)"
    sleep 1
    waited=$((waited + 1))
  done
}

wait_for_api() {
  until kube_curl -f -o /dev/null "$BOOTSTRAP_API/readyz"; do
    echo "bootstrap: waiting for the API server"
    sleep 5
  done
}

create_addons() {
  # index lines: <API collection path> <file>; with an argument, only that file
  while read -r path file; do
    [ -n "$path" ] || continue
    [ -z "${1:-}" ] || [ "$file" = "$1" ] || continue
    code=$(kube_curl -o /dev/null -w '%{http_code}' -X POST -H 'Content-Type: application/yaml' \
      --data-binary "@$BOOTSTRAP_ADDONS/$file" "$BOOTSTRAP_API$path")
    case $code in
      200|201|202|409) echo "bootstrap: $file ok ($code)" ;;
      *) echo "bootstrap: $file failed ($code)" >&2; return 1 ;;
    esac
  done < "$BOOTSTRAP_ADDONS/index"
}

object_name() {
  # metadata.name of one of our manifests (block style, two-space indent), checked against the
  # object name grammar before it reaches a URL
  name=$(awk '/^metadata:/ {m=1; next} m && /^[^ ]/ {m=0} m && /^  name:/ {print $2; exit}' "$1")
  case $name in
    ""|*[!a-z0-9.:-]*) echo "bootstrap: $1: no usable metadata.name" >&2; return 1 ;;
  esac
  printf %s "$name"
}

apply_addons() {
  # Server-side apply of every file of the index (PATCH to the object's own URL): creates what is
  # missing and updates what changed, so a running cluster gets new and changed addons and a
  # re-run changes nothing.
  while read -r path file; do
    [ -n "$path" ] || continue
    name=$(object_name "$BOOTSTRAP_ADDONS/$file") || return 1
    code=$(kube_curl -o /dev/null -w '%{http_code}' -X PATCH -H 'Content-Type: application/apply-patch+yaml' \
      --data-binary "@$BOOTSTRAP_ADDONS/$file" "$BOOTSTRAP_API$path/$name?fieldManager=provision&force=true")
    case $code in
      200|201) echo "bootstrap: $file applied ($code)" ;;
      *) echo "bootstrap: $file not applied ($code)" >&2; return 1 ;;
    esac
  done < "$BOOTSTRAP_ADDONS/index"
}

{% if addons_prune -%}
prune_addons() {
  # Objects provision applied once and the spec no longer makes (the prune file: <API collection
  # path> <name>, names checked against the object name grammar before they reach a URL):
  # deleted after the apply, so no node is left without kube-proxy in between; one already gone
  # (404) is success, so a re-run repairs.
  while read -r path name; do
    [ -n "$path" ] || continue
    case $name in
      ""|*[!a-z0-9.-]*) echo "bootstrap: prune: no usable object name in $path" >&2; return 1 ;;
    esac
    code=$(kube_curl -o /dev/null -w '%{http_code}' -X DELETE "$BOOTSTRAP_API$path/$name?propagationPolicy=Background")
    case $code in
      200|202|404) echo "bootstrap: $path/$name pruned ($code)" ;;
      *) echo "bootstrap: $path/$name not pruned ($code)" >&2; return 1 ;;
    esac
  done < "$BOOTSTRAP_ADDONS/prune"
}

{% endif -%}
delete_old_tokens() {
  # After a renewal: every other bootstrap token Secret provision made for this cluster goes (the
  # label says whose; tokens made by anyone else stay). Names are checked against the token
  # grammar before they reach a URL.
  current=$(sed -n 's/^  name: *//p' "$BOOTSTRAP_ADDONS/bootstrap-token.yaml" | head -n 1)
  selector=provision.io%2Fbootstrap-token%3D{{ cluster }}
  list=$(kube_curl -f "$BOOTSTRAP_API/api/v1/namespaces/kube-system/secrets?labelSelector=$selector") || {
    echo "bootstrap: cannot list the old bootstrap tokens" >&2; return 1; }
  for name in $(printf '%s\n' "$list" | grep -o '"name": *"bootstrap-token-[a-z0-9]\{6\}"' | grep -o 'bootstrap-token-[a-z0-9]*'); do
    [ "$name" != "$current" ] || continue
    code=$(kube_curl -o /dev/null -w '%{http_code}' -X DELETE "$BOOTSTRAP_API/api/v1/namespaces/kube-system/secrets/$name")
    case $code in
      200|202|404) echo "bootstrap: old token $name deleted ($code)" ;;
      *) echo "bootstrap: old token $name not deleted ($code)" >&2; return 1 ;;
    esac
  done
}

# Each step runs alone too: bootstrap.sh flannel | addons | token (the unit runs the first two;
# provision runs `addons` when the rendered addons differ from what was last applied, and
# `token` when it renewed the bootstrap token: the new Secret, with its expiry, then the old
# one is deleted).
case "${1:-all}" in
  flannel) write_flannel_config ;;
  addons) wait_for_api; apply_addons{% if addons_prune %}; prune_addons{% endif %} ;;
  token) wait_for_api; create_addons bootstrap-token.yaml; delete_old_tokens ;;
  # Once provision's etcd phase has turned etcd auth on, the v3 JSON gateway refuses this write
  # (etcd ignores certificate names there); provision's flannel phase writes the same key.
  all) wait_for_keys
       write_flannel_config || echo "bootstrap: flannel config left to provision's flannel phase" >&2
       wait_for_api; create_addons; echo "bootstrap: done" ;;
  *) echo "usage: $0 [all|flannel|addons|token]" >&2; exit 2 ;;
esac
