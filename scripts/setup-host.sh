#!/usr/bin/env bash
# Installs the host packages obdkit needs on Debian 12 (run as root). Idempotent.
set -euo pipefail
pkgs=(
  runc fuse3 e2fsprogs util-linux docker-registry skopeo fio lz4 zstd debootstrap busybox-static
  apache2-utils protobuf-compiler xz-utils bzip2 openssl ca-certificates curl
  # shared libraries of the reference overlaybd tools used by the test suite
  libaio1 libcurl4 libnl-3-200 libnl-genl-3-200 libyaml-cpp0.7 libzstd1 libssl3
)
missing=()
for p in "${pkgs[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq -o DPkg::Lock::Timeout=600 "${missing[@]}"
fi
