#!/usr/bin/env bash
# Builds the Ordinal image (tag: $ORDINAL_IMAGE, default ordinal:latest) from the binaries cargo
# builds here: builds them (PROFILE=release, the default, or PROFILE=debug), copies them stripped
# into dist/, makes sure the Dockerfile's base image exists (pulled from a registry, or, where
# there is none, made locally from Debian's packages by scripts/debian-base-image.sh), and runs
# `docker build`.
#   bash scripts/docker-image.sh                    # release binaries, ordinal:latest
#   PROFILE=debug ORDINAL_IMAGE=ordinal:ci bash scripts/docker-image.sh
set -euo pipefail
cd "$(dirname "$0")/.."
profile=${PROFILE:-release}
image=${ORDINAL_IMAGE:-ordinal:latest}
command -v docker >/dev/null 2>&1 || { echo "docker-image: docker is not installed" >&2; exit 1; }

bash scripts/setup.sh
case "$profile" in
  release) cargo build --release -p ordinal-node -p ordinal-client; bin=target/release ;;
  debug) cargo build -p ordinal-node -p ordinal-client; bin=target/debug ;;
  *) echo "docker-image: PROFILE must be release or debug" >&2; exit 1 ;;
esac
rm -rf dist
mkdir -p dist
for binary in ordinal-node ordinal; do
  # Debug information is for profiling on the host; the image does not need it.
  strip --strip-debug -o "dist/$binary" "$bin/$binary"
done

base=$(sed -n 's/^ARG BASE_IMAGE=//p' Dockerfile)
# Binaries built on a newer Debian need that release's glibc: use the host's own codename.
if [ -z "${BASE_IMAGE:-}" ] && [ -r /etc/os-release ] && grep -q '^ID=debian' /etc/os-release; then
  codename=$(sed -n 's/^VERSION_CODENAME=//p' /etc/os-release)
  if [ -n "$codename" ]; then base="debian:${codename}-slim"; fi
fi
base=${BASE_IMAGE:-$base}
if ! docker image inspect "$base" >/dev/null 2>&1; then
  if ! docker pull "$base" 2>/dev/null; then
    echo "docker-image: cannot pull $base (no registry?); making it from Debian's packages"
    bash scripts/debian-base-image.sh "$base"
  fi
fi
docker build --build-arg "BASE_IMAGE=$base" -t "$image" .
echo "image: $image"
