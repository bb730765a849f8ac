#!/usr/bin/env bash
# medXGAN on 64x64 brain phantoms: data, classifier, oracle, the default preset (<= 30 min of training on
# 2 CPU cores) and a shorter run of the faithful paper-64 preset; figures into benchmarks/gan/figures/.
#
#   bash benchmarks/gan/run_benchmark.sh [WORKDIR=/tmp/medxgan-gan-bench]
#
# Each step is skipped when its output already exists, so the script can be re-run after an interruption
# (the GAN runs then continue with --resume).
set -euo pipefail
W=${1:-/tmp/medxgan-gan-bench}
HERE=$(cd "$(dirname "$0")" && pwd)
FIG=$HERE/figures
mkdir -p "$W" "$FIG"
export OMP_NUM_THREADS=2

[ -d "$W/brain" ] || medxgan synth brain-mri --out "$W/brain" --n 2000
[ -f "$W/clf/model.safetensors" ] || medxgan train-classifier "$W/brain" --out "$W/clf" --device cpu
# the oracle: independent architecture and seed, never used to train the GAN (train would also do this itself)
[ -f "$W/oracle/model.safetensors" ] || medxgan train-classifier "$W/brain" --out "$W/oracle" --arch resnet-small --size 64 \
    --seed 1 --epochs 10 --device cpu

run_gan () {  # name preset steps minutes
  local resume=""
  [ -f "$W/$1/config.json" ] && resume="--resume"
  [ -f "$W/$1/generator.safetensors" ] || medxgan train "$W/brain" --classifier "$W/clf" --oracle "$W/oracle" --out "$W/$1" \
      --preset "$2" --steps "$3" --max-minutes "$4" --log-every 100 --ckpt-every 200 --device cpu $resume
}
run_gan gan-default default 4000 25
run_gan gan-paper64 paper-64 600 12

python "$HERE/plot_metrics.py" "$W/gan-default" --labels default --out "$FIG/curves_default.png"
python "$HERE/plot_metrics.py" "$W/gan-paper64" --labels paper-64 --out "$FIG/curves_paper64.png"
for r in gan-default gan-paper64; do
  last=$(ls "$W/$r/samples" | sort | tail -1)
  cp "$W/$r/samples/$last" "$FIG/samples_${r#gan-}_$last"
  python -c "import json,sys; c=json.load(open('$W/$r/config.json')); print('$r', c['steps_done'], 'steps', c['train_seconds'], 's', json.dumps(c['metrics']))"
done
