#!/usr/bin/env bash
# Runs docs/QUICKSTART.md as written: extracts every ```bash block marked `<!-- quickstart -->`
# (in order) and runs them in ONE bash with `set -euo pipefail`, in a scratch folder. The
# blocks marked `<!-- quickstart: stop -->` (they stop the services) run again on exit whatever
# happened. Then prints what the verifier said (the snapshot the doc saved) and exits non-zero
# unless the honest node got >= VERDICTS `match` verdicts and no mismatch and no critical alert.
#
#   MODEL=tiny NODE_DEVICE=cpu VERIFIER_DEVICE=cpu bash bench/quickstart.sh      # CPU (CI)
#   PYTHONPATH=<tree>:/tmp/site bash bench/quickstart.sh                          # GPUs 0 and 1
#
# Environment: every variable of the doc's first block overrides its default (MODEL,
# NODE_DEVICE, VERIFIER_DEVICE, FLEET, PORT_BASE, REQUESTS, VERDICTS, WAIT_S). PYTHON=...: run
# fpmon as `$PYTHON -m fpmon` (tests: the interpreter and tree under test), else the `fpmon` on
# PATH, else the doc's own fallback (`python3 -m fpmon`, from a source tree on PYTHONPATH).
# QUICKSTART_DIR: the scratch folder (default: a new one under $TMPDIR; kept, with the logs).
# Installs nothing.
set -uo pipefail
SRC=$(cd "$(dirname "$0")/.." && pwd)
DOC=${QUICKSTART_DOC:-$SRC/docs/QUICKSTART.md}
WORK=${QUICKSTART_DIR:-$(mktemp -d "${TMPDIR:-/tmp}/fpmon-quickstart.XXXXXX")}
mkdir -p "$WORK"
WORK=$(cd "$WORK" && pwd)
export FLEET=${FLEET:-$WORK/fleet}
export VERDICTS=${VERDICTS:-5}
JSONPY=${PYTHON:-python3} # reads the snapshot (stdlib only)
START=$SECONDS

if [ -n "${PYTHON:-}" ]; then
  # A command, not a shell function: `fpmon ... &` must be the Python process itself (its
  # pid is what the doc saves and stops).
  mkdir -p "$WORK/bin"
  printf '#!/bin/sh\nexec "%s" -m fpmon "$@"\n' "$PYTHON" >"$WORK/bin/fpmon"
  chmod 755 "$WORK/bin/fpmon"
  export PATH="$WORK/bin:$PATH"
fi

# The marked blocks: all of them into main.bash, the stop blocks also into stop.bash.
awk -v main="$WORK/main.bash" -v stop="$WORK/stop.bash" '
  BEGIN { printf "" > main; printf "" > stop }
  /^## / { heading = substr($0, 4); gsub(/[^A-Za-z0-9 .,:()_-]/, "", heading) }
  /^<!-- quickstart(: *stop)? -->[ \t]*$/ { marked = 1; isstop = ($0 ~ /stop/); next }
  marked && /^```bash[ \t]*$/ {
    inblock = 1; marked = 0; n++
    printf "echo \"### quickstart block %d: %s\"\n", n, heading >> main
    next
  }
  marked && !/^[ \t]*$/ { marked = 0 }
  inblock && /^```[ \t]*$/ { inblock = 0; next }
  inblock { print >> main; if (isstop) print >> stop }
  END { if (inblock) { print "unterminated block" > "/dev/stderr"; exit 2 }; print n }
' "$DOC" >"$WORK/blocks" || {
  echo "quickstart: cannot extract the blocks of $DOC" >&2
  exit 2
}
BLOCKS=$(cat "$WORK/blocks")
if [ "$BLOCKS" -lt 2 ] || [ ! -s "$WORK/stop.bash" ]; then
  echo "quickstart: $DOC has $BLOCKS marked blocks and no stop block" >&2
  exit 2
fi

stop_services() {
  trap - EXIT INT TERM
  (cd "$WORK" && bash "$WORK/stop.bash") || echo "quickstart: the stop block failed" >&2
}
trap stop_services EXIT
trap 'exit 130' INT TERM

echo "quickstart: $BLOCKS blocks of $DOC in $WORK (MODEL=${MODEL:-default}" \
  "NODE_DEVICE=${NODE_DEVICE:-default} VERIFIER_DEVICE=${VERIFIER_DEVICE:-default})"
(cd "$WORK" && bash -euo pipefail "$WORK/main.bash")
rc=$?
if [ "$rc" -ne 0 ] && [ ! -s "$FLEET/snapshot.json" ] && [ -f "$FLEET/monitor/monitor.toml" ]; then
  # The blocks stopped early: still show what the verifier had said by then.
  (cd "$FLEET" && PATH="$FLEET/bin:$PATH" fpmon snapshot --config monitor/monitor.toml --json \
    >"$FLEET/snapshot.json") || rm -f "$FLEET/snapshot.json"
fi
stop_services
echo "quickstart: blocks ran in $((SECONDS - START)) s, exit status $rc"
if [ "$rc" -ne 0 ]; then
  for f in "$FLEET"/logs/*.log; do
    [ -f "$f" ] || continue
    echo "--- last lines of $f"
    tail -n 15 "$f"
  done
fi

# What the verifier said: the snapshot the doc's verdicts block saved.
"$JSONPY" - "$FLEET/snapshot.json" "$VERDICTS" "$rc" <<'EOF'
import json
import sys

path, want, rc = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
try:
    with open(path) as f:
        snap = json.load(f)
except (OSError, ValueError) as e:
    print(f"quickstart: FAIL: no snapshot ({e})")
    sys.exit(1)
BAD = ("mismatch", "bad_opening", "covert_rows")
problems = [] if rc == 0 else [f"the doc's blocks exited with status {rc}"]
print("verdicts per node and status:")
nodes = {n["node"]: n for n in snap.get("nodes", [])}
for name, n in sorted(nodes.items()):
    counts = " ".join(f"{k}={v}" for k, v in sorted(n["verdicts"].items())) or "none"
    print(f"  {name:<10} {n['health']:<10} commits={n['commits']:<5} {counts}")
    for status in BAD:
        if n["verdicts"].get(status):
            problems.append(f"{name}: {n['verdicts'][status]} {status} verdict(s)")
honest = nodes.get("node-a")
matches = honest["verdicts"].get("match", 0) if honest else 0
if matches < want:
    problems.append(f"node-a: {matches} match verdict(s), wanted >= {want}")
alerts = snap.get("alerts", [])
print(f"alerts ({len(alerts)}):" if alerts else "alerts: none")
for a in alerts:
    sev = a.get("worst_severity") or a.get("severity")
    print(f"  {sev:<8} {a['kind']:<22} {a['node']:<10} x{a.get('count', 1)} {a['message'][:90]}")
    if sev == "critical":
        problems.append(f"critical alert {a['kind']} on {a['node']}")
for p in problems:
    print(f"quickstart: FAIL: {p}")
if problems:
    sys.exit(1)
print(f"quickstart: OK: node-a {matches} match verdict(s), no mismatch, no critical alert")
EOF
verdict=$?
echo "quickstart: $((SECONDS - START)) s in all; files and logs in $WORK"
exit "$verdict"
