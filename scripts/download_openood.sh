#!/usr/bin/env bash
# OpenOOD v1.5 image lists and image archives. OpenOOD hosts them on Google Drive; its own
# script (openood/scripts/download/download.py, which uses gdown) knows every archive id.
# This helper fetches the lists (`benchmark_imglist.zip`, Drive id below, METHODS §9.7) and
# tells you how to fetch the images with OpenOOD's script. Never run by tests.
set -euo pipefail
root="${1:-data}"
mkdir -p "$root"
command -v gdown >/dev/null || { echo "pip install gdown first"; exit 1; }
cd "$root"
[ -f benchmark_imglist.zip ] || gdown 1lI1j0_fDDvjIt9JlWAw09X8ks-yrR_H1 -O benchmark_imglist.zip
unzip -qo benchmark_imglist.zip
cat <<MSG
Image lists are in $root/benchmark_imglist/.
For the images, run OpenOOD's downloader (it places images_classic/ and images_largescale/):
  git clone https://github.com/Jingkang50/OpenOOD && cd OpenOOD
  python scripts/download/download.py --contents datasets --datasets ood_v1.5 \\
      --save_dir $root --dataset_mode benchmark
Then: data check --openood cifar10 --root $root
MSG
