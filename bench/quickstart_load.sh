#!/usr/bin/env bash
# The GPU quickstart (bench/quickstart.sh, docs/QUICKSTART.md run verbatim) under host
# conditions, one after another, and a side-by-side table of what the verifier said in each:
#
#   quiet   nothing else runs
#   cpu     BURNERS busy loops (default 2 per CPU: every CPU oversubscribed 2x). The node's
#           launch-bound decode needs its CPU thread: does the timing check then call an
#           honest node "slower"? (H200 x2: with 32 loops on 32 CPUs, 2.35x; docs/GPU.md)
#   gpu     bf16 matmuls at full duty in another process on the VERIFIER's GPU (its reference
#           times grow: does an honest node then look "faster than its setup allows"?)
#
# Asked by the quickstart's one timing warning on the H200 (docs/QUICKSTART.md): the lab's
# compile experiment was loading the verifier's GPU and the host's CPUs at the same time.
#
#   export PYTHONPATH=$PWD:/tmp/site; bash bench/quickstart_load.sh        # GPUs 0 and 1
#   CONDITIONS="quiet cpu" MODEL=tiny NODE_DEVICE=cpu VERIFIER_DEVICE=cpu bash bench/quickstart_load.sh
#
# OUT (default /tmp/quickstart-load) keeps one folder and log per condition; RUN_TIMEOUT_S caps
# each quickstart (default 200). Installs nothing.
set -u -o pipefail
SRC=$(cd "$(dirname "$0")/.." && pwd)
OUT=${OUT:-/tmp/quickstart-load}
PY=${PYTHON:-python3}
export REQUESTS=${REQUESTS:-16}
VERIFIER=${VERIFIER_DEVICE:-cuda:1}
BURNERS=${BURNERS:-$((2 * $(nproc)))} # busy loops of the cpu condition
mkdir -p "$OUT"
LOADPID=

start_load() {  # its own session, so one kill stops the whole group
  case $1 in
    quiet) return 0 ;;
    cpu) setsid bash -c 'for i in $(seq 1 '"$BURNERS"'); do
           '"$PY"' -c "while True: pass" & done; wait' & ;;
    gpu) setsid bash -c 'sleep 100000 | '"$PY"' -m fpmon.sidework compute 1.0 '"$VERIFIER" & ;;
    *) echo "unknown condition $1" >&2; return 2 ;;
  esac
  LOADPID=$!
  sleep 5  # the side process loads torch and starts its work
}

stop_load() {
  [ -n "$LOADPID" ] && kill -- "-$LOADPID" 2>/dev/null
  [ -n "$LOADPID" ] && wait "$LOADPID" 2>/dev/null
  LOADPID=
}
trap stop_load EXIT

for c in ${CONDITIONS:-quiet cpu gpu}; do
  rm -rf "${OUT:?}/$c"
  start_load "$c" || exit 2
  echo "=== $c: quickstart ($(date -u +%T))"
  QUICKSTART_DIR=$OUT/$c timeout -k 10 "${RUN_TIMEOUT_S:-200}" bash "$SRC/bench/quickstart.sh" \
    >"$OUT/$c.log" 2>&1
  echo "$?" >"$OUT/$c.rc"
  stop_load
  tail -n 8 "$OUT/$c.log"
done

"$PY" - "$OUT" ${CONDITIONS:-quiet cpu gpu} <<'PYEOF'
import json
import re
import sys

out, conds = sys.argv[1], sys.argv[2:]
print(f"\n{'condition':<10} {'exit':>4} {'node-a verdicts':<22} alerts (kind severity: ratio)")
for c in conds:
    rc = open(f"{out}/{c}.rc").read().strip()
    try:
        snap = json.load(open(f"{out}/{c}/fleet/snapshot.json"))
    except (OSError, ValueError):
        print(f"{c:<10} {rc:>4} no snapshot (exit 124/137: cut at RUN_TIMEOUT_S)")
        continue
    nodes = {n["node"]: n for n in snap.get("nodes", [])}
    v = nodes.get("node-a", {}).get("verdicts", {})
    counts = " ".join(f"{k}={n}" for k, n in sorted(v.items())) or "none"
    alerts = [
        f"{a['kind']} {a.get('worst_severity') or a.get('severity')}: "
        + (m.group(0) if (m := re.search(r"[0-9.]+x", a["message"])) else a["message"][:60])
        for a in snap.get("alerts", [])
    ]
    print(f"{c:<10} {rc:>4} {counts:<22} {'; '.join(alerts) or 'none'}")
PYEOF
