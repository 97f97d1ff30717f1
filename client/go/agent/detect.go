package agent

import (
	"fmt"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Waiting reasons that make a pod failing.
var failingWaitingReasons = map[string]bool{
	"CrashLoopBackOff":           true,
	"ImagePullBackOff":           true,
	"ErrImagePull":               true,
	"CreateContainerConfigError": true,
	"CreateContainerError":       true,
	"InvalidImageName":           true,
}

// Failure is why a pod is failing.
type Failure struct {
	// Reason: a waiting reason, "OOMKilled" or "Unschedulable".
	Reason string
	// Container it is about ("" for Unschedulable).
	Container string
	Message   string
}

// DetectFailure reports whether the pod is failing and why: a container
// waiting with one of the failing reasons (CrashLoopBackOff,
// ImagePullBackOff, ErrImagePull, CreateContainerConfigError,
// CreateContainerError, InvalidImageName), a last termination OOMKilled
// with restarts, or Pending with PodScheduled=False reason Unschedulable.
// A container crash-looping after OOM kills is OOMKilled. A pod being
// deleted is not failing (its controller replaces it).
func DetectFailure(p *Pod) (Failure, bool) {
	if p.Metadata.DeletionTimestamp != nil {
		return Failure{}, false
	}
	for _, cs := range p.Status.ContainerStatuses {
		if w := cs.State.Waiting; w != nil && failingWaitingReasons[w.Reason] {
			if t := cs.LastState.Terminated; w.Reason == "CrashLoopBackOff" && t != nil && t.Reason == "OOMKilled" {
				continue // crash-looping because of OOM kills: reported as OOMKilled below
			}
			return Failure{Reason: w.Reason, Container: cs.Name, Message: w.Message}, true
		}
	}
	for _, cs := range p.Status.ContainerStatuses {
		if t := cs.LastState.Terminated; t != nil && t.Reason == "OOMKilled" && cs.RestartCount > 0 {
			return Failure{Reason: "OOMKilled", Container: cs.Name,
				Message: fmt.Sprintf("OOMKilled (exit code %d), %d restarts", t.ExitCode, cs.RestartCount)}, true
		}
	}
	if p.Status.Phase == "Pending" {
		for _, c := range p.Status.Conditions {
			if c.Type == "PodScheduled" && c.Status == "False" && c.Reason == "Unschedulable" {
				return Failure{Reason: "Unschedulable", Message: c.Message}, true
			}
		}
	}
	return Failure{}, false
}

// PodHealthy reports phase Running, condition Ready True, and every
// container running (only container `only` when it is not "").
func PodHealthy(p *Pod, only string) bool {
	if p.Metadata.DeletionTimestamp != nil || p.Status.Phase != "Running" {
		return false
	}
	ready := false
	for _, c := range p.Status.Conditions {
		if c.Type == "Ready" && c.Status == "True" {
			ready = true
		}
	}
	if !ready {
		return false
	}
	seen := 0
	for _, cs := range p.Status.ContainerStatuses {
		if only != "" && cs.Name != only {
			continue
		}
		seen++
		if cs.State.Running == nil {
			return false
		}
	}
	return seen > 0 && (only != "" || seen >= len(p.Spec.Containers))
}

// workloadKey names the workload the pod belongs to: "Deployment/NAME" for
// a pod of a Deployment's ReplicaSet (by Kubernetes' naming: the
// ReplicaSet is NAME-<pod-template-hash>), "KIND/NAME" for another
// controller, "Pod/UID" for a bare pod.
func workloadKey(p *Pod) string {
	ref := p.Metadata.controller()
	if ref == nil {
		return "Pod/" + p.Metadata.UID
	}
	if ref.Kind == "ReplicaSet" {
		if h := p.Metadata.Labels["pod-template-hash"]; h != "" && strings.HasSuffix(ref.Name, "-"+h) {
			return "Deployment/" + strings.TrimSuffix(ref.Name, "-"+h)
		}
	}
	return ref.Kind + "/" + ref.Name
}

// episodeState is where an episode's incident is.
type episodeState int

const (
	episodeSending  episodeState = iota // built, queued to the server
	episodeOpen                         // accepted: its workflow runs
	episodeClosed                       // a result (or a final rejection) arrived
	episodeInFlight                     // accepted on a stream that broke: the workflow continues server-side
)

type episode struct {
	key        string // namespace/pod uid/reason (the first pod's)
	ns, group  string // namespace and workload key
	reason     string
	requestID  string
	workflowID string
	state      episodeState
	// The group had no failing pod in a poll while the workflow was open:
	// the episode ends when the result arrives.
	healed bool
	seq    uint64
}

// Episodes de-duplicates incidents: one per failure episode. An episode is
// keyed namespace/pod uid/reason; a pod of the same workload (the
// replacement a delete or rollout creates) belongs to the workload's
// current episode, so a fix that recreates pods does not start a storm of
// incidents. No incident is sent for a workload while one of its episodes
// is being sent or its workflow is open, nor for the same reason again
// until a poll found no failing pod of the workload (it was healthy again,
// or gone).
//
// Bounded: at most max episodes. At the bound the oldest closed episode is
// evicted (its pod could be reported again); when none is closed, Begin
// refuses (the incident is not sent; the next poll retries). Safe for
// concurrent use.
type Episodes struct {
	mu        sync.Mutex
	max       int
	seq       uint64
	prefix    string
	byKey     map[string]*episode
	byRequest map[string]*episode
}

// NewEpisodes tracks at most max episodes. Request ids are
// "PREFIX-SEQ" (prefix from the agent's start time keeps them unique across
// restarts).
func NewEpisodes(max int, now time.Time) *Episodes {
	return &Episodes{max: max, prefix: strconv.FormatInt(now.Unix(), 36),
		byKey: map[string]*episode{}, byRequest: map[string]*episode{}}
}

// Begin starts an episode for the failing pod unless it belongs to one
// already (see Episodes). Returns the incident's request id, or ok=false.
func (e *Episodes) Begin(p *Pod, f Failure) (requestID string, ok bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	ns, group := p.Metadata.Namespace, workloadKey(p)
	key := ns + "/" + p.Metadata.UID + "/" + f.Reason
	if _, dup := e.byKey[key]; dup {
		return "", false
	}
	for _, ep := range e.byKey {
		if ep.ns != ns || ep.group != group {
			continue
		}
		if ep.state != episodeClosed || ep.reason == f.Reason {
			return "", false
		}
	}
	if len(e.byKey) >= e.max && !e.evictLocked() {
		return "", false
	}
	e.seq++
	ep := &episode{key: key, ns: ns, group: group, reason: f.Reason, seq: e.seq,
		requestID: fmt.Sprintf("%s-%d", e.prefix, e.seq)}
	e.byKey[key] = ep
	e.byRequest[ep.requestID] = ep
	return ep.requestID, true
}

func (e *Episodes) evictLocked() bool {
	var oldest *episode
	for _, ep := range e.byKey {
		if ep.state == episodeClosed && (oldest == nil || ep.seq < oldest.seq) {
			oldest = ep
		}
	}
	if oldest == nil {
		return false
	}
	e.removeLocked(oldest)
	return true
}

func (e *Episodes) removeLocked(ep *episode) {
	delete(e.byKey, ep.key)
	delete(e.byRequest, ep.requestID)
}

// Forget drops the episode of requestID (its incident was not sent, or
// rejected for a transient reason): the next poll reports the pod again.
func (e *Episodes) Forget(requestID string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if ep := e.byRequest[requestID]; ep != nil {
		e.removeLocked(ep)
	}
}

// Accepted records the workflow of requestID. Returns the episode key ("" if
// unknown).
func (e *Episodes) Accepted(requestID, workflowID string) string {
	e.mu.Lock()
	defer e.mu.Unlock()
	ep := e.byRequest[requestID]
	if ep == nil {
		return ""
	}
	ep.workflowID = workflowID
	ep.state = episodeOpen
	return ep.key
}

// Closed ends the workflow of requestID (a result or a final rejection):
// the pod is not reported again for this reason until it was healthy.
func (e *Episodes) Closed(requestID string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	ep := e.byRequest[requestID]
	if ep == nil {
		return
	}
	if ep.healed {
		e.removeLocked(ep)
		return
	}
	ep.state = episodeClosed
}

// Disconnected is called when the session's stream ended: incidents not yet
// accepted are forgotten (sent again on the next stream); accepted ones are
// treated as closed-unhealed (their workflows continue at the server, which
// re-sends their requests on the next session).
func (e *Episodes) Disconnected() {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, ep := range e.byKey {
		switch ep.state {
		case episodeSending:
			e.removeLocked(ep)
		case episodeOpen:
			ep.state = episodeInFlight
		}
	}
}

// Polled is called after a poll of namespace ns with the workloads that
// had a failing pod ("NS/WORKLOAD" keys): every episode of another
// workload of ns has healed (removed when closed, ended at its result when
// open).
func (e *Episodes) Polled(ns string, failing map[string]bool) { e.polled(ns, false, failing) }

// PolledAll is Polled after a poll of every namespace.
func (e *Episodes) PolledAll(failing map[string]bool) { e.polled("", true, failing) }

func (e *Episodes) polled(ns string, all bool, failing map[string]bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, ep := range e.byKey {
		if (!all && ep.ns != ns) || failing[ep.ns+"/"+ep.group] {
			continue
		}
		switch ep.state {
		case episodeClosed, episodeInFlight:
			e.removeLocked(ep)
		default:
			ep.healed = true
		}
	}
}

// Len is the number of episodes tracked.
func (e *Episodes) Len() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return len(e.byKey)
}

// Keys lists the tracked episode keys, sorted (for tests and logs).
func (e *Episodes) Keys() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := make([]string, 0, len(e.byKey))
	for k := range e.byKey {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
