#!/usr/bin/env bash
# medXGAN on 64x64 brain phantoms: data, classifier, the default preset (<= 25 min of training, 1 CPU
# thread on a shared 2-core machine) and a shorter run of the faithful paper-64 preset (run alongside);
# figures into benchmarks/gan/figures/.
#
#   bash benchmarks/gan/run_benchmark.sh WORKDIR
#
# Each step is skipped when its output already exists; an interrupted GAN run continues with --resume.
# One thread per process: with 2 threads on an oversubscribed machine OpenMP's barriers made a step
# 10-20x slower (measured: 8-13 s/step instead of ~0.6 s).
set -euo pipefail
[ $# -ge 1 ] || { echo "usage: bash benchmarks/gan/run_benchmark.sh WORKDIR" >&2; exit 2; }
W=$1
HERE=$(cd "$(dirname "$0")" && pwd)
FIG=$HERE/figures
mkdir -p "$W" "$FIG"
export OMP_NUM_THREADS=1

[ -d "$W/brain" ] || medxgan synth brain-mri --out "$W/brain" --n 2000
[ -f "$W/clf/model.safetensors" ] || medxgan train-classifier "$W/brain" --out "$W/clf" --device cpu

gan () {  # name preset steps minutes [extra args]
  local name=$1 preset=$2 steps=$3 minutes=$4; shift 4
  local resume=""
  [ -f "$W/$name/config.json" ] && resume="--resume"
  [ -f "$W/$name/generator.safetensors" ] || medxgan train "$W/brain" --classifier "$W/clf" --out "$W/$name" \
      --preset "$preset" --steps "$steps" --max-minutes "$minutes" --log-every 100 --ckpt-every 200 --device cpu $resume "$@"
}
# default: `medxgan train` trains the oracle itself (resnet-small, seed 1, 10 epochs) into gan-default/oracle
gan gan-default default 4000 25 &   # the recipe reported as "default" in RESULTS.md
DEF=$!
while [ ! -f "$W/gan-default/oracle/model.safetensors" ]; do sleep 10; done
# paper-64 (shorter: one step costs ~17x a default step) judged by the same oracle
gan gan-paper64 paper-64 1000 25 --oracle "$W/gan-default/oracle" --log-every 20 --ckpt-every 20
wait $DEF

python "$HERE/plot_metrics.py" "$W/gan-default" --labels default --out "$FIG/curves_default.png"
python "$HERE/plot_metrics.py" "$W/gan-paper64" --labels paper-64 --out "$FIG/curves_paper64.png"
for r in gan-default gan-paper64; do
  last=$(ls "$W/$r/samples" | sort | tail -1)
  cp "$W/$r/samples/$last" "$FIG/samples_${r#gan-}_$last"
  python -c "import json; c=json.load(open('$W/$r/config.json')); print('$r', c['steps_done'], 'steps', c['train_seconds'], 's', json.dumps(c['metrics']))"
done
