#!/usr/bin/env bash
# Far-OOD test sets of the OE / energy / PALM papers, from the sources their READMEs name, into
# DATA_ROOT (default: data), in the layout `kind = "classic"` reads (datasets/README.md).
# Needs curl and tar. Never run by tests. Places365: the papers use their own test subsets;
# put the images you evaluate on under $root/places365/ (see datasets/README.md).
set -euo pipefail
root="${1:-data}"
mkdir -p "$root/svhn"
cd "$root"
fetch() { # url file
  [ -f "$2" ] || { curl -fL --retry 3 -o "$2.part" "$1" && mv "$2.part" "$2"; }
}
fetch http://ufldl.stanford.edu/housenumbers/test_32x32.mat svhn/test_32x32.mat
fetch https://www.robots.ox.ac.uk/~vgg/data/dtd/download/dtd-r1.0.1.tar.gz dtd-r1.0.1.tar.gz
tar -xzf dtd-r1.0.1.tar.gz
# ODIN's LSUN-C, LSUN-R and iSUN tarballs (Liang et al. 2018), as linked by the energy README.
fetch "https://www.dropbox.com/s/fhtsw1m3qxlwj6h/LSUN.tar.gz?dl=1" LSUN.tar.gz
fetch "https://www.dropbox.com/s/moqh2wh8696c3yl/LSUN_resize.tar.gz?dl=1" LSUN_resize.tar.gz
fetch "https://www.dropbox.com/s/ssz7qxfqae0cca5/iSUN.tar.gz?dl=1" iSUN.tar.gz
for t in LSUN LSUN_resize iSUN; do tar -xzf "$t.tar.gz"; done
echo "now run: data check --classic cifar10 --suite energy --root $root"
