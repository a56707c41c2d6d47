#!/usr/bin/env bash
# MixOE's fine-grained environments (experiments/mixoe_finegrained): what can be fetched
# automatically is fetched; the image datasets need accounts or manual steps, printed below.
#   scripts/download_finegrained.sh [root]     (default: data)
set -euo pipefail
root=${1:-data}
mkdir -p "$root" weights
# The lists (info/<dataset>/{train,val,test}.txt) ship with MixOE's repository.
if [ ! -d "$root/info" ]; then
  tmp=$(mktemp -d)
  git clone --depth 1 https://github.com/zjysteven/MixOE.git "$tmp/MixOE"
  cp -r "$tmp/MixOE/info" "$root/info"
  rm -rf "$tmp"
fi
# torchvision's ImageNet ResNet-50 (IMAGENET1K_V1), the baseline's starting point.
[ -f weights/resnet50-0676ba61.pth ] || \
  curl -L -o weights/resnet50-0676ba61.pth https://download.pytorch.org/models/resnet50-0676ba61.pth
cat <<MSG
Images (see MixOE's data/README.md for the exact archives):
  $root/bird/images/...            NABirds (https://dl.allaboutbirds.org/nabirds)
  $root/butterfly/images_small/... Butterfly-200, small images
  $root/car/cars_train, cars_test  Stanford Cars
  $root/aircraft/images/...        FGVC-Aircraft 2013b
  $root/WebVision/{google,flickr,info}  WebVision 1.0 resized images + info.tar
                                   (https://data.vision.ee.ethz.ch/cvl/webvision/download.html)
Then: data check --config experiments/mixoe_finegrained/baseline.toml
MSG
