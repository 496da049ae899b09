#!/usr/bin/env bash
# Installs the Debian packages Strata builds with, only those missing (idempotent, ~20 s when
# all are missing). Runs as root or through sudo. TOOLCHAIN.md lists versions and why each is here.
set -euo pipefail

packages=(
  build-essential cmake pkg-config git python3
  python3-venv                        # scripts/test.sh --interop: the pinned torch / transformers
  openmpi-bin libopenmpi-dev          # MPI: the launcher and the communicator backend
  libyaml-cpp-dev                     # experiment configs
  libabsl-dev                         # Status / StatusOr, strings
  libgtest-dev libgmock-dev           # tests
  libbenchmark-dev                    # bench/
  libopenblas-dev                     # CPU GEMM
  nlohmann-json3-dev                  # manifests, metrics, tokenizer.json
  libpcre2-dev                        # tokenizer pre-tokenizer regexes
  libicu-dev                          # tokenizer NFC normalisation, Unicode properties
  libcli11-dev                        # the command line
)

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "setup: all ${#packages[@]} packages present"
  exit 0
fi

sudo=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "setup: need root or sudo to install: ${missing[*]}" >&2; exit 1; }
  sudo="sudo"
fi
echo "setup: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
echo "setup: done"
