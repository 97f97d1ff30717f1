// Package agent is reflexion's Kubernetes agent: it watches pods of the
// allowed namespaces over the Kubernetes REST API, sends one incident per
// failure episode to reflexion-server on an agent session (Resolve with
// AgentHello), executes the catalog actions the server asks for (each
// action id at most once, tier C never), and reports pod status during
// observation windows. See client/go/cmd/reflexion-agent for the binary and
// the README, "The Go agent".
package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand"
	"regexp"
	"sync"
	"time"

	"github.com/reflexion-dev/reflexion/client/go/reflexion"
	reflexionv1 "github.com/reflexion-dev/reflexion/client/go/reflexionv1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Version is sent as AgentHello.agent_version.
const Version = "0.1.0"

// Bounds (see their use).
const (
	// Episodes tracked at once (Episodes documents the policy at the bound).
	maxEpisodes = 4096
	// Messages queued for the stream's sender; producers block (back-pressure)
	// while it is full, and give up when the stream ends.
	sendQueue = 256
	// Actions executed at once; the receiver waits for a slot (back-pressure
	// on the server's stream).
	defaultConcurrentActions = 8
	// How long an action may take end to end.
	actionTimeout = 60 * time.Second
	// How long SIGTERM waits for the server to end the stream after CloseSend.
	closeGrace = 5 * time.Second
)

var (
	dns1123Label = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`)
	agentIDRe    = regexp.MustCompile(`^[A-Za-z0-9._-]{1,128}$`)
)

// Config configures an Agent.
type Config struct {
	// Server is reflexion-server's host:port.
	Server string
	// Auth: the server's token and TLS (-token/REFLEXION_TOKEN, -tls-ca,
	// -tls-cert, -tls-key, -tls-server-name); zero: plaintext, no token.
	Auth reflexion.Options
	// Cluster is AgentHello.cluster: a DNS-1123 label.
	Cluster string
	// AgentID is AgentHello.agent_id: 1 to 128 of [A-Za-z0-9._-].
	AgentID string
	// Namespaces the agent watches and acts in; required unless
	// AllNamespaces.
	Namespaces    []string
	AllNamespaces bool
	// PollInterval between pod lists (default 10 s).
	PollInterval time.Duration
	// DryRun: every mutating call carries dryRun=All and answers
	// OUTCOME_DRY_RUN; also announced in AgentCapabilities.dry_run.
	DryRun bool
	// ActionTypes announced and executed (default ImplementedActions); a
	// request for another type is refused.
	ActionTypes []reflexionv1.ActionType
	// TierC: the tier C types (of TierCActions) this agent runs when the
	// server sends them, which it does only after a human approved the
	// action; announced with ActionTypes. Empty (the default): every tier C
	// request is refused.
	TierC []reflexionv1.ActionType
	// Kube is the Kubernetes API client (required).
	Kube *Kube
	// Log (required), Clock (default RealClock), Rand for the reconnect
	// jitter (default seeded from the clock).
	Log   *Logger
	Clock Clock
	Rand  *rand.Rand
	// OnResponse, when set, sees every message the server sends (after the
	// agent handled it). Called from the receiving goroutine: must not block.
	OnResponse func(*reflexionv1.ResolveResponse)
}

// Validate checks the configuration (errors name the flag).
func (c *Config) Validate() error {
	if c.Server == "" {
		return errors.New("--server: empty")
	}
	if len(c.Cluster) > 63 || !dns1123Label.MatchString(c.Cluster) {
		return fmt.Errorf("--cluster %q: want a DNS-1123 label (lowercase alphanumerics and '-', at most 63)", c.Cluster)
	}
	if !agentIDRe.MatchString(c.AgentID) {
		return fmt.Errorf("--agent-id %q: want 1 to 128 characters of [A-Za-z0-9._-]", c.AgentID)
	}
	if c.AllNamespaces && len(c.Namespaces) > 0 {
		return errors.New("--namespaces and --all-namespaces: give one")
	}
	if !c.AllNamespaces && len(c.Namespaces) == 0 {
		return errors.New("--namespaces: required (or --all-namespaces)")
	}
	for _, ns := range c.Namespaces {
		if len(ns) > 63 || !dns1123Label.MatchString(ns) {
			return fmt.Errorf("--namespaces: %q is not a namespace name", ns)
		}
	}
	if _, err := c.Auth.DialOptions(); err != nil {
		return err
	}
	for _, t := range c.TierC {
		ok := false
		for _, impl := range TierCActions {
			ok = ok || t == impl
		}
		if !ok {
			return fmt.Errorf("--tier-c: %s is not a tier C action the agent implements (have: create_missing_config)", t)
		}
	}
	if c.Kube == nil || c.Log == nil {
		return errors.New("agent: Kube and Log are required")
	}
	return nil
}

// Agent is one agent process: a session with the server, a pod watcher,
// the executor and the observers. Create with New, then Run.
type Agent struct {
	cfg      Config
	allowed  map[string]bool
	types    map[reflexionv1.ActionType]bool
	exec     *Executor
	episodes *Episodes
	log      *Logger
	clock    Clock

	mu  sync.Mutex
	cur *liveStream // nil while disconnected

	kick     chan struct{} // poll now (after a welcome)
	actions  chan struct{} // semaphore of running actions
	obsMu    sync.Mutex
	obs      map[string]bool // running observers by action id (at most maxObservers)
	wg       sync.WaitGroup  // action and observer goroutines
	sessions int
}

type liveStream struct {
	out  chan *reflexionv1.ResolveRequest
	done <-chan struct{}
}

// New returns an agent; Run starts it.
func New(cfg Config) (*Agent, error) {
	if cfg.Clock == nil {
		cfg.Clock = RealClock{}
	}
	if cfg.PollInterval <= 0 {
		cfg.PollInterval = 10 * time.Second
	}
	if cfg.Rand == nil {
		cfg.Rand = rand.New(rand.NewSource(cfg.Clock.Now().UnixNano()))
	}
	if len(cfg.ActionTypes) == 0 {
		cfg.ActionTypes = ImplementedActions
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg.ActionTypes = append(append([]reflexionv1.ActionType(nil), cfg.ActionTypes...), cfg.TierC...)
	a := &Agent{cfg: cfg, allowed: map[string]bool{}, types: map[reflexionv1.ActionType]bool{},
		log: cfg.Log, clock: cfg.Clock, kick: make(chan struct{}, 1),
		actions: make(chan struct{}, defaultConcurrentActions), obs: map[string]bool{}}
	for _, ns := range cfg.Namespaces {
		a.allowed[ns] = true
	}
	for _, t := range cfg.ActionTypes {
		a.types[t] = true
	}
	a.exec = NewExecutor(cfg.Kube, a.namespaceAllowed, cfg.Clock, cfg.DryRun, DefaultDedupeSize)
	a.exec.runTierC = map[reflexionv1.ActionType]bool{}
	for _, t := range cfg.TierC {
		a.exec.runTierC[t] = true
	}
	a.episodes = NewEpisodes(maxEpisodes, cfg.Clock.Now())
	return a, nil
}

func (a *Agent) namespaceAllowed(ns string) bool {
	return ns != "" && (a.cfg.AllNamespaces || a.allowed[ns])
}

// Episodes exposes the episode tracker (for tests).
func (a *Agent) Episodes() *Episodes { return a.episodes }

// Run runs until ctx ends: it keeps one session open (reconnecting with
// exponential backoff, 500 ms to 30 s, full jitter) and polls pods. At the
// end it closes the session cleanly (CloseSend, then waits up to 5 s for
// the server to end the stream) and waits for running actions and
// observers. Returns nil after ctx ended.
func (a *Agent) Run(ctx context.Context) error {
	pollDone := make(chan struct{})
	go func() {
		defer close(pollDone)
		a.pollLoop(ctx)
	}()
	backoff := &Backoff{Base: 500 * time.Millisecond, Cap: 30 * time.Second, Rand: a.cfg.Rand}
	for ctx.Err() == nil {
		welcomed, err := a.session(ctx)
		if ctx.Err() != nil {
			break
		}
		if welcomed {
			backoff.Reset()
		}
		d := backoff.Next()
		a.log.Warn("session ended; reconnecting", "server", a.cfg.Server, "err", err, "backoff", d.Round(time.Millisecond))
		select {
		case <-ctx.Done():
		case <-a.clock.After(d):
		}
	}
	<-pollDone
	a.wg.Wait()
	a.log.Info("agent stopped")
	return nil
}

func (a *Agent) hello() *reflexionv1.ResolveRequest {
	return &reflexionv1.ResolveRequest{Message: &reflexionv1.ResolveRequest_Hello{Hello: &reflexionv1.AgentHello{
		Cluster: a.cfg.Cluster, AgentId: a.cfg.AgentID, AgentVersion: Version,
		Capabilities: &reflexionv1.AgentCapabilities{ExecutesActions: true, ObservesPods: true,
			ActionTypes: a.cfg.ActionTypes, DryRun: a.cfg.DryRun},
	}}}
}

// session runs one stream: dial, hello, welcome, then dispatch until the
// stream ends. welcomed reports whether the server welcomed it.
func (a *Agent) session(ctx context.Context) (welcomed bool, err error) {
	dctx, dcancel := context.WithTimeout(ctx, 10*time.Second)
	c, err := reflexion.DialWith(dctx, a.cfg.Server, a.cfg.Auth)
	dcancel()
	if err != nil {
		return false, err
	}
	defer c.Close()
	// The stream's context is not ctx: at shutdown the stream is closed
	// with CloseSend (clean), and cancelled only after closeGrace.
	sctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		select {
		case <-ctx.Done():
			select {
			case <-a.clock.After(closeGrace):
				cancel()
			case <-stop:
			}
		case <-stop:
		}
	}()
	st, err := c.Reflexion.Resolve(sctx)
	if err != nil {
		return false, err
	}
	if err := st.Send(a.hello()); err != nil {
		return false, fmt.Errorf("send hello: %w", err)
	}
	first, err := st.Recv()
	if err != nil {
		return false, fmt.Errorf("waiting for welcome: %w", err)
	}
	w := first.GetWelcome()
	if w == nil {
		if rj := first.GetRejected(); rj != nil {
			return false, fmt.Errorf("hello rejected (code %d, field %s): %s", rj.GetCode(), rj.GetField(), rj.GetMessage())
		}
		return false, fmt.Errorf("first message is not welcome: %T", first.GetMessage())
	}
	a.log.Info("session open", "session_id", w.GetSessionId(), "cluster", w.GetCluster(),
		"pending_requests", w.GetPendingRequests(), "action_timeout", w.GetActionTimeout().AsDuration(),
		"report_interval", w.GetReportInterval().AsDuration(), "dry_run", a.cfg.DryRun)
	reportInterval := w.GetReportInterval().AsDuration()

	// The single sender of this stream (gRPC-Go streams are not safe for
	// concurrent Send); it also does CloseSend at shutdown.
	ls := &liveStream{out: make(chan *reflexionv1.ResolveRequest, sendQueue), done: sctx.Done()}
	senderDone := make(chan struct{})
	go func() {
		defer close(senderDone)
		for {
			select {
			case m := <-ls.out:
				if err := st.Send(m); err != nil {
					cancel() // Recv then fails too
					return
				}
			case <-ctx.Done():
				st.CloseSend()
				return
			case <-sctx.Done():
				return
			}
		}
	}()
	a.mu.Lock()
	a.cur = ls
	a.sessions++
	a.mu.Unlock()
	defer func() {
		a.mu.Lock()
		a.cur = nil
		a.mu.Unlock()
		a.episodes.Disconnected()
		cancel()
		<-senderDone
	}()
	select {
	case a.kick <- struct{}{}:
	default:
	}
	for {
		resp, err := st.Recv()
		if err == io.EOF && ctx.Err() != nil {
			a.log.Info("session closed", "session_id", w.GetSessionId())
			return true, nil
		}
		if err != nil {
			if status.Code(err) == codes.Canceled && ctx.Err() != nil {
				return true, nil
			}
			return true, err
		}
		a.dispatch(ctx, sctx, resp, reportInterval)
		if a.cfg.OnResponse != nil {
			a.cfg.OnResponse(resp)
		}
	}
}

// send queues m on the live stream; errNotConnected when there is none or
// it ended before m was queued.
func (a *Agent) send(ctx context.Context, m *reflexionv1.ResolveRequest) error {
	a.mu.Lock()
	ls := a.cur
	a.mu.Unlock()
	if ls == nil {
		return errNotConnected
	}
	select {
	case ls.out <- m:
		return nil
	case <-ls.done:
		return errNotConnected
	case <-ctx.Done():
		return ctx.Err()
	}
}

var errNotConnected = errors.New("no live session")

func (a *Agent) connected() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.cur != nil
}

func (a *Agent) dispatch(ctx, sctx context.Context, resp *reflexionv1.ResolveResponse, reportInterval time.Duration) {
	switch m := resp.GetMessage().(type) {
	case *reflexionv1.ResolveResponse_ActionRequest:
		req := m.ActionRequest
		select {
		case a.actions <- struct{}{}:
		case <-sctx.Done():
			return // the server re-sends it on the next session
		}
		a.wg.Add(1)
		go func() {
			defer a.wg.Done()
			defer func() { <-a.actions }()
			a.runAction(req)
		}()
	case *reflexionv1.ResolveResponse_ObservationRequest:
		a.startObserver(ctx, m.ObservationRequest, reportInterval)
	case *reflexionv1.ResolveResponse_ApprovalRequest:
		r := m.ApprovalRequest
		a.log.Warn("approval needed: the agent never approves; a human decides",
			"workflow_id", r.GetWorkflowId(), "etag", r.GetEtag(), "strategy", r.GetStrategy(),
			"action", r.GetAction().GetType(), "tier", r.GetTier(), "namespace", r.GetAction().GetNamespace(),
			"pod", r.GetAction().GetPodName(), "confidence", fmt.Sprintf("%.2f", r.GetConfidence()),
			"reason", r.GetReason(), "request_id", r.GetRequestId(),
			"hint", "reflexionctl approve "+r.GetWorkflowId()+" --etag "+r.GetEtag()+" (or deny)")
	case *reflexionv1.ResolveResponse_Accepted:
		key := a.episodes.Accepted(m.Accepted.GetRequestId(), m.Accepted.GetWorkflowId())
		a.log.Info("incident accepted", "request_id", m.Accepted.GetRequestId(),
			"workflow_id", m.Accepted.GetWorkflowId(), "episode", key)
	case *reflexionv1.ResolveResponse_Event:
		e := m.Event
		a.log.Info("event", "workflow_id", e.GetWorkflowId(), "seq", e.GetSequence(), "node", e.GetNode(),
			"phase", e.GetPhase(), "attempt", e.GetAttempt(), "summary", e.GetSummary())
	case *reflexionv1.ResolveResponse_Result:
		r := m.Result
		a.episodes.Closed(r.GetRequestId())
		a.log.Info("result", "workflow_id", r.GetWorkflowId(), "request_id", r.GetRequestId(),
			"namespace", r.GetNamespace(), "pod", r.GetPodName(), "status", r.GetStatus(),
			"success", r.GetSuccess(), "signature", r.GetSignature(), "strategy", r.GetFinalStrategy().GetType(),
			"attempts", r.GetAttempts(), "escalation_reason", r.GetEscalationReason(), "error", r.GetError())
	case *reflexionv1.ResolveResponse_Rejected:
		r := m.Rejected
		if c := codes.Code(r.GetCode()); c == codes.ResourceExhausted || c == codes.Unavailable {
			a.episodes.Forget(r.GetRequestId()) // transient: report again next poll
		} else {
			a.episodes.Closed(r.GetRequestId())
		}
		a.log.Warn("rejected", "request_id", r.GetRequestId(), "workflow_id", r.GetWorkflowId(),
			"code", codes.Code(r.GetCode()), "field", r.GetField(), "message", r.GetMessage())
	case *reflexionv1.ResolveResponse_HandedOff:
		a.episodes.Closed(m.HandedOff.GetRequestId())
		a.log.Warn("handed off", "workflow_id", m.HandedOff.GetWorkflowId(),
			"request_id", m.HandedOff.GetRequestId(), "message", m.HandedOff.GetMessage())
	case *reflexionv1.ResolveResponse_Welcome:
		a.log.Warn("unexpected second welcome ignored")
	}
}

func (a *Agent) runAction(req *reflexionv1.ActionRequest) {
	ctx, cancel := context.WithTimeout(context.Background(), actionTimeout)
	defer cancel()
	var r *reflexionv1.ActionResult
	if t := req.GetAction().GetType(); !a.types[t] && !tierC[t] {
		r = a.exec.result(req, reflexionv1.ActionResult_OUTCOME_REFUSED,
			fmt.Sprintf("refused: this agent does not execute %s", t), nil)
	} else {
		r = a.exec.Execute(ctx, req)
	}
	a.log.Info("action", "workflow_id", req.GetWorkflowId(), "action_id", req.GetActionId(),
		"type", req.GetAction().GetType(), "namespace", req.GetAction().GetNamespace(),
		"pod", req.GetAction().GetPodName(), "dry_run", a.cfg.DryRun || req.GetDryRun(),
		"outcome", r.GetOutcome(), "message", r.GetMessage())
	msg := &reflexionv1.ResolveRequest{Message: &reflexionv1.ResolveRequest_ActionResult{ActionResult: r}}
	if err := a.send(ctx, msg); err != nil {
		// The server re-sends the request on the next session; the dedupe
		// answers it with this result.
		a.log.Warn("action result not sent", "action_id", req.GetActionId(), "err", err)
	}
}

// startObserver runs one observer per action id until the window ends,
// across reconnects (reports go to whichever session is live).
func (a *Agent) startObserver(ctx context.Context, req *reflexionv1.ObservationRequest, welcomeInterval time.Duration) {
	end := req.GetWindowEnd().AsTime()
	if req.GetWindowEnd() == nil || !a.clock.Now().Before(end) {
		return
	}
	a.obsMu.Lock()
	if a.obs[req.GetActionId()] {
		a.obsMu.Unlock()
		return // already observing (a re-send after a reconnect)
	}
	if len(a.obs) >= maxObservers {
		a.obsMu.Unlock()
		a.log.Warn("observation refused: too many running observers", "action_id", req.GetActionId(), "max", maxObservers)
		return
	}
	a.obs[req.GetActionId()] = true
	a.obsMu.Unlock()
	interval := req.GetReportInterval().AsDuration()
	if interval <= 0 {
		interval = welcomeInterval
	}
	if interval <= 0 {
		interval = defaultInterval
	}
	a.log.Info("observing", "workflow_id", req.GetWorkflowId(), "action_id", req.GetActionId(),
		"namespace", req.GetNamespace(), "pod", req.GetPodName(), "until", end.UTC().Format(time.RFC3339), "every", interval)
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		defer func() {
			a.obsMu.Lock()
			delete(a.obs, req.GetActionId())
			a.obsMu.Unlock()
		}()
		for {
			rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			r, err := ObservePod(rctx, a.cfg.Kube, req)
			if err != nil {
				a.log.Warn("observe", "action_id", req.GetActionId(), "err", err)
			} else if err := a.send(rctx, &reflexionv1.ResolveRequest{Message: &reflexionv1.ResolveRequest_PodStatus{PodStatus: r}}); err != nil {
				a.log.Warn("pod status not sent", "action_id", req.GetActionId(), "err", err)
			}
			cancel()
			wait := interval
			if left := end.Sub(a.clock.Now()); left < wait {
				wait = left
			}
			if wait <= 0 {
				return
			}
			select {
			case <-ctx.Done():
				return
			case <-a.clock.After(wait):
			}
			if !a.clock.Now().Before(end) {
				return
			}
		}
	}()
}

func (a *Agent) pollLoop(ctx context.Context) {
	for {
		if a.connected() {
			a.PollOnce(ctx)
		}
		select {
		case <-ctx.Done():
			return
		case <-a.kick:
		case <-a.clock.After(a.cfg.PollInterval):
		}
	}
}

// PollOnce lists the pods of the allowed namespaces once and sends an
// incident for each failing pod that starts a new episode.
func (a *Agent) PollOnce(ctx context.Context) {
	paths := map[string]string{} // namespace ("" = all) -> path
	if a.cfg.AllNamespaces {
		paths[""] = "/api/v1/pods"
	} else {
		for _, ns := range a.cfg.Namespaces {
			paths[ns] = podsPath(ns)
		}
	}
	for ns, path := range paths {
		var list struct{ Items []json.RawMessage }
		if _, err := a.cfg.Kube.Get(ctx, path, nil, &list); err != nil {
			a.log.Warn("list pods", "namespace", ns, "err", err)
			continue
		}
		failing := map[string]bool{}
		type fp struct {
			raw json.RawMessage
			pod *Pod
			f   Failure
		}
		var todo []fp
		for _, raw := range list.Items {
			var p Pod
			if err := json.Unmarshal(raw, &p); err != nil {
				a.log.Warn("decode pod", "namespace", ns, "err", err)
				continue
			}
			if !a.namespaceAllowed(p.Metadata.Namespace) {
				continue
			}
			f, bad := DetectFailure(&p)
			if !bad {
				continue
			}
			failing[p.Metadata.Namespace+"/"+workloadKey(&p)] = true
			todo = append(todo, fp{raw, &p, f})
		}
		if ns == "" {
			a.episodes.PolledAll(failing)
		} else {
			a.episodes.Polled(ns, failing)
		}
		for _, t := range todo {
			a.report(ctx, t.raw, t.pod, t.f)
		}
	}
}

func (a *Agent) report(ctx context.Context, raw json.RawMessage, p *Pod, f Failure) {
	id, ok := a.episodes.Begin(p, f)
	if !ok {
		return
	}
	inc, warnings, err := BuildIncident(ctx, a.cfg.Kube, a.clock.Now(), raw, p, f, id)
	if err != nil {
		a.episodes.Forget(id)
		a.log.Warn("incident not built", "namespace", p.Metadata.Namespace, "pod", p.Metadata.Name, "err", err)
		return
	}
	for _, w := range warnings {
		a.log.Warn("fact not read", "namespace", p.Metadata.Namespace, "pod", p.Metadata.Name, "err", w)
	}
	if err := a.send(ctx, &reflexionv1.ResolveRequest{Message: &reflexionv1.ResolveRequest_Incident{Incident: inc}}); err != nil {
		a.episodes.Forget(id)
		a.log.Warn("incident not sent", "namespace", p.Metadata.Namespace, "pod", p.Metadata.Name, "err", err)
		return
	}
	fx := inc.GetExecutorFacts()
	a.log.Info("incident sent", "request_id", id, "namespace", p.Metadata.Namespace, "pod", p.Metadata.Name,
		"reason", f.Reason, "container", f.Container, "last_healthy_image", fx.GetLastHealthyImage(),
		"pull_secrets", fx.GetAvailablePullSecrets(), "recent_rollout", fx.GetRecentRollout(),
		"first_revision", fx.GetFirstRevision(), "memory_limit_bytes", fx.GetMemoryLimitBytes(),
		"events", len(inc.GetPodEvents()))
}
