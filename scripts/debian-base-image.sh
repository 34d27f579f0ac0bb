#!/usr/bin/env bash
# Makes a minimal Debian image locally, for machines whose Docker engine cannot reach a
# registry: debootstrap (minbase) from the Debian mirror apt is configured with, imported under
# the given tag (debian:<codename>[-slim]).
#   bash scripts/debian-base-image.sh debian:bookworm-slim
set -euo pipefail
tag=${1:-debian:bookworm-slim}
# The suite is the tag's codename: debian:bookworm-slim -> bookworm, debian:trixie-slim -> trixie.
case "$tag" in
  debian:*) suite=${tag#debian:}; suite=${suite%%-*} ;;
  *) echo "debian-base-image: can only make debian:<codename>[-slim] images, not $tag" >&2; exit 1 ;;
esac
sudo=""
if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
if ! command -v debootstrap >/dev/null 2>&1; then
  $sudo apt-get update -q
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends debootstrap
fi
# The mirror apt already uses (deb822 or one-line sources), so this works wherever apt does.
mirror=$(grep -hs '^URIs:' /etc/apt/sources.list.d/*.sources | grep -o 'https\?://[^ ]*' | grep -v security | head -1 || true)
if [ -z "$mirror" ]; then
  # One-line sources may carry options ("deb [signed-by=...] URL suite"): take the URL.
  mirror=$(grep -hs '^deb ' /etc/apt/sources.list /etc/apt/sources.list.d/*.list | grep -o 'https\?://[^ ]*' | grep -v security | head -1 || true)
fi
mirror=${mirror:-http://deb.debian.org/debian}
rootfs=$(mktemp -d -t ordinal-rootfs-XXXXXX)
trap '$sudo rm -rf "$rootfs"' EXIT
echo "debian-base-image: debootstrap $suite from $mirror"
$sudo debootstrap --variant=minbase "$suite" "$rootfs" "$mirror" >/dev/null
$sudo rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
$sudo tar -C "$rootfs" -c . | docker import - "$tag"
echo "debian-base-image: imported $tag"
