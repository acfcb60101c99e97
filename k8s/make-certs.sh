#!/bin/sh
# Prints the Secret dagg-peer-tls that the plain manifests mount for the peer port's mutual
# TLS: the cluster CA's certificate (ca.crt) and, for each pod dagg-N, a certificate naming its
# peer host dagg-N.dagg-peers (what DAGG_PEERS lists) with its key (dagg-N.crt, dagg-N.key),
# made with `dagg cert ca` / `dagg cert node`. Needs a `dagg` binary (DAGG=path, or on PATH):
#
#   k8s/make-certs.sh | kubectl apply -n dagg -f -
#
# The CA's key stays in CA_DIR (./dagg-peer-ca, mode 0700), never in the Secret: keep it
# offline. Run the script again with the same CA_DIR after raising the StatefulSet's replicas
# (REPLICAS=5) to sign certificates for the new pods with the same CA; a new CA_DIR makes a new
# CA, which every pod must then get at once (see docs/deploy.md, "Peer certificates").
#
# Other names (e.g. the Helm chart's peerTLS.existingSecret): NAME (dagg: pods NAME-N),
# HOST_SUFFIX (dagg-peers: hosts NAME-N.HOST_SUFFIX, e.g.
# dagg-peers.dagg.svc.cluster.local for the chart), SECRET (dagg-peer-tls).
set -eu
REPLICAS=${REPLICAS:-3}
CA_DIR=${CA_DIR:-./dagg-peer-ca}
NAME=${NAME:-dagg}
HOST_SUFFIX=${HOST_SUFFIX:-dagg-peers}
SECRET=${SECRET:-dagg-peer-tls}
DAGG=${DAGG:-dagg}
case "$REPLICAS" in ''|*[!0-9]*|0) echo "make-certs.sh: REPLICAS must be a number of pods, not '$REPLICAS'" >&2; exit 2 ;; esac
command -v "$DAGG" >/dev/null 2>&1 || { echo "make-certs.sh: no dagg binary ('$DAGG'); set DAGG=/path/to/dagg" >&2; exit 2; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
if [ ! -f "$CA_DIR/ca.crt" ]; then
  (umask 077 && mkdir -p "$CA_DIR")
  "$DAGG" cert ca --out "$CA_DIR" >&2
fi
b64() { base64 < "$1" | tr -d '\n'; }
{
  cat <<YAML
apiVersion: v1
kind: Secret
metadata:
  name: $SECRET
  labels:
    app.kubernetes.io/name: $NAME
    app.kubernetes.io/part-of: dagg
    app.kubernetes.io/component: peer-tls
type: Opaque
data:
  ca.crt: $(b64 "$CA_DIR/ca.crt")
YAML
  i=0
  while [ "$i" -lt "$REPLICAS" ]; do
    "$DAGG" cert node --node-id "$((i + 1))" --host "$NAME-$i.$HOST_SUFFIX" --ca-dir "$CA_DIR" --out "$work/$i" >&2
    echo "  $NAME-$i.crt: $(b64 "$work/$i/node.crt")"
    echo "  $NAME-$i.key: $(b64 "$work/$i/node.key")"
    i=$((i + 1))
  done
} > "$work/secret.yaml"
cat "$work/secret.yaml"
