#!/usr/bin/env bash
# Installs the Debian packages moepack needs, only those that are missing.
# Sourced by the other scripts; safe to run repeatedly.
set -euo pipefail

MOEPACK_APT_PACKAGES=(
  build-essential cmake pkg-config git
  libgtest-dev libgmock-dev libbenchmark-dev
  nlohmann-json3-dev libcli11-dev libxxhash-dev libre2-dev
  clang-14 libclang-rt-14-dev
  pybind11-dev python3-dev python3-numpy python3-torch python3-matplotlib python3-pytest
  python3-setuptools python3-wheel python3-pip python3-venv
  time
)

moepack_install_deps() {
  local missing=()
  for p in "${MOEPACK_APT_PACKAGES[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
      missing+=("$p")
    fi
  done
  if ((${#missing[@]})); then
    echo "moepack: installing missing packages: ${missing[*]}"
    local sudo=""
    if [ "$(id -u)" != 0 ]; then sudo="sudo"; fi
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
  fi
}
