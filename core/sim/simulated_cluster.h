#pragma once

#include <cstdint>
#include <deque>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "core/ports/cluster_executor.h"
#include "core/sim/scenario.h"
#include "reflexion/v1/types.pb.h"

namespace reflexion::sim {

// One entry of SimulatedCluster::ExecutionLog(): an action actually applied
// (deduplicated calls are not logged again).
struct ExecutedAction {
  std::string pod_name;
  std::string pod_namespace;
  reflexion::v1::ActionType type = reflexion::v1::ACTION_TYPE_UNSPECIFIED;
  std::string idempotency_key;
  std::string scenario_id;
  bool recovered = false;
  bool relapsed = false;
};

// The simulated pod's workload (SimulatedCluster's model): the values
// actions change, by ValueChange path. Bounded: a fixed set of paths per
// pod.
struct PodModel {
  std::string pod;       // "Pod/web-7d4b9c-x2k4p"
  std::string fields;    // "Deployment/web spec.template.spec.containers[app]."
  std::string revision;  // "Deployment/web revision" ("" for a bare pod)
  std::string secrets;   // "ServiceAccount/default imagePullSecrets"
  absl::flat_hash_map<std::string, std::string> values;
  int32_t ready = 0;  // ready replicas of the workload now
};

// The built-in cluster (ClusterExecutor "simulated"): a seeded,
// deterministic model of failing pods, used by default in the demo and as
// the ground truth of the learning benchmark. See scenario.h for the model.
//
// - Diagnose assigns the pod (namespace/pod_name) a scenario: a weighted
//   choice among those listing incident.error_type, else among catch-all
//   ("*") scenarios, as a pure function of (seed, namespace, pod_name,
//   error_type). It resets the pod to failing (a new incident) and returns
//   the scenario's observable signals; the root cause is never returned.
// - Execute draws the outcome as a pure function of (seed, namespace,
//   pod_name, error type of the pod's incident, action type, n) where n
//   counts the applications of that action type to the pod (1 for the
//   first), and of the scenario's action model. The idempotency key (which
//   holds a workflow id) plays no part, so with fixed seeds the same
//   incidents give the same outcomes whatever the workflow ids, the start
//   of the data dir or the thread interleaving, and the same action on the
//   same incident fares the same whichever attempt it is (policies compared
//   side by side meet the same world). A key seen before returns the first
//   result with deduplicated = true and applies nothing (n unchanged).
// - Observe reports the outcome of the pod's action in simulated seconds;
//   nothing sleeps.
// - Every applied tier-A/B action reports the values it changed
//   (ExecutionResult.changes) in the Go agent's path format, e.g.
//   "Deployment/web spec.template.spec.containers[app].resources.limits
//   .memory" 256Mi -> 384Mi, from a model of the pod's workload made at
//   Diagnose: from the pod object when the incident has one (its
//   container's image, memory limit, requests and probe timings, its
//   ReplicaSet's Deployment), else from the scenario's signals (container
//   name, default "app"; image; memory_limit_bytes, default 512Mi) with
//   fixed defaults for what signals do not say (requests cpu 250m, memory
//   256Mi; liveness probe initialDelaySeconds 10, timeoutSeconds 1;
//   readiness probe 5 and 1; revision 2; the service account "default"
//   without pull secrets). The Deployment is named after the pod without
//   its ReplicaSet hash and suffix ("web-7d4b9c-x2k4p" -> "web").
// - ACTION_TYPE_UNDO restores each `restore` entry whose path the model
//   has and whose value still equals `after` (an entry changed since is
//   left alone and named in the message), reporting the changes it made
//   (after -> before); it is refused (applied = false) when a path is not
//   one the cluster changes or nothing could be restored. Its outcome is
//   the pod's original failure (an undo of an undo re-applies the undone
//   action's outcome).
//
// Every callback is called synchronously, before the method returns, on
// the caller's thread, with no lock held (so `done` may call back in).
// Thread-safe.
class SimulatedCluster final : public core::ClusterExecutor {
 public:
  // Builds a cluster from a scenario document (scenario.h).
  // kInvalidArgument naming the scenario and field when the YAML is
  // malformed or a scenario invalid.
  static absl::StatusOr<std::unique_ptr<SimulatedCluster>> FromYaml(
      absl::string_view yaml_text, uint64_t seed);
  // As FromYaml, reading `path`; kNotFound when it cannot be read.
  static absl::StatusOr<std::unique_ptr<SimulatedCluster>> FromFile(
      const std::string& path, uint64_t seed);
  // As FromYaml with the embedded core/sim/scenarios.yaml.
  static absl::StatusOr<std::unique_ptr<SimulatedCluster>> WithDefaultScenarios(
      uint64_t seed);

  SimulatedCluster(const SimulatedCluster&) = delete;
  SimulatedCluster& operator=(const SimulatedCluster&) = delete;
  // Delivers any delayed completion at once, then joins the timer thread.
  ~SimulatedCluster() override;

  // Makes the simulated world survive restarts: every executed action is
  // appended to the journal at `path` (one line, written with write(2)
  // before Execute completes, so a killed process loses nothing), and the
  // actions already in the file are replayed now: their idempotency keys
  // stay spent (Execute returns deduplicated) and their outcomes stay
  // observable. A line is five tab-separated fields: the action (hex
  // protobuf), the scenario id, the error type, the result's message
  // and changes (hex protobuf), which replay onto the pod's model (paths
  // no recorded change touched start from the scenario's values: the pod
  // object of an incident is not journaled), and n of the outcome's draw
  // (see Execute). Lines of three or four fields (older builds, whose
  // outcomes were drawn from the idempotency key) are read too and replay
  // with that older draw. An undo that restored nothing is not journaled.
  // Call once, before use. Errors: kUnavailable when the file cannot be
  // opened, kDataLoss naming the line of a corrupt journal.
  absl::Status EnableJournal(const std::string& path) ABSL_LOCKS_EXCLUDED(mu_);

  // Completes every call `latency` later on the cluster's own timer thread
  // (a round trip to a real cluster) instead of synchronously. Call once,
  // before use; zero keeps calls synchronous.
  void SetLatency(absl::Duration latency);

  // "simulated".
  std::string Name() const override;

  // kInvalidArgument when pod_name or namespace is empty; kNotFound when no
  // scenario matches the error type and none is a catch-all.
  void Diagnose(const reflexion::v1::Incident& incident,
                core::Callback<reflexion::v1::Diagnosis> done) override;

  // kInvalidArgument for ACTION_TYPE_UNSPECIFIED or an unknown type, an
  // empty idempotency_key, patch_image without image, attach_pull_secret
  // without pull_secret, undo without undo_of or restore; kNotFound when
  // the pod was never diagnosed.
  void Execute(const reflexion::v1::Action& action,
               core::Callback<reflexion::v1::ExecutionResult> done) override;

  // Reports the outcome of `action` (matched by idempotency_key, else the
  // pod's latest action) over `window`. kInvalidArgument for a negative or
  // infinite window; kNotFound for an unknown pod; kFailedPrecondition when
  // no action was executed on the pod since its last Diagnose.
  void Observe(const reflexion::v1::Action& action, absl::Duration window,
               core::Callback<reflexion::v1::Observation> done) override;

  // For tests and benchmarks.

  // Every applied action, in order; each idempotency key appears once.
  std::vector<ExecutedAction> ExecutionLog() const ABSL_LOCKS_EXCLUDED(mu_);
  // Scenario ids in document order.
  std::vector<std::string> ScenarioIds() const;
  // The scenario assigned to the pod by its last Diagnose; kNotFound when
  // it was never diagnosed.
  absl::StatusOr<std::string> ScenarioOf(absl::string_view pod_namespace,
                                         absl::string_view pod_name) const
      ABSL_LOCKS_EXCLUDED(mu_);

 private:
  // `scenarios` must come from ParseScenarios (valid, non-empty).
  SimulatedCluster(std::vector<Scenario> scenarios, uint64_t seed);

  // The drawn result of one applied action.
  struct Outcome {
    reflexion::v1::ActionType type = reflexion::v1::ACTION_TYPE_UNSPECIFIED;
    bool recovered = false;
    bool relapsed = false;
    double time_to_recovery_s = 0;  // when recovered
    double relapse_after_s = 0;     // when relapsed, from the action
    int32_t restarts = 0;           // during the observation window
    // A planted regression: the failure reason it causes ("" when none).
    std::string regression;
    // For an undo: the key of the action undone.
    std::string undo_of;
    // Ready replicas of the workload before and after (with a workload).
    int32_t ready_before = 0;
    int32_t ready_after = 0;
  };
  struct PodState {
    size_t scenario = 0;  // index for ScenarioAt
    std::string error_type;
    // Outcomes of this incident (since the last Diagnose), by key.
    absl::flat_hash_map<std::string, Outcome> outcomes;
    std::string last_key;
    PodModel model;
    // Applications of each action type to this pod (kept across Diagnose:
    // the n of DrawKey). Bounded by the catalog's action types.
    absl::flat_hash_map<int, int64_t> applied;
  };

  // The synchronous bodies of Diagnose, Execute and Observe.
  absl::StatusOr<reflexion::v1::Diagnosis> DiagnoseNow(
      const reflexion::v1::Incident& incident) ABSL_LOCKS_EXCLUDED(mu_);
  absl::StatusOr<reflexion::v1::ExecutionResult> ExecuteNow(
      const reflexion::v1::Action& action) ABSL_LOCKS_EXCLUDED(mu_);
  absl::StatusOr<reflexion::v1::Observation> ObserveNow(
      const reflexion::v1::Action& action, absl::Duration window) const
      ABSL_LOCKS_EXCLUDED(mu_);

  // Index (for ScenarioAt) of the scenario for the incident's pod, or
  // kNotFound. An incident that carries a pod object gets a scenario whose
  // signals analyse to the same signature as the incident's own facts, or
  // the neutral scenario of that signature: the world never contradicts
  // what the pod says.
  absl::StatusOr<size_t> Assign(const reflexion::v1::Incident& incident)
      ABSL_LOCKS_EXCLUDED(mu_);
  // The scenario at `index`: scenarios_ first, then the neutral ones.
  const Scenario& ScenarioAt(size_t index) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The index of the neutral scenario of `signature` ("<family>/<cause>"):
  // no signals of its own, every action succeeding with the catalog's prior
  // for the signature. Made on first use.
  size_t NeutralFor(const std::string& signature)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The index of the scenario a journal line names (its id, or the index
  // older builds wrote); kDataLoss when there is none.
  absl::StatusOr<size_t> FromJournal(absl::string_view field)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The outcome's draws come from (seed_, `draw_key`): DrawKey of the
  // action, or for journal lines of older builds its idempotency key.
  Outcome Draw(const Scenario& scenario, const reflexion::v1::Action& action,
               absl::string_view draw_key) const;
  // What identifies the n-th application of the action's type to the pod of
  // an incident of `error_type`.
  static std::string DrawKey(const reflexion::v1::Action& action,
                             absl::string_view error_type, int64_t n);
  // Draw plus what depends on the pod's history: an undo's outcome (the
  // original failure, or for an undo of an undo the re-applied action's)
  // and the workload's ready replicas (updating state.model.ready).
  Outcome Resolve(const Scenario& scenario, const reflexion::v1::Action& action,
                  absl::string_view draw_key, PodState& state)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  // Delivers `fn` now, or after the latency on the timer thread.
  void Complete(absl::AnyInvocable<void() &&> fn);
  void TimerLoop();
  // Appends one line: the action, the scenario id, the error type and the
  // result (its changes, so a replay restores the model exactly).
  absl::Status AppendToJournal(const reflexion::v1::Action& action,
                               size_t scenario, absl::string_view error_type,
                               const reflexion::v1::ExecutionResult& result,
                               int64_t draw_n)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const std::vector<Scenario> scenarios_;
  // The signature each of scenarios_ presents (its signals, analysed).
  std::vector<std::string> signatures_;
  const uint64_t seed_;
  absl::Duration latency_;
  std::thread timer_;
  absl::Mutex timer_mu_;
  struct Delayed {
    absl::Time due;
    absl::AnyInvocable<void() &&> fn;
  };
  std::deque<Delayed> delayed_ ABSL_GUARDED_BY(timer_mu_);
  bool stopping_ ABSL_GUARDED_BY(timer_mu_) = false;
  int journal_fd_ = -1;

  mutable absl::Mutex mu_;
  // By "namespace/pod_name".
  absl::flat_hash_map<std::string, PodState> pods_ ABSL_GUARDED_BY(mu_);
  // First result of every idempotency key ever executed.
  absl::flat_hash_map<std::string, reflexion::v1::ExecutionResult> results_
      ABSL_GUARDED_BY(mu_);
  std::vector<ExecutedAction> log_ ABSL_GUARDED_BY(mu_);
  // Every executed key's outcome, kept across Diagnose (which resets the
  // pod) so a workflow resumed after a restart can still observe it.
  struct Keyed {
    size_t scenario = 0;
    std::string error_type;
    Outcome outcome;
  };
  absl::flat_hash_map<std::string, Keyed> keyed_ ABSL_GUARDED_BY(mu_);
  // Neutral scenarios (indices after scenarios_), by signature; a deque so
  // references stay valid. Bounded by the signatures the analyzer can give.
  std::deque<Scenario> neutral_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<std::string, size_t> neutral_index_ ABSL_GUARDED_BY(mu_);
};

}  // namespace reflexion::sim
