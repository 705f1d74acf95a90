#!/usr/bin/env bash
# Docker Compose on deploy/docker-compose.yml, from any directory: `docker compose` when the
# plugin works, else the standalone `docker-compose` (1.29 or later). deploy/.env is read either way.
#
#   deploy/compose.sh up -d
#   deploy/compose.sh run --rm cli status
#   deploy/compose.sh down          # add -v to delete the data volumes too
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
if docker compose version >/dev/null 2>&1; then
    compose=(docker compose)
elif command -v docker-compose >/dev/null 2>&1; then
    compose=(docker-compose)
else
    echo "compose.sh: error: neither 'docker compose' nor 'docker-compose' works here" >&2
    exit 1
fi
exec "${compose[@]}" --project-directory "$here" -f "$here/docker-compose.yml" "$@"
