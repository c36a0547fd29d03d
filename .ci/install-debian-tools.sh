#!/usr/bin/env bash
# Installs the Debian tools the suite and `make bench` drive as real processes, when missing:
#   docker-compose - tests/platform/test_compose.py validates docker-compose.yml with `docker-compose config`
#                    (no Docker engine is needed for that);
#   wrk            - bench/run.py's HTTP load generator, run as a process of its own;
#   chromium       - the real browser the console tests (tests/console) drive with Playwright, launched
#                    from /usr/bin/chromium (Playwright downloads nothing), with a CJK font for the
#                    Chinese pages.
# Usage: install-debian-tools.sh [command ...] (default: all of them). Idempotent.
set -euo pipefail

declare -A PACKAGE=([docker-compose]=docker-compose [wrk]=wrk [chromium]="chromium fonts-wqy-zenhei")
wanted=("$@")
if [ ${#wanted[@]} -eq 0 ]; then
    wanted=("${!PACKAGE[@]}")
fi

missing=()
for command in "${wanted[@]}"; do
    if ! command -v "$command" >/dev/null 2>&1; then
        read -r -a packages <<<"${PACKAGE[$command]}"
        missing+=("${packages[@]}")
    fi
done
if [ ${#missing[@]} -eq 0 ]; then
    exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "installed: ${missing[*]}"
