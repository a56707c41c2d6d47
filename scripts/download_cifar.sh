#!/usr/bin/env bash
# Download and extract the CIFAR-10 and CIFAR-100 binary versions (official, University of
# Toronto) into DATA_ROOT (default: data). Needs curl and tar. Never run by tests.
set -euo pipefail
root="${1:-data}"
mkdir -p "$root"
cd "$root"
for name in cifar-10-binary cifar-100-binary; do
  if [ ! -f "$name.tar.gz" ]; then
    curl -fL --retry 3 -o "$name.tar.gz.part" "https://www.cs.toronto.edu/~kriz/$name.tar.gz"
    mv "$name.tar.gz.part" "$name.tar.gz"
  fi
  tar -xzf "$name.tar.gz"
done
echo "CIFAR binaries in $root/cifar-10-batches-bin and $root/cifar-100-binary"
