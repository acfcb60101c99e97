#!/bin/sh
# Prints the Secret the plain manifests expect (dagg-secrets), with a fresh random master key
# (base64 of 32 bytes), admin password and cluster join token. Run it once per cluster:
#
#   k8s/secret.sh | kubectl apply -n dagg -f -
#
# Running it again replaces the master key, and credentials stored under the old key no
# longer decrypt: keep the Secret (back it up) for as long as the data volumes live.
# DAGG_ADMIN_PASSWORD, if set, is used instead of a generated password.
set -eu
rand() { head -c "$1" /dev/urandom | base64 | tr -d '\n'; }
master_key=$(rand 32)
admin_password=${DAGG_ADMIN_PASSWORD:-$(rand 18 | tr '+/' '-_')}
cluster_token=$(rand 36 | tr '+/' '-_')
b64() { printf '%s' "$1" | base64 | tr -d '\n'; }
cat <<YAML
apiVersion: v1
kind: Secret
metadata:
  name: dagg-secrets
  labels:
    app.kubernetes.io/name: dagg
    app.kubernetes.io/part-of: dagg
type: Opaque
data:
  master-key: $(b64 "$master_key")
  admin-password: $(b64 "$admin_password")
  cluster-token: $(b64 "$cluster_token")
YAML
