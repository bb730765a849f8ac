#!/usr/bin/env bash
# Classifier benchmark: synthesise 2,000 64x64 phantoms and train the paper CNN, for both kinds.
# Usage: bash benchmarks/classifier/run.sh OUT   (OUT: a new or empty folder; records wall/CPU time, load average and
# test metrics)
set -euo pipefail
[ $# -ge 1 ] || { echo "usage: bash benchmarks/classifier/run.sh OUT (a new or empty folder)" >&2; exit 2; }
OUT=$1
if [ -e "$OUT" ] && [ -n "$(ls -A "$OUT")" ]; then echo "error: OUT $OUT is not empty (the benchmark writes fresh runs there)" >&2; exit 2; fi
mkdir -p "$OUT"
for kind in brain-mri chest-xray; do
  echo "== $kind  $(date -u +%FT%TZ)  load: $(cut -d' ' -f1-3 /proc/loadavg)"
  /usr/bin/time -f "synth wall %e s, cpu %U+%S s" medxgan synth "$kind" --out "$OUT/$kind" --n 2000 --size 64 --seed 0 --quiet
  /usr/bin/time -f "train wall %e s, cpu %U+%S s" medxgan train-classifier "$OUT/$kind" --out "$OUT/clf-$kind" --seed 0 2>&1 \
    | grep -v "it/s\|s/it" | tail -4
  echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
done
