#!/usr/bin/env bash
# The README's "A MONAI classifier end to end": a user's MONAI package (myclf/), its own training script, then
# medxgan train / explain with the classifier flags given once. Usage: bash benchmarks/classifier/byoc/run.sh WORKDIR
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
[ $# -ge 1 ] || { echo "usage: bash benchmarks/classifier/byoc/run.sh WORKDIR" >&2; exit 2; }
W=$1
mkdir -p "$W" && cd "$W" && cp -r "$HERE/myclf" "$HERE/train_myclf.py" "$HERE/py_example.py" .
export OMP_NUM_THREADS=1
medxgan synth brain-mri --out data/brain --n 400 --quiet
python train_myclf.py
medxgan train data/brain --classifier myclf:binary --classifier-weights clf.pt --classifier-output prob1 \
  --classifier-size 96 --classifier-channels 3 --classifier-range 0,1 \
  --classifier-mean 0.485 0.456 0.406 --classifier-std 0.229 0.224 0.225 --out runs/gan --steps 300 --no-oracle --quiet
medxgan explain data/brain/test/positive/brain_00341.png data/brain/test/positive/brain_00343.png --gan runs/gan --out expl --steps 100
python py_example.py
