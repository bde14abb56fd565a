#!/usr/bin/env bash
# The replay daemon's device runs (a CUDA host): ingest on its CPU, replay cost ratio on the GPU
# (tiny model), an interference profile (tiny and a 1.5B-shaped model) and the gpu-marked test.
#   bash bench/replay_device.sh            # results also under $OUT when set
set -u
export TRANSFORMERS_VERBOSITY=error TOKENIZERS_PARALLELISM=false PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
PY=${PY:-python3}
OUT=${OUT:-/tmp/fpmon-replay-device}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
$PY -c "import torch, transformers, zmq, msgpack, cryptography; print('torch', torch.__version__, 'transformers', transformers.__version__, 'zmq', zmq.zmq_version())" || exit 3
echo "== ingest (one core)"; taskset -c 0 $PY bench/replay_ingest.py 200000
echo "== replay cost on cuda"; $PY bench/replay_cost.py 4 32 cuda
for spec in tiny random:qwen2.5-1.5b; do
  name=${spec//[:.]/_}
  echo "== interference $spec"
  $PY -m fpmon capture --model "$spec" --device cuda --dtype bfloat16 --batch-size 8 \
    --prompt "The verifier replays a secret sample of records on reference hardware." \
    --decode-steps 32 --out "$OUT/$name.fp" >/dev/null || continue
  $PY -m fpmon replay interference --fp "$OUT/$name.fp" --model "$spec" --device cuda \
    --intensities 0.25,0.5,1.0 --repeats 5 --out "$OUT/interference-$name.json" \
    | $PY -c "import json,sys; d=json.load(sys.stdin); a=d.get('alone',{}); print('alone', a); [print(r['kind'], r['intensity'], 'slowdown %.3f' % r['slowdown'], 'identical', r['identical'], r['moved_probes'][:3]) for r in d.get('runs',[])]"
done
echo "== gpu test"; $PY -m pytest -q -p no:cacheprovider tests/unit/test_replay_interference.py 2>&1 | tail -3
