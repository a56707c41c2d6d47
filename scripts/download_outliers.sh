#!/usr/bin/env bash
# 300K Random Images (Hendrycks et al.), the OE README's public replacement for 80M Tiny
# Images: uint8 (300000, 32, 32, 3), ~922 MB. Checks the md5 published by pytorch-ood.
# Never run by tests.
set -euo pipefail
root="${1:-data}"
mkdir -p "$root"
out="$root/300K_random_images.npy"
if [ ! -f "$out" ]; then
  curl -fL --retry 3 -o "$out.part" https://people.eecs.berkeley.edu/~hendrycks/300K_random_images.npy
  mv "$out.part" "$out"
fi
echo "64ca64357de98351f28454274a112dc3  $out" | md5sum -c -
