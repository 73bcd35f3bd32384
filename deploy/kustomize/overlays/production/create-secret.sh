#!/bin/sh
# Creates the Secret `shipyard-secrets` that the Shipyard manifests beside this file read, from
# environment variables of the same names (rendered by `shipyard deploy kubernetes`).
# Keys:
#   SHIPYARD_DATABASE_URL: the store's SQLAlchemy URL, postgresql+psycopg://USER:PASSWORD@HOST/DB
#   SHIPYARD_REDIS_URL: Redis URL, redis://:PASSWORD@HOST:6379/0
#   SHIPYARD_ADMIN_KEY: the admin API key the gateway creates on an empty store
#   SHIPYARD_AUDIT_KEY: the audit log's HMAC key, the same for every replica
# An existing Secret is left alone unless REPLACE=1; kubectl must point at the cluster.
set -eu
if [ -z "${REPLACE:-}" ] && kubectl get secret shipyard-secrets --namespace shipyard >/dev/null 2>&1; then
  echo "secret shipyard-secrets exists; set REPLACE=1 to replace it" >&2
  exit 1
fi
set --
: "${SHIPYARD_DATABASE_URL:?set SHIPYARD_DATABASE_URL: the store's SQLAlchemy URL, postgresql+psycopg://USER:PASSWORD@HOST/DB}"
set -- "$@" --from-literal="SHIPYARD_DATABASE_URL=$SHIPYARD_DATABASE_URL"
: "${SHIPYARD_REDIS_URL:?set SHIPYARD_REDIS_URL: Redis URL, redis://:PASSWORD@HOST:6379/0}"
set -- "$@" --from-literal="SHIPYARD_REDIS_URL=$SHIPYARD_REDIS_URL"
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
kubectl create secret generic shipyard-secrets --namespace shipyard "$@" --dry-run=client -o yaml | kubectl apply -f -
