#!/usr/bin/env bash
# The hidden-work matrix of issue 13, item 7, in ONE device call (nvidia-h200-x2): installs the
# carried wheels the device image lacks into /tmp/site, records the host, runs
# bench/hidden_work_matrix.py (self-time-boxed by its --deadline-s) writing under $OUT.
#
# Run from the root of the checkout the device tool sends, with `.carry` named in carry:
#   .carry/wheels/*.whl  pyzmq, cryptography, cffi, pycparser, msgspec, tomli-w (cp312 x86_64;
#                        the image has torch, transformers, nvidia-ml-py, psutil already)
# The source tree is this script's parent folder: the checkout itself, or a `git archive` of
# the branch unpacked elsewhere (then call /tmp/src/bench/gpu_matrix.sh). Extra arguments go to
# the bench (e.g. --phases ...). Whatever happens, what the bench wrote is left under $OUT.
set -u -o pipefail
SRC=$(cd "$(dirname "$0")/.." && pwd)
WHEELS=${WHEELS:-$PWD/.carry/wheels}
SITE=${SITE:-/tmp/site}
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT/matrix"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
  --target "$SITE" "$WHEELS"/*.whl 2>&1 | tail -5 || { echo "wheels did not install"; exit 3; }
export PYTHONPATH=$SITE:$SRC PYTHONUNBUFFERED=1
cd "$SRC" || exit 1
{
  date -u
  nvidia-smi --query-gpu=index,name,uuid,driver_version,memory.used --format=csv
  # Every carried wheel imports (a missing one fails here, in seconds, not in an agent).
  python3 -c 'import sys, torch, zmq, msgspec, tomli_w, pynvml, psutil, fpmon.signing
print(sys.version.split()[0], "torch", torch.__version__, "GPUs", torch.cuda.device_count(),
      "zmq", zmq.__version__, "msgspec", msgspec.__version__, "src", fpmon.signing.__file__)'
} 2>&1 | tee "$OUT/env.log"
# The bench stops itself at --deadline-s (default 520 s) and exits 0; this outer limit only
# catches a hang (SIGTERM: the bench still writes matrix.json and stops its agents).
timeout -k 10 "${MATRIX_TIMEOUT_S:-555}" python3 bench/hidden_work_matrix.py \
  --out "$OUT/matrix" "$@" 2>&1 | tee "$OUT/matrix.log"
