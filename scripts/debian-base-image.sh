#!/usr/bin/env bash
# Makes a minimal Debian image locally, for machines whose Docker engine cannot reach a
# registry: debootstrap (minbase) from the Debian mirror apt is configured with, imported under
# the given tag. Only Debian bookworm tags are made this way (the Dockerfile's default base).
#   bash scripts/debian-base-image.sh debian:bookworm-slim
set -euo pipefail
tag=${1:-debian:bookworm-slim}
case "$tag" in
  debian:bookworm*) suite=bookworm ;;
  *) echo "debian-base-image: can only make debian:bookworm images, not $tag" >&2; exit 1 ;;
esac
sudo=""
if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
if ! command -v debootstrap >/dev/null 2>&1; then
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends debootstrap
fi
# The mirror apt already uses (deb822 or one-line sources), so this works wherever apt does.
mirror=$(grep -hs '^URIs:' /etc/apt/sources.list.d/*.sources | awk '{print $2}' | grep -v security | head -1 || true)
if [ -z "$mirror" ]; then
  mirror=$(grep -hs '^deb ' /etc/apt/sources.list /etc/apt/sources.list.d/*.list | awk '{print $2}' | grep -v security | head -1 || true)
fi
mirror=${mirror:-http://deb.debian.org/debian}
rootfs=$(mktemp -d -t ordinal-rootfs-XXXXXX)
trap '$sudo rm -rf "$rootfs"' EXIT
echo "debian-base-image: debootstrap $suite from $mirror"
$sudo debootstrap --variant=minbase "$suite" "$rootfs" "$mirror" >/dev/null
$sudo rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
$sudo tar -C "$rootfs" -c . | docker import - "$tag"
echo "debian-base-image: imported $tag"
