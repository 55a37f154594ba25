#!/usr/bin/env bash
# Downloads Debian's Vulkan loader (libvulkan1, amd64) into .gl/ for scripts/gpu-check.sh to
# carry to a machine that has a GPU driver but no loader. Needs apt and the network.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .gl /tmp/recur-apt-amd64/partial
o='-oAPT::Architecture=amd64 -oAPT::Architectures=amd64 -oDir::State::Lists=/tmp/recur-apt-amd64'
apt-get $o update -qq
(cd .gl && apt-get $o download libvulkan1)
ls -l .gl
