#!/usr/bin/env bash
# Install the Debian packages mithril-cache needs, when any is missing.
# Run as root (or with sudo available); a no-op when all are present.
set -euo pipefail

pkgs=(
    build-essential cmake pkg-config  # compiler and build
    libzstd-dev                       # blob compression
    liblmdb-dev                       # the index
    libhiredis-dev                    # the Redis tier client
    redis-server redis-tools          # real Redis for tests and bench
    b3sum                             # BLAKE3 reference for tests, bench
    zstd                              # the zstd anchor in the bench
    clang clang-format                # lint, fuzzing
    libclang-rt-14-dev                # libFuzzer and sanitizer runtimes
    valgrind                          # leak checks
)

missing=()
for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" \
        || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
    exit 0
fi

echo "install-deps: installing ${missing[*]}"
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}"
