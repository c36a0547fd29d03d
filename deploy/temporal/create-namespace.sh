#!/bin/sh
# One-shot (the `temporal-namespace` compose service, temporalio/admin-tools image): waits until the
# Temporal frontend reports SERVING, then registers the namespace giantflow runs in when it does not exist.
# temporalio/server, unlike the deprecated auto-setup image, creates no namespace by itself.
set -eu

ADDRESS="${TEMPORAL_ADDRESS:-temporal:7233}"
NAMESPACE="${TEMPORAL_NAMESPACE:-default}"
RETENTION="${TEMPORAL_NAMESPACE_RETENTION:-30d}"

attempt=1
until temporal operator cluster health --address "$ADDRESS" 2>/dev/null | grep -q SERVING; do
    if [ "$attempt" -ge 60 ]; then
        echo "the Temporal frontend at $ADDRESS is not serving" >&2
        exit 1
    fi
    attempt=$((attempt + 1))
    sleep 2
done

if temporal operator namespace describe --address "$ADDRESS" --namespace "$NAMESPACE" >/dev/null 2>&1; then
    echo "temporal-namespace: $NAMESPACE exists"
else
    temporal operator namespace create --address "$ADDRESS" --namespace "$NAMESPACE" --retention "$RETENTION"
    echo "temporal-namespace: $NAMESPACE created (retention $RETENTION)"
fi
