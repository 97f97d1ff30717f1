package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"sync"

	reflexionv1 "github.com/reflexion-dev/reflexion/client/go/reflexionv1"
)

// ImplementedActions are the action types the executor runs (tier A and B,
// undo included; tier C is refused unless enabled: TierCActions).
var ImplementedActions = []reflexionv1.ActionType{
	reflexionv1.ActionType_ACTION_TYPE_DELETE_POD,
	reflexionv1.ActionType_ACTION_TYPE_ROLLBACK_DEPLOYMENT,
	reflexionv1.ActionType_ACTION_TYPE_PATCH_IMAGE,
	reflexionv1.ActionType_ACTION_TYPE_ATTACH_PULL_SECRET,
	reflexionv1.ActionType_ACTION_TYPE_INCREASE_MEMORY_LIMIT,
	reflexionv1.ActionType_ACTION_TYPE_RELAX_PROBES,
	reflexionv1.ActionType_ACTION_TYPE_LOWER_RESOURCE_REQUESTS,
	// Tier A: restores what one of the actions above reported changing
	// (undo.go).
	reflexionv1.ActionType_ACTION_TYPE_UNDO,
}

// TierCActions are the tier C types the executor can run when enabled
// (Config.TierC, --tier-c): the server sends a tier C action only after a
// human approved it (reflexion.tier_c: ask).
var TierCActions = []reflexionv1.ActionType{reflexionv1.ActionType_ACTION_TYPE_CREATE_MISSING_CONFIG}

var tierC = map[reflexionv1.ActionType]bool{
	reflexionv1.ActionType_ACTION_TYPE_CREATE_MISSING_CONFIG: true,
	reflexionv1.ActionType_ACTION_TYPE_RELAX_NODE_SELECTOR:   true,
	reflexionv1.ActionType_ACTION_TYPE_SCALE_NODE_POOL:       true,
}

// Field limits of ActionResult / ValueChange.
const (
	maxResultMessage = 4096
	maxChanges       = 32
	maxChangePath    = 512
	maxChangeValue   = 1024
)

// DefaultDedupeSize is how many action ids the executor remembers.
const DefaultDedupeSize = 4096

// Executor executes catalog actions against the Kubernetes API, each
// action_id at most once. Safe for concurrent use.
type Executor struct {
	kube    *Kube
	allowed func(ns string) bool
	clock   Clock
	// forceDryRun: the agent runs with --dry-run (every action is a dry run).
	forceDryRun bool
	dedupe      *resultCache
	// runTierC: the tier C types enabled (Config.TierC); set before use.
	runTierC map[reflexionv1.ActionType]bool
}

// NewExecutor returns an executor acting through kube on namespaces for
// which allowed returns true, remembering the first result of the
// dedupeSize most recent action ids.
func NewExecutor(kube *Kube, allowed func(string) bool, clock Clock, forceDryRun bool, dedupeSize int) *Executor {
	return &Executor{kube: kube, allowed: allowed, clock: clock, forceDryRun: forceDryRun,
		dedupe: newResultCache(dedupeSize)}
}

// resultCache remembers the first ActionResult of each action id. Bounded:
// at most max completed entries; at the bound the oldest completed one is
// evicted (FIFO), so a re-send of an action older than the last max is
// executed again — the server re-sends only pending requests, so this needs
// more than max actions completing between a request and its re-send.
// In-flight entries are never evicted (their number is bounded by the
// session's executor concurrency).
type resultCache struct {
	mu    sync.Mutex
	max   int
	m     map[string]*cacheEntry
	order []string // completed ids, oldest first
}

type cacheEntry struct {
	done   chan struct{}
	result *reflexionv1.ActionResult
}

func newResultCache(max int) *resultCache {
	if max < 1 {
		max = 1
	}
	return &resultCache{max: max, m: map[string]*cacheEntry{}}
}

// claim returns the entry of id and whether the caller is the first (and
// must complete it).
func (c *resultCache) claim(id string) (*cacheEntry, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e := c.m[id]; e != nil {
		return e, false
	}
	e := &cacheEntry{done: make(chan struct{})}
	c.m[id] = e
	return e, true
}

func (c *resultCache) complete(id string, e *cacheEntry, r *reflexionv1.ActionResult) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e.result = r
	close(e.done)
	c.order = append(c.order, id)
	for len(c.order) > c.max {
		delete(c.m, c.order[0])
		c.order = c.order[1:]
	}
}

// Execute runs req once per action id and returns its result; a re-sent
// action id gets the first result without calling the API again (waiting
// for it when the first is still running). Never returns nil.
func (e *Executor) Execute(ctx context.Context, req *reflexionv1.ActionRequest) *reflexionv1.ActionResult {
	entry, first := e.dedupe.claim(req.GetActionId())
	if !first {
		select {
		case <-entry.done:
			return entry.result
		case <-ctx.Done():
			return e.result(req, reflexionv1.ActionResult_OUTCOME_FAILED, "agent stopping", nil)
		}
	}
	r := e.execute(ctx, req)
	e.dedupe.complete(req.GetActionId(), entry, r)
	return r
}

func (e *Executor) result(req *reflexionv1.ActionRequest, o reflexionv1.ActionResult_Outcome,
	msg string, changes []*reflexionv1.ValueChange) *reflexionv1.ActionResult {
	if len(changes) > maxChanges {
		changes = changes[:maxChanges]
	}
	for _, c := range changes {
		c.Path = ClipUTF8(c.Path, maxChangePath)
		c.Before = ClipUTF8(c.Before, maxChangeValue)
		c.After = ClipUTF8(c.After, maxChangeValue)
	}
	return &reflexionv1.ActionResult{WorkflowId: req.GetWorkflowId(), ActionId: req.GetActionId(),
		Outcome: o, Message: ClipUTF8(msg, maxResultMessage), Changes: changes}
}

// refusal is an action the agent will not run.
type refusal struct{ msg string }

func (r *refusal) Error() string { return r.msg }

func refuse(format string, args ...interface{}) error {
	return &refusal{fmt.Sprintf(format, args...)}
}

func (e *Executor) execute(ctx context.Context, req *reflexionv1.ActionRequest) *reflexionv1.ActionResult {
	a := req.GetAction()
	typ := a.GetType()
	if req.GetActionId() == "" {
		return e.result(req, reflexionv1.ActionResult_OUTCOME_REFUSED, "refused: no action_id", nil)
	}
	if d := req.GetDeadline(); d != nil && !e.clock.Now().Before(d.AsTime()) {
		return e.result(req, reflexionv1.ActionResult_OUTCOME_REFUSED,
			fmt.Sprintf("refused: deadline %s has passed; not started", d.AsTime().UTC().Format("15:04:05.000Z")), nil)
	}
	if (tierC[typ] || a.GetTier() == reflexionv1.SafetyTier_SAFETY_TIER_C) && !e.runTierC[typ] {
		return e.result(req, reflexionv1.ActionResult_OUTCOME_REFUSED,
			fmt.Sprintf("refused: %s is tier C and needs a human (reflexionctl); the agent never runs it", typ), nil)
	}
	if !e.allowed(a.GetNamespace()) {
		return e.result(req, reflexionv1.ActionResult_OUTCOME_REFUSED,
			fmt.Sprintf("refused: namespace %q is not in the agent's allowed namespaces", a.GetNamespace()), nil)
	}
	if a.GetPodName() == "" {
		return e.result(req, reflexionv1.ActionResult_OUTCOME_REFUSED, "refused: action names no pod", nil)
	}
	dry := e.forceDryRun || req.GetDryRun()
	x := &run{kube: e.kube, req: req, a: a, ns: a.GetNamespace(), dry: dry}
	var err error
	switch typ {
	case reflexionv1.ActionType_ACTION_TYPE_DELETE_POD:
		err = x.deletePod(ctx)
	case reflexionv1.ActionType_ACTION_TYPE_ROLLBACK_DEPLOYMENT:
		err = x.rollback(ctx)
	case reflexionv1.ActionType_ACTION_TYPE_PATCH_IMAGE:
		err = x.patchImage(ctx)
	case reflexionv1.ActionType_ACTION_TYPE_INCREASE_MEMORY_LIMIT:
		err = x.increaseMemory(ctx)
	case reflexionv1.ActionType_ACTION_TYPE_RELAX_PROBES:
		err = x.relaxProbes(ctx)
	case reflexionv1.ActionType_ACTION_TYPE_LOWER_RESOURCE_REQUESTS:
		err = x.lowerRequests(ctx)
	case reflexionv1.ActionType_ACTION_TYPE_ATTACH_PULL_SECRET:
		err = x.attachPullSecret(ctx)
	case reflexionv1.ActionType_ACTION_TYPE_UNDO:
		err = x.undo(ctx)
	case reflexionv1.ActionType_ACTION_TYPE_CREATE_MISSING_CONFIG:
		err = x.createMissingConfig(ctx)
	default:
		err = refuse("refused: unknown action type %s", typ)
	}
	var rf *refusal
	switch {
	case errors.As(err, &rf):
		return e.result(req, reflexionv1.ActionResult_OUTCOME_REFUSED, rf.msg, x.changes)
	case err != nil:
		return e.result(req, reflexionv1.ActionResult_OUTCOME_FAILED, err.Error(), x.changes)
	case dry:
		return e.result(req, reflexionv1.ActionResult_OUTCOME_DRY_RUN,
			"dry run (dryRun=All) accepted by the API server: "+x.summary+"; nothing changed", x.changes)
	default:
		return e.result(req, reflexionv1.ActionResult_OUTCOME_APPLIED, x.summary, x.changes)
	}
}

// run is one execution.
type run struct {
	kube    *Kube
	req     *reflexionv1.ActionRequest
	a       *reflexionv1.Action
	ns      string
	dry     bool
	summary string
	changes []*reflexionv1.ValueChange
}

func (x *run) change(path, before, after string) {
	x.changes = append(x.changes, &reflexionv1.ValueChange{Path: path, Before: before, After: after})
}

// op is one JSON Patch (RFC 6902) operation.
type op struct {
	Op    string      `json:"op"`
	Path  string      `json:"path"`
	Value interface{} `json:"value,omitempty"`
}

// testOp asserts a value before changing it, so a concurrent edit makes
// the patch fail (HTTP 422) instead of being overwritten.
func testOp(path string, v interface{}) op { return op{Op: "test", Path: path, Value: v} }

func (x *run) patch(ctx context.Context, path string, ops []op) error {
	body, err := json.Marshal(ops)
	if err != nil {
		return err
	}
	return x.kube.Patch(ctx, path, JSONPatch, body, x.dry)
}

func (x *run) getPod(ctx context.Context) (*Pod, error) {
	var p Pod
	if _, err := x.kube.Get(ctx, podPath(x.ns, x.a.GetPodName()), nil, &p); err != nil {
		return nil, err
	}
	return &p, nil
}

func (x *run) deletePod(ctx context.Context) error {
	if err := x.kube.Delete(ctx, podPath(x.ns, x.a.GetPodName()), x.dry); err != nil {
		return err
	}
	x.change("Pod/"+x.a.GetPodName(), "present", "deleted")
	x.summary = "deleted pod " + x.ns + "/" + x.a.GetPodName() + " (its controller recreates it)"
	return nil
}

// deployment finds the pod's Deployment (via its ReplicaSet; the request's
// owner when the pod is gone). Refuses when there is none.
func (x *run) deployment(ctx context.Context) (*Pod, *workload, error) {
	pod, err := x.getPod(ctx)
	if err != nil && !IsNotFound(err) {
		return nil, nil, err
	}
	if err != nil {
		pod = nil
	}
	w, err := findWorkload(ctx, x.kube, x.ns, pod, x.req.GetOwner())
	if err != nil {
		return nil, nil, err
	}
	return pod, w, nil
}

func (x *run) rollback(ctx context.Context) error {
	_, w, err := x.deployment(ctx)
	if err != nil {
		return err
	}
	if w.deployment == nil {
		return refuse("refused: pod %s/%s is not managed by a Deployment: nothing to roll back", x.ns, x.a.GetPodName())
	}
	d := w.deployment
	prev := w.previous()
	if prev == nil {
		return refuse("refused: Deployment %s/%s has no earlier revision (revision %d is its first)",
			x.ns, d.Metadata.Name, revision(&d.Metadata))
	}
	ops, err := templateOps(ctx, x.kube, x.ns, prev.Metadata.Name, d.Metadata.ResourceVersion)
	if err != nil {
		return err
	}
	if err := x.patch(ctx, deploymentPath(x.ns, d.Metadata.Name), ops); err != nil {
		return err
	}
	name := "Deployment/" + d.Metadata.Name
	x.change(name+" revision", strconv.FormatInt(revision(&d.Metadata), 10),
		fmt.Sprintf("template of revision %d (ReplicaSet %s)", revision(&prev.Metadata), prev.Metadata.Name))
	for _, c := range d.Spec.Template.Spec.Containers {
		if i := containerIndex(prev.Spec.Template.Spec.Containers, c.Name); i >= 0 {
			if old := prev.Spec.Template.Spec.Containers[i].Image; old != c.Image {
				x.change(name+" spec.template.spec.containers["+c.Name+"].image", c.Image, old)
			}
		}
	}
	x.summary = fmt.Sprintf("rolled Deployment %s/%s back to the template of revision %d (ReplicaSet %s)",
		x.ns, d.Metadata.Name, revision(&prev.Metadata), prev.Metadata.Name)
	return nil
}

// target is the object whose pod template (or pod spec) an action patches.
type target struct {
	path       string      // API path
	name       string      // "Deployment/web" or "Pod/web-1"
	prefix     string      // JSON pointer of the containers' parent spec
	containers []Container // as read
	rv         string      // resourceVersion read
}

// templateTarget is the pod's Deployment template; bare pods only when
// podOK (a pod's image is mutable, its resources and probes are not).
func (x *run) templateTarget(ctx context.Context, podOK bool) (*target, error) {
	pod, w, err := x.deployment(ctx)
	if err != nil {
		return nil, err
	}
	if w.deployment != nil {
		d := w.deployment
		return &target{path: deploymentPath(x.ns, d.Metadata.Name), name: "Deployment/" + d.Metadata.Name,
			prefix: "/spec/template/spec", containers: d.Spec.Template.Spec.Containers,
			rv: d.Metadata.ResourceVersion}, nil
	}
	if pod == nil {
		return nil, refuse("refused: pod %s/%s not found", x.ns, x.a.GetPodName())
	}
	if pod.Metadata.controller() != nil {
		ref := pod.Metadata.controller()
		return nil, refuse("refused: pod %s/%s is managed by %s/%s, not a Deployment: patch its controller by hand",
			x.ns, pod.Metadata.Name, ref.Kind, ref.Name)
	}
	if !podOK {
		return nil, refuse("refused: pod %s/%s is a bare pod: its resources and probes cannot be changed in place",
			x.ns, pod.Metadata.Name)
	}
	return &target{path: podPath(x.ns, pod.Metadata.Name), name: "Pod/" + pod.Metadata.Name,
		prefix: "/spec", containers: pod.Spec.Containers, rv: pod.Metadata.ResourceVersion}, nil
}

// container picks the request's container (or the only one).
func (x *run) container(t *target) (int, error) {
	i := containerIndex(t.containers, x.req.GetContainer())
	if i < 0 {
		if x.req.GetContainer() == "" {
			return -1, refuse("refused: %s has %d containers and the request names none", t.name, len(t.containers))
		}
		return -1, refuse("refused: %s has no container %q", t.name, x.req.GetContainer())
	}
	return i, nil
}

func (t *target) cpath(i int, rest string) string {
	return fmt.Sprintf("%s/containers/%d%s", t.prefix, i, rest)
}

func (t *target) field(c, f string) string {
	return t.name + " " + specPrefix(t) + "containers[" + c + "]." + f
}

func specPrefix(t *target) string {
	if strings.HasPrefix(t.name, "Deployment/") {
		return "spec.template.spec."
	}
	return "spec."
}

func (x *run) patchImage(ctx context.Context) error {
	image := x.a.GetImage()
	if image == "" {
		return refuse("refused: patch_image names no image")
	}
	t, err := x.templateTarget(ctx, true)
	if err != nil {
		return err
	}
	i, err := x.container(t)
	if err != nil {
		return err
	}
	c := t.containers[i]
	if c.Image == image {
		return refuse("refused: %s container %s already has image %s", t.name, c.Name, image)
	}
	ops := []op{
		testOp(t.cpath(i, "/name"), c.Name),
		testOp(t.cpath(i, "/image"), c.Image),
		{Op: "replace", Path: t.cpath(i, "/image"), Value: image},
	}
	if err := x.patch(ctx, t.path, ops); err != nil {
		return err
	}
	x.change(t.field(c.Name, "image"), c.Image, image)
	x.summary = fmt.Sprintf("set %s in %s: container %s image %s -> %s", t.name, x.ns, c.Name, c.Image, image)
	return nil
}

func (x *run) increaseMemory(ctx context.Context) error {
	factor := x.a.GetParams().GetMemoryFactor()
	if !(factor > 1) || math.IsInf(factor, 0) {
		return refuse("refused: memory_factor %g must be above 1", factor)
	}
	t, err := x.templateTarget(ctx, false)
	if err != nil {
		return err
	}
	i, err := x.container(t)
	if err != nil {
		return err
	}
	c := t.containers[i]
	old := c.Resources.Limits["memory"]
	if old == "" {
		return refuse("refused: %s container %s has no memory limit to raise", t.name, c.Name)
	}
	b, err := ParseBytes(old)
	if err != nil {
		return refuse("refused: %s container %s memory limit: %v", t.name, c.Name, err)
	}
	now := FormatMi(math.Ceil(float64(b)*factor/mi) * mi)
	ops := []op{
		testOp(t.cpath(i, "/name"), c.Name),
		testOp(t.cpath(i, "/resources/limits/memory"), old),
		{Op: "replace", Path: t.cpath(i, "/resources/limits/memory"), Value: now},
	}
	if err := x.patch(ctx, t.path, ops); err != nil {
		return err
	}
	x.change(t.field(c.Name, "resources.limits.memory"), old, now)
	x.summary = fmt.Sprintf("raised %s in %s: container %s memory limit %s -> %s (x%g)", t.name, x.ns, c.Name, old, now, factor)
	return nil
}

func ceilScale(v int64, f float64) int64 { return int64(math.Ceil(float64(v) * f)) }

func (x *run) relaxProbes(ctx context.Context) error {
	factor := x.a.GetParams().GetProbeFactor()
	if !(factor > 1) || math.IsInf(factor, 0) {
		return refuse("refused: probe_factor %g must be above 1", factor)
	}
	t, err := x.templateTarget(ctx, false)
	if err != nil {
		return err
	}
	i, err := x.container(t)
	if err != nil {
		return err
	}
	c := t.containers[i]
	ops := []op{testOp(t.cpath(i, "/name"), c.Name)}
	var changed []string
	for _, p := range []struct {
		name  string
		probe *Probe
	}{{"livenessProbe", c.LivenessProbe}, {"readinessProbe", c.ReadinessProbe}} {
		if p.probe == nil {
			continue
		}
		for _, f := range []struct {
			name string
			v    *int64
			def  int64
		}{{"initialDelaySeconds", p.probe.InitialDelaySeconds, 0}, {"timeoutSeconds", p.probe.TimeoutSeconds, 1}} {
			old := f.def
			if f.v != nil {
				old = *f.v
			}
			now := ceilScale(old, factor)
			if now == old {
				continue
			}
			// "add" sets a missing member and replaces an existing one.
			ops = append(ops, op{Op: "add", Path: t.cpath(i, "/"+p.name+"/"+f.name), Value: now})
			before := strconv.FormatInt(old, 10)
			if f.v == nil {
				before += " (default)"
			}
			x.change(t.field(c.Name, p.name+"."+f.name), before, strconv.FormatInt(now, 10))
			changed = append(changed, fmt.Sprintf("%s.%s %d->%d", p.name, f.name, old, now))
		}
	}
	if c.LivenessProbe == nil && c.ReadinessProbe == nil {
		return refuse("refused: %s container %s has no liveness or readiness probe", t.name, c.Name)
	}
	if len(changed) == 0 {
		return refuse("refused: %s container %s: nothing to relax", t.name, c.Name)
	}
	if err := x.patch(ctx, t.path, ops); err != nil {
		x.changes = nil
		return err
	}
	x.summary = fmt.Sprintf("relaxed %s in %s: container %s probes (x%g): %s", t.name, x.ns, c.Name, factor, strings.Join(changed, ", "))
	return nil
}

func (x *run) lowerRequests(ctx context.Context) error {
	factor := x.a.GetParams().GetRequestsFactor()
	if !(factor > 0 && factor < 1) {
		return refuse("refused: requests_factor %g must be in (0, 1)", factor)
	}
	t, err := x.templateTarget(ctx, false)
	if err != nil {
		return err
	}
	i, err := x.container(t)
	if err != nil {
		return err
	}
	c := t.containers[i]
	ops := []op{testOp(t.cpath(i, "/name"), c.Name)}
	var changed []string
	if old := c.Resources.Requests["cpu"]; old != "" {
		m, err := ParseMilliCPU(old)
		if err != nil {
			return refuse("refused: %s container %s cpu request: %v", t.name, c.Name, err)
		}
		now := FormatMilliCPU(int64(math.Floor(float64(m) * factor)))
		ops = append(ops, testOp(t.cpath(i, "/resources/requests/cpu"), old),
			op{Op: "replace", Path: t.cpath(i, "/resources/requests/cpu"), Value: now})
		x.change(t.field(c.Name, "resources.requests.cpu"), old, now)
		changed = append(changed, "cpu "+old+"->"+now)
	}
	if old := c.Resources.Requests["memory"]; old != "" {
		b, err := ParseBytes(old)
		if err != nil {
			return refuse("refused: %s container %s memory request: %v", t.name, c.Name, err)
		}
		now := FormatMi(float64(b) * factor)
		ops = append(ops, testOp(t.cpath(i, "/resources/requests/memory"), old),
			op{Op: "replace", Path: t.cpath(i, "/resources/requests/memory"), Value: now})
		x.change(t.field(c.Name, "resources.requests.memory"), old, now)
		changed = append(changed, "memory "+old+"->"+now)
	}
	if len(changed) == 0 {
		return refuse("refused: %s container %s has no cpu or memory request to lower", t.name, c.Name)
	}
	if err := x.patch(ctx, t.path, ops); err != nil {
		x.changes = nil
		return err
	}
	x.summary = fmt.Sprintf("lowered %s in %s: container %s requests (x%g): %s", t.name, x.ns, c.Name, factor, strings.Join(changed, ", "))
	return nil
}

func (x *run) attachPullSecret(ctx context.Context) error {
	secret := x.a.GetPullSecret()
	if secret == "" {
		return refuse("refused: attach_pull_secret names no secret")
	}
	names, err := pullSecrets(ctx, x.kube, x.ns)
	if err != nil {
		return err
	}
	found := false
	for _, n := range names {
		found = found || n == secret
	}
	if !found {
		return refuse("refused: namespace %s has no image pull secret %q", x.ns, secret)
	}
	pod, err := x.getPod(ctx)
	if err != nil {
		return err
	}
	saName := pod.Spec.ServiceAccountName
	if saName == "" {
		saName = "default"
	}
	var sa struct {
		Metadata         ObjectMeta
		ImagePullSecrets []struct{ Name string }
	}
	saPath := serviceAccountPath(x.ns, saName)
	if _, err := x.kube.Get(ctx, saPath, url.Values(nil), &sa); err != nil {
		return err
	}
	var before []string
	has := false
	for _, s := range sa.ImagePullSecrets {
		before = append(before, s.Name)
		has = has || s.Name == secret
	}
	if !has {
		ops := []op{testOp("/metadata/resourceVersion", sa.Metadata.ResourceVersion)}
		entry := map[string]string{"name": secret}
		if len(sa.ImagePullSecrets) == 0 {
			ops = append(ops, op{Op: "add", Path: "/imagePullSecrets", Value: []interface{}{entry}})
		} else {
			ops = append(ops, op{Op: "add", Path: "/imagePullSecrets/-", Value: entry})
		}
		if err := x.patch(ctx, saPath, ops); err != nil {
			return err
		}
		x.change("ServiceAccount/"+saName+" imagePullSecrets", "["+strings.Join(before, ",")+"]",
			"["+strings.Join(append(before, secret), ",")+"]")
	}
	if err := x.deletePod(ctx); err != nil {
		return err
	}
	if has {
		x.summary = fmt.Sprintf("ServiceAccount %s/%s already had pull secret %s; deleted pod %s so its replacement uses it",
			x.ns, saName, secret, x.a.GetPodName())
	} else {
		x.summary = fmt.Sprintf("attached pull secret %s to ServiceAccount %s/%s and deleted pod %s so its replacement uses it",
			secret, x.ns, saName, x.a.GetPodName())
	}
	return nil
}

var missingConfigMap = regexp.MustCompile(`configmap "([^"]+)" not found`)

// createMissingConfig (tier C, enabled by --tier-c create_missing_config)
// creates the ConfigMap the pod's container status names as not found
// (`configmap "X" not found`), empty, labelled
// app.kubernetes.io/managed-by=reflexion-agent, and deletes the pod so its
// replacement starts with it. Refused unless the pod references X whole
// (envFrom or a volume): a key reference (configMapKeyRef) needs content
// only a human knows, and so does a missing Secret; refused if X exists.
func (x *run) createMissingConfig(ctx context.Context) error {
	var pod struct {
		Spec struct {
			Containers []struct {
				Name    string
				EnvFrom []struct {
					ConfigMapRef *struct{ Name string }
				}
				Env []struct {
					Name      string
					ValueFrom *struct {
						ConfigMapKeyRef *struct{ Name, Key string }
					}
				}
			}
			Volumes []struct {
				ConfigMap *struct{ Name string }
			}
		}
		Status PodStatus
	}
	if _, err := x.kube.Get(ctx, podPath(x.ns, x.a.GetPodName()), nil, &pod); err != nil {
		if IsNotFound(err) {
			return refuse("refused: pod %s/%s not found", x.ns, x.a.GetPodName())
		}
		return err
	}
	name := ""
	for _, cs := range pod.Status.ContainerStatuses {
		if w := cs.State.Waiting; w != nil {
			if m := missingConfigMap.FindStringSubmatch(w.Message); m != nil && name == "" {
				name = m[1]
			}
		}
	}
	if name == "" {
		return refuse("refused: pod %s/%s reports no missing ConfigMap (only a missing ConfigMap is created; a Secret needs a human)",
			x.ns, x.a.GetPodName())
	}
	whole := false
	for _, c := range pod.Spec.Containers {
		for _, e := range c.EnvFrom {
			whole = whole || (e.ConfigMapRef != nil && e.ConfigMapRef.Name == name)
		}
		for _, e := range c.Env {
			if e.ValueFrom != nil && e.ValueFrom.ConfigMapKeyRef != nil && e.ValueFrom.ConfigMapKeyRef.Name == name {
				return refuse("refused: container %s reads key %q of ConfigMap %s: its content needs a human",
					c.Name, e.ValueFrom.ConfigMapKeyRef.Key, name)
			}
		}
	}
	for _, v := range pod.Spec.Volumes {
		whole = whole || (v.ConfigMap != nil && v.ConfigMap.Name == name)
	}
	if !whole {
		return refuse("refused: pod %s/%s does not reference ConfigMap %s through envFrom or a volume", x.ns, x.a.GetPodName(), name)
	}
	_, err := x.kube.Get(ctx, configMapsPath(x.ns)+"/"+url.PathEscape(name), nil, nil)
	switch {
	case err == nil:
		return refuse("refused: ConfigMap %s/%s exists (created since the failure?)", x.ns, name)
	case !IsNotFound(err):
		return err
	}
	body, err := json.Marshal(map[string]interface{}{"apiVersion": "v1", "kind": "ConfigMap",
		"metadata": map[string]interface{}{"name": name, "namespace": x.ns,
			"labels": map[string]string{"app.kubernetes.io/managed-by": "reflexion-agent"},
			"annotations": map[string]string{"reflexion.dev/action-id": ClipUTF8(x.req.GetActionId(), 253),
				"reflexion.dev/created-for-pod": x.a.GetPodName()}},
		"data": map[string]string{}})
	if err != nil {
		return err
	}
	if err := x.kube.Post(ctx, configMapsPath(x.ns), body, x.dry); err != nil {
		return err
	}
	x.change("ConfigMap/"+name, "", "created (empty)")
	if err := x.deletePod(ctx); err != nil {
		return err
	}
	x.summary = fmt.Sprintf("created the empty ConfigMap %s/%s the pod referenced and deleted pod %s so its replacement starts with it",
		x.ns, name, x.a.GetPodName())
	return nil
}

// templateOps is the JSON patch that sets a Deployment's pod template to
// ReplicaSet rs's template as the API returns it (every field, also those
// this agent does not model), minus pod-template-hash — what `kubectl
// rollout undo` does — guarded by the Deployment's resourceVersion rv.
func templateOps(ctx context.Context, kube *Kube, ns, rs, rv string) ([]op, error) {
	var raw struct {
		Spec struct {
			Template map[string]interface{} `json:"template"`
		} `json:"spec"`
	}
	if _, err := kube.Get(ctx, replicaSetPath(ns, rs), nil, &raw); err != nil {
		return nil, err
	}
	tmpl := raw.Spec.Template
	if md, ok := tmpl["metadata"].(map[string]interface{}); ok {
		if labels, ok := md["labels"].(map[string]interface{}); ok {
			delete(labels, "pod-template-hash")
		}
	}
	return []op{
		testOp("/metadata/resourceVersion", rv),
		{Op: "replace", Path: "/spec/template", Value: tmpl},
	}, nil
}
