#!/bin/sh
# Creates the Secret `shipyard-secrets` that the Shipyard manifests beside this file read, from
# environment variables of the same names (rendered by `shipyard deploy kubernetes`).
# Keys:
#   SHIPYARD_ADMIN_KEY: the admin API key the gateway creates on an empty store
#   SHIPYARD_AUDIT_KEY: the audit log's HMAC key, the same for every replica
# An existing Secret is left alone unless REPLACE=1; kubectl must point at the cluster.
set -eu
if [ -z "${REPLACE:-}" ] && kubectl get secret shipyard-secrets ${NAMESPACE:+--namespace "$NAMESPACE"} >/dev/null 2>&1; then
  echo "secret shipyard-secrets exists; set REPLACE=1 to replace it" >&2
  exit 1
fi
set --
if [ -z "${SHIPYARD_ADMIN_KEY:-}" ]; then
  SHIPYARD_ADMIN_KEY="sk-shp-$(LC_ALL=C tr -dc A-Za-z0-9 </dev/urandom | head -c 40)"
  echo "generated SHIPYARD_ADMIN_KEY (shown once, keep it): $SHIPYARD_ADMIN_KEY" >&2
fi
set -- "$@" --from-literal="SHIPYARD_ADMIN_KEY=$SHIPYARD_ADMIN_KEY"
if [ -z "${SHIPYARD_AUDIT_KEY:-}" ]; then
  SHIPYARD_AUDIT_KEY="$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n')"
  echo "generated SHIPYARD_AUDIT_KEY (shown once, keep it): $SHIPYARD_AUDIT_KEY" >&2
fi
set -- "$@" --from-literal="SHIPYARD_AUDIT_KEY=$SHIPYARD_AUDIT_KEY"
kubectl create secret generic shipyard-secrets ${NAMESPACE:+--namespace "$NAMESPACE"} "$@" --dry-run=client -o yaml | kubectl apply -f -
