#!/usr/bin/env bash
# Installs Debian's docker-compose (v1-compatible CLI) so tests/platform/test_compose.py can validate
# docker-compose.yml with `docker-compose config`. No Docker engine is needed for that. Idempotent.
set -euo pipefail

if command -v docker-compose >/dev/null 2>&1; then
    exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi

$SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends docker-compose >/dev/null
docker-compose version
