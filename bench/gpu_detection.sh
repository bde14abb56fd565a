#!/usr/bin/env bash
# Issue 14's GPU figures in ONE device call (nvidia-h200-x2), self-time-boxed (~560 s):
#   GPU 0: compile cost (bench/compile_cost.py), then covert rows with and without manifests
#          for short and long prompts (bench/covert_rows.py), then the lab's compile
#          experiment at every layer (`lab run --experiments compile` + `lab sweep`);
#   GPU 1: 1,000 honest records judged by the daemon's judge (bench/false_positives.py).
# Run from the checkout's root with `.carry` carried (.carry/wheels: pyzmq, cryptography, cffi,
# pycparser, msgspec, tomli-w for cp312; the image has torch, transformers, nvidia-ml-py).
# Everything lands under $OUT (8 files at most come back: logs are bundled into one tarball).
set -u -o pipefail
SRC=$(cd "$(dirname "$0")/.." && pwd)
OUT=${OUT:-/tmp/out}
MODEL=${MODEL:-random:qwen2.5-1.5b}
R=/tmp/r && mkdir -p $R
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
  --target /tmp/site "$SRC"/.carry/wheels/*.whl 2>&1 | tail -3
export PYTHONPATH=/tmp/site:$SRC PYTHONUNBUFFERED=1 TRANSFORMERS_VERBOSITY=error
cd "$SRC" || exit 1
{ date -u; nvidia-smi --query-gpu=index,name,driver_version --format=csv
  python3 -c 'import torch, transformers; print(torch.__version__, transformers.__version__)'
} > $R/env.log 2>&1
T0=$(date +%s)
left() { echo $(( ${1} - ($(date +%s) - T0) )); }

# --budget-s counts from after the model loads (~35 s on the H200): keep it well inside the box.
( timeout -k 5 "$(left 470)" python3 bench/false_positives.py --model "$MODEL" --device cuda:1 \
    --records 1000 --budget-s 380 --json $R/false-positives.json > $R/false-positives.log 2>&1
  echo "false_positives exit $?" >> $R/false-positives.log ) &
FP=$!

( timeout -k 5 "$(left 250)" python3 bench/compile_cost.py --model "$MODEL" --device cuda:0 \
    --repeats 3 --limit-s 240 --json $R/compile-cost.json > $R/compile-cost.log 2>&1
  echo "compile_cost exit $?" >> $R/compile-cost.log
  for words in 2,8 24,48; do
    timeout -k 5 "$(left 420)" python3 bench/covert_rows.py --device cuda:0 --model "$MODEL" \
      --dtypes bfloat16 --batches 2,4,8 --records 24 --prompt-words $words \
      --json $R/covert-rows-${words/,/-}.json >> $R/covert-rows.log 2>&1
    echo "covert_rows $words exit $?" >> $R/covert-rows.log
  done
  timeout -k 5 "$(left 540)" python3 -m fpmon.lab lab run --model "$MODEL" --device cuda:0 \
    --layers all --keys-keep 128 --prompts 64 --experiments repeat,compile --part compile \
    --budget-s 100 --out /tmp/labc > $R/lab-compile.log 2>&1
  echo "lab run exit $?" >> $R/lab-compile.log
  timeout -k 5 "$(left 555)" python3 -m fpmon.lab lab sweep /tmp/labc --json $R/sweep-compile.json \
    --report $R/sweep-compile.md >> $R/lab-compile.log 2>&1
  echo "lab sweep exit $?" >> $R/lab-compile.log ) &
G0=$!
wait $G0 $FP
echo "done after $(( $(date +%s) - T0 )) s" >> $R/env.log
tar -czf "$OUT/detection.tgz" -C $R .
cp $R/*.log "$OUT/" 2>/dev/null
tail -n 30 $R/compile-cost.log $R/false-positives.log $R/covert-rows.log $R/lab-compile.log
