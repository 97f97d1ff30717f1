#!/usr/bin/env bash
# End-to-end smoke test through the real binaries, as a user runs them.
#   cli_smoke_test.sh SERVER CTL MODE [BUF]
# MODE cli: reflexionctl commands; MODE buf: buf curl with server reflection
# (exit 77 = skipped when no buf is given).
set -euo pipefail
server=$1 ctl=$2 mode=$3 buf=${4:-}
if [[ $mode == buf && -z $buf ]]; then
  echo "SKIP: no buf CLI configured (scripts/test installs it)"
  exit 77
fi
work=$(mktemp -d)
pid=
cleanup() {
  if [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null; then kill -KILL "$pid"; fi
  rm -rf "$work"
}
trap cleanup EXIT
fail() { echo "FAIL: $*"; echo "--- server log"; cat "$work/server.log" || true; exit 1; }
# expect PATTERN NAME CMD...: CMD succeeds and its output matches PATTERN.
# (No pipes into grep -q: under pipefail an early grep exit fails the CMD.)
expect() {
  local pattern=$1 name=$2; shift 2
  "$@" >"$work/out" 2>&1 || { cat "$work/out"; fail "$name: command failed"; }
  grep -q -- "$pattern" "$work/out" || { cat "$work/out"; fail "$name"; }
}

if [[ $mode == cli ]]; then
  # A config whose key is not a string is our error naming the key, exit 1
  # (it once escaped as an uncaught yaml-cpp exception: abort, exit 134).
  printf '? :\n' >"$work/bad.yaml"
  set +e
  "$server" --config "$work/bad.yaml" --port 0 --data_dir "$work/bad-data" \
    2>"$work/bad-config.txt"
  rc=$?
  set -e
  [[ $rc == 1 ]] || { cat "$work/bad-config.txt"; fail "bad config exit code $rc"; }
  grep -q "bad.yaml: config: the key at line 1 must be a string" \
    "$work/bad-config.txt" || { cat "$work/bad-config.txt"; fail "bad config message"; }
fi

"$server" --host 127.0.0.1 --port 0 --data_dir "$work/data" \
  --port_file "$work/port" 2>"$work/server.log" &
pid=$!
for _ in $(seq 1 100); do [[ -s $work/port ]] && break; sleep 0.1; done
[[ -s $work/port ]] || fail "server did not start"
addr=127.0.0.1:$(cat "$work/port")
grep -q "executor: simulated" "$work/server.log" || fail "startup log does not name the executor"
grep -q "reflector: heuristic" "$work/server.log" || fail "startup log does not name the reflector"

if [[ $mode == cli ]]; then
  expect '^SERVING$' "health" "$ctl" --server "$addr" health
  expect '^audit chain OK: 0 entries from anchor 0$' "audit verify" \
    "$ctl" --server "$addr" audit --verify
  "$ctl" --server "$addr" process --pod web-1 --namespace default \
    --error_type ImagePullBackOff >"$work/process.txt" || fail "process exit code"
  grep -q "analyze_error" "$work/process.txt" || fail "no analyze_error event line"
  grep -q "^result wf-" "$work/process.txt" || fail "no result line"
  "$ctl" --server "$addr" -o json process --pod web-2 --namespace default \
    --error_type Segfault >"$work/process.json" || fail "json process exit code"
  grep -q '"node":"deep_analysis"' "$work/process.json" || fail "Segfault skipped deep analysis"
  # A real pod object on standard input, as `kubectl get pod P -o json |
  # reflexionctl diagnose -f -`: an OOM kill inside CrashLoopBackOff is an OOM
  # of the named container, fixed by a memory raise; a typo in the registry
  # host is an unreachable registry, not an auth problem.
  pods=$(cd "$(dirname "$0")/../testdata/pods" && pwd)
  expect "signature  OOMKilled/memory_limit_too_low  (container memory-demo-2-ctr)" \
    "diagnose OOM signature" \
    bash -c "\"$ctl\" --server $addr diagnose -f - < $pods/oom-in-crashloop.pod.json"
  grep -q "^first      run increase_memory_limit" "$work/out" || { cat "$work/out"; fail "diagnose OOM action"; }
  expect "signature  ImagePullBackOff/registry_unreachable  (container orders)" \
    "diagnose registry typo" \
    "$ctl" --server "$addr" diagnose -f "$pods/imagepullbackoff-registry-host-typo.pod.json" \
    --events "$pods/imagepullbackoff-registry-host-typo.events.json"
  grep -q "registry_auth" "$work/out" && { cat "$work/out"; fail "registry typo called auth"; }
  expect '"result":{"workflow_id":"wf-' "json result" tail -n 1 "$work/process.json"
  set +e
  "$ctl" --server "$addr" process --pod Bad_Pod --error_type OOMKilled 2>"$work/bad.txt"
  rc=$?
  set -e
  [[ $rc == 2 ]] || fail "bad pod name exit code $rc"
  grep -q "incident.pod_name" "$work/bad.txt" || fail "rejection does not name the field"
  expect "patch_image" "strategies" "$ctl" --server "$addr" strategies
  expect '"strategies"' "strategies json" "$ctl" --server "$addr" -o json strategies
  expect "attempt 1" "episodes" "$ctl" --server "$addr" episodes
  expect '"episodes"' "episodes json" "$ctl" --server "$addr" -o json episodes
  expect "ImagePullBackOff" "metrics" "$ctl" --server "$addr" metrics
  expect '"incidents": "2"' "metrics json" "$ctl" --server "$addr" -o json metrics
  expect '^2 incidents and' "patterns" "$ctl" --server "$addr" patterns
  expect '^  ImagePullBackOff/.*posterior$' "patterns effectiveness" \
    "$ctl" --server "$addr" patterns --signature ImagePullBackOff --window 5m
  expect '"effectiveness"' "patterns json" "$ctl" --server "$addr" -o json patterns
  expect 'analyze_error -.-> deep_analysis' "graph" "$ctl" graph
  "$ctl" --server "$addr" start --pod api-9 --namespace default \
    --error_type OOMKilled >"$work/id.txt" || fail "start"
  id=$(cat "$work/id.txt")
  [[ $id == wf-* ]] || fail "start printed no workflow id: $id"
  settle() {
    for _ in $(seq 1 50); do
      "$ctl" --server "$addr" status "$id" >"$work/status.txt" 2>&1 || true
      grep -q "COMPLETED\|WAITING" "$work/status.txt" && break
      sleep 0.1
    done
  }
  settle
  if grep -q "^$id: WAITING" "$work/status.txt"; then
    # Escalated: a human decides, and it completes.
    expect "resumed $id" "resume" "$ctl" --server "$addr" resume "$id" \
      --decision give_up --note "smoke test"
    settle
  fi
  grep -q "^$id: COMPLETED" "$work/status.txt" || fail "status: $(cat "$work/status.txt")"
  grep -q "^result $id" "$work/status.txt" || fail "status shows no result"
  expect "next __end__" "history" "$ctl" --server "$addr" history "$id"
  # Time travel: fork from the oldest checkpoint kept, trying another fix.
  oldest=$("$ctl" --server "$addr" history "$id" | tail -n 1 | awk '{print $2}')
  [[ $oldest =~ ^[0-9]+$ ]] || fail "history shows no step: $oldest"
  expect "forked from $id step $oldest" "fork" "$ctl" --server "$addr" fork "$id" \
    --step "$oldest" --strategy increase_memory_limit
  set +e
  "$ctl" --server "$addr" fork "$id" 2>"$work/fork.txt"
  rc=$?
  set -e
  [[ $rc == 2 ]] || fail "fork without --step exit code $rc"
  expect "^result $id" "watch replays a finished workflow" \
    "$ctl" --server "$addr" watch "$id"
  expect "analyze_error" "watch shows the node events" \
    "$ctl" --server "$addr" watch "$id" --from 1
  set +e
  "$ctl" --server "$addr" cancel "$id" 2>"$work/cancel.txt"
  rc=$?
  set -e
  [[ $rc == 1 ]] || fail "cancel of a finished workflow exit code $rc"
  grep -q "FAILED_PRECONDITION" "$work/cancel.txt" || fail "cancel: $(cat "$work/cancel.txt")"
else
  curl=("$buf" curl --protocol grpc --http2-prior-knowledge)
  "${curl[@]}" --list-methods "http://$addr" >"$work/methods.txt" || fail "buf curl --list-methods"
  grep -q "reflexion.v1.ReflexionService/Resolve" "$work/methods.txt" || fail "reflection lists no Resolve"
  expect '"SERVING"' "health via buf curl" "${curl[@]}" \
    -d '{"service":"reflexion.v1.ReflexionService"}' \
    "http://$addr/grpc.health.v1.Health/Check"
  "${curl[@]}" -d '{"pod_name":"web-1","namespace":"default","error_type":"ImagePullBackOff"}' \
    "http://$addr/reflexion.v1.ReflexionService/ProcessIncident" >"$work/result.json" \
    || fail "ProcessIncident via buf curl"
  for key in workflowId finalStrategy selectionReason reflexionSummary resolutionTime; do
    grep -q "\"$key\"" "$work/result.json" || fail "ProcessIncident result lacks $key"
  done
  set +e
  "${curl[@]}" -d '{"pod_name":"","namespace":"default","error_type":"ImagePullBackOff"}' \
    "http://$addr/reflexion.v1.ReflexionService/ProcessIncident" >"$work/bad.json" 2>&1
  rc=$?
  set -e
  [[ $rc != 0 ]] || fail "empty pod_name accepted"
  grep -qi "invalid_argument" "$work/bad.json" || fail "empty pod_name: not INVALID_ARGUMENT"
fi

kill -TERM "$pid"
wait "$pid" || fail "server exited non-zero after SIGTERM"
pid=
grep -q "stopped cleanly" "$work/server.log" || fail "no clean stop"
if [[ $mode == cli ]]; then
  # Approvals: every choice is below this threshold, so each asks a human.
  printf 'reflexion:\n  below_threshold: ask\n  strategy_confidence_threshold: 0.999\n' \
    >"$work/ask.yaml"
  "$server" --host 127.0.0.1 --port 0 --data_dir "$work/ask-data" \
    --config "$work/ask.yaml" --port_file "$work/ask-port" 2>"$work/ask.log" &
  pid=$!
  for _ in $(seq 1 100); do [[ -s $work/ask-port ]] && break; sleep 0.1; done
  [[ -s $work/ask-port ]] || fail "approval server did not start"
  addr=127.0.0.1:$(cat "$work/ask-port")
  for verb in approve deny; do
    id=$("$ctl" --server "$addr" start --pod "ask-$verb" --namespace default \
      --error_type OOMKilled) || fail "start ($verb)"
    settle
    grep -q "^$id: WAITING" "$work/status.txt" || fail "no approval wait: $(cat "$work/status.txt")"
    grep -q "approval" "$work/status.txt" || fail "status does not name the approval: $(cat "$work/status.txt")"
    past=$([[ $verb == approve ]] && echo approved || echo denied)
    expect "$past $id" "$verb" "$ctl" --server "$addr" "$verb" "$id" --note "smoke test"
  done
  kill -TERM "$pid"
  wait "$pid" || fail "approval server exited non-zero after SIGTERM"
  pid=

  # Authentication: a non-loopback host without auth is refused, naming the
  # flag; with a tokens file the CLI needs --token or REFLEXION_TOKEN.
  set +e
  "$server" --host 0.0.0.0 --port 0 --data_dir "$work/open-data" 2>"$work/open.log"
  rc=$?
  set -e
  [[ $rc == 1 ]] || fail "0.0.0.0 without auth started (exit $rc)"
  grep -q -- "--insecure_listen" "$work/open.log" || { cat "$work/open.log"; fail "refusal does not name the flag"; }
  token=smoke-operator-token-1
  hash=$(printf %s "$token" | sha256sum | cut -d' ' -f1)
  printf 'tokens:\n  - sha256: %s\n    principal: smoke-ops\n    role: operator\n' "$hash" \
    >"$work/tokens.yaml"
  printf 'service:\n  shutdown_drain: 0\nauth:\n  tokens_file: %s\n' "$work/tokens.yaml" >"$work/auth.yaml"
  "$server" --host 127.0.0.1 --port 0 --data_dir "$work/auth-data" \
    --config "$work/auth.yaml" --port_file "$work/auth-port" 2>"$work/auth.log" &
  pid=$!
  for _ in $(seq 1 100); do [[ -s $work/auth-port ]] && break; sleep 0.1; done
  [[ -s $work/auth-port ]] || fail "auth server did not start"
  addr=127.0.0.1:$(cat "$work/auth-port")
  expect '^SERVING$' "anonymous health" "$ctl" --server "$addr" health
  set +e
  "$ctl" --server "$addr" metrics >"$work/out" 2>&1
  rc=$?
  set -e
  [[ $rc == 1 ]] && grep -q "UNAUTHENTICATED: missing bearer token" "$work/out" ||
    { cat "$work/out"; fail "metrics without a token"; }
  expect "workflows (stored)" "metrics --token" "$ctl" --server "$addr" --token "$token" metrics
  expect "^result wf-" "process with REFLEXION_TOKEN" env REFLEXION_TOKEN="$token" \
    "$ctl" --server "$addr" process --pod web-9 --namespace default --error_type OOMKilled
  kill -TERM "$pid"
  wait "$pid" || fail "auth server exited non-zero after SIGTERM"
  pid=
  ! grep -q "$token" "$work/auth.log" || fail "the token is in the server log"
fi
echo "PASS ($mode)"
