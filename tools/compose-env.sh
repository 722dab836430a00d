#!/usr/bin/env bash
# Writes .env for docker-compose.yml: fresh random secrets (MinIO root, kdn's own S3 user, the edge secret, one API
# key) and the compose profile to run. docker compose refuses to start without it.
#
#   tools/compose-env.sh          # CPU: kdn runs the CPU reference
#   tools/compose-env.sh --gpu    # NVIDIA GPU: needs the NVIDIA container toolkit on the host
#
# It will not overwrite an existing .env (the MinIO data volume keeps the first credentials).
set -euo pipefail
cd "$(dirname "$0")/.."
profile=cpu
case "${1:-}" in
  --gpu) profile=gpu ;;
  '') ;;
  *) echo "usage: tools/compose-env.sh [--gpu]" >&2; exit 2 ;;
esac
if [ -e .env ]; then
  echo ".env exists; remove it first to make new secrets (and the MinIO volume: docker compose down -v)" >&2
  exit 1
fi
secret() { od -An -vtx1 -N"$1" /dev/urandom | tr -d ' \n'; }
api_key="kdn_$(secret 24)"
umask 077
cat >.env <<ENV
COMPOSE_PROFILES=$profile
MINIO_ROOT_USER=admin-$(secret 4)
MINIO_ROOT_PASSWORD=$(secret 24)
KDN_S3_ACCESS_KEY=kdn-$(secret 8)
KDN_S3_SECRET_KEY=$(secret 24)
KDN_EDGE_SECRET=$(secret 32)
KDN_API_KEYS=$api_key=default
ENV
echo "wrote .env (mode 600), profile $profile. API key for tenant \"default\": $api_key"
