#!/usr/bin/env bash
# Runs the LangGraph.js reference benchmark (../shared/bench/langgraph/bench.mjs)
# and our engine_bench on the same inputs, one after the other on this
# machine, and prints both figures side by side with the ratios.
#
#   bench/compare_langgraph.sh                     # n=20000, seq and conc
#   bench/compare_langgraph.sh --n 2000 --modes seq --no-memory
#
# Options:
#   --n N            workflows per run (default 20000)
#   --modes "A B"    modes to run (default "seq conc")
#   --conc C         batch size in conc mode (default 64)
#   --no-memory      skip the LangGraph MemorySaver reference runs
#   --out DIR        keep the raw JSON results there (default: a temp dir)
# Environment:
#   ENGINE_BENCH     the engine_bench binary (default build-bench/bench/engine_bench,
#                    configured and built when missing)
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
LG="$REPO/../shared/bench/langgraph"
N=20000
MODES="seq conc"
CONC=64
MEMORY=1
OUT=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --n) N="$2"; shift 2 ;;
    --modes) MODES="$2"; shift 2 ;;
    --conc) CONC="$2"; shift 2 ;;
    --no-memory) MEMORY=0; shift ;;
    --out) OUT="$2"; shift 2 ;;
    *) echo "unknown option $1" >&2; exit 1 ;;
  esac
done
[[ -n "$OUT" ]] || OUT="$(mktemp -d /tmp/compare_langgraph.XXXXXX)"
mkdir -p "$OUT"

BIN="${ENGINE_BENCH:-$REPO/build-bench/bench/engine_bench}"
if [[ ! -x "$BIN" ]]; then
  echo "building engine_bench..." >&2
  cmake -S "$REPO" -B "$REPO/build-bench" -DCMAKE_BUILD_TYPE=Release \
    -DREFLEXION_TEST_MODULES="graph" >&2
  cmake --build "$REPO/build-bench" --target engine_bench -j2 >&2
  BIN="$REPO/build-bench/bench/engine_bench"
fi

if [[ ! -d "$LG/node_modules" ]]; then
  echo "installing LangGraph.js in $LG..." >&2
  # npm ci follows the lock file exactly and never rewrites it.
  if [[ -f "$LG/package-lock.json" ]]; then
    (cd "$LG" && npm ci --no-audit --no-fund) >&2
  else
    (cd "$LG" && npm install --no-audit --no-fund) >&2
  fi
fi

# One JSON line per run, named <engine>-<ckpt>-<mode>.json.
run_lg() {  # mode ckpt
  echo "LangGraph.js n=$N mode=$1 ckpt=$2..." >&2
  (cd "$LG" && node --expose-gc bench.mjs --n "$N" --mode "$1" --ckpt "$2" \
    --conc "$CONC" --json) | tail -n 1 >"$OUT/langgraph-$2-$1.json"
}
run_ours() {  # mode
  echo "engine_bench n=$N mode=$1 ckpt=none..." >&2
  "$BIN" --n "$N" --mode "$1" --conc "$CONC" --ckpt none --json |
    tail -n 1 >"$OUT/ours-none-$1.json"
}
for mode in $MODES; do
  run_ours "$mode"
  run_lg "$mode" none
  if [[ "$MEMORY" == 1 ]]; then run_lg "$mode" memory; fi
done

node - "$OUT" $MODES <<'EOF'
const fs = require("fs");
const os = require("os");
const [dir, ...modes] = process.argv.slice(2);
const load = (f) => {
  try { return JSON.parse(fs.readFileSync(`${dir}/${f}.json`, "utf8")); }
  catch { return null; }
};
const fmt = (x) => x == null ? "-" : (typeof x === "number" ? String(+x.toFixed(4)) : String(x));
const ratio = (a, b) => a && b ? (a / b).toFixed(1) + "x" : "-";
console.log(`machine: ${os.cpus().length} cpus (${os.cpus()[0]?.model}), load average ` +
            os.loadavg().map((x) => x.toFixed(2)).join(" ") + ` at the end; node ${process.version}`);
for (const mode of modes) {
  const ours = load(`ours-none-${mode}`);
  const lg = load(`langgraph-none-${mode}`);
  const lgm = load(`langgraph-memory-${mode}`);
  if (!ours || !lg) { console.log(`${mode}: missing results in ${dir}`); process.exitCode = 1; continue; }
  const conc = mode === "conc" ? `(${ours.concurrency})` : "";
  console.log(`\nn=${ours.n} mode=${mode}${conc}, engine_bench threads=${ours.threads}`);
  // [label, field, ratio direction: +1 ours/LG (higher is better), -1 LG/ours]
  const rows = [
    ["workflows/s", "workflows_per_s", 1],
    ["node steps/s", "node_steps_per_s", 1],
    ["latency mean ms", "lat_mean_ms", -1],
    ["latency p50 ms", "lat_p50_ms", -1],
    ["latency p99 ms", "lat_p99_ms", -1],
    ["latency max ms", "lat_max_ms", -1],
    ["peak RSS MB (kernel)", "max_rss_mb_kernel", -1],
    ["step mismatches", "step_mismatches", 0],
  ];
  const w = [22, 14, 14, 16, 16];
  const line = (c) => c.map((x, i) => String(x).padStart(w[i] ?? 14)).join(" ");
  console.log(line(["", "ours none", "LangGraph none", "LangGraph memory", "ours vs LG none"]));
  for (const [label, f, dirn] of rows) {
    const r = dirn === 1 ? ratio(ours[f], lg[f]) : dirn === -1 ? ratio(lg[f], ours[f]) : "";
    console.log(line([label, fmt(ours[f]), fmt(lg[f]), fmt(lgm?.[f]), r]));
  }
}
console.log(`\nratios: throughput ours/LangGraph, latency and RSS LangGraph/ours (higher = ours better). Raw JSON: ${dir}`);
EOF
