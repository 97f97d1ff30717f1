package agent

import (
	"context"
	"encoding/json"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/reflexion-dev/reflexion/client/go/agent/kubefake"
	reflexionv1 "github.com/reflexion-dev/reflexion/client/go/reflexionv1"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// fakeClock is a clock in which waiting takes no time: After(d) moves the
// clock forward by d and fires at once.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) After(d time.Duration) <-chan time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
	ch := make(chan time.Time, 1)
	ch <- c.now
	return ch
}

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

type fixture struct {
	t    *testing.T
	fake *kubefake.Server
	kube *Kube
	exec *Executor
	sc   kubefake.Scenario
}

// newFixture serves the mixed scenario; the executor may act in shop and data.
func newFixture(t *testing.T, dryRun bool) *fixture {
	fake, sc := kubefake.Mixed(t0)
	fake.Start()
	t.Cleanup(fake.Close)
	kube := NewKube(fake.URL(), "secret-token", nil)
	allowed := map[string]bool{"shop": true, "data": true}
	return &fixture{t: t, fake: fake, kube: kube, sc: sc,
		exec: NewExecutor(kube, func(ns string) bool { return allowed[ns] }, &fakeClock{now: t0}, dryRun, 16)}
}

// podOf returns the name of the (first) pod of app in ns.
func (f *fixture) podOf(ns, app string) string {
	for _, p := range f.fake.List("pods", ns) {
		if kubefake.Label(p, "app") == app {
			return p["metadata"].(map[string]interface{})["name"].(string)
		}
	}
	f.t.Fatalf("no pod of %s/%s", ns, app)
	return ""
}

var seq int

func (f *fixture) req(typ reflexionv1.ActionType, ns, app string, mod func(*reflexionv1.ActionRequest)) *reflexionv1.ActionRequest {
	seq++
	r := &reflexionv1.ActionRequest{WorkflowId: "wf-1-1", ActionId: "wf-1-1/" + string(rune('a'+seq%26)) + "/" + time.Duration(seq).String(),
		Action: &reflexionv1.Action{Type: typ, Namespace: ns, PodName: f.podOf(ns, app),
			Tier:   reflexionv1.SafetyTier_SAFETY_TIER_B,
			Params: &reflexionv1.StrategyParams{MemoryFactor: 1.5, ProbeFactor: 2, RequestsFactor: 0.75}},
		Container: "app", Deadline: timestamppb.New(t0.Add(time.Minute))}
	if mod != nil {
		mod(r)
	}
	return r
}

func (f *fixture) run(r *reflexionv1.ActionRequest) *reflexionv1.ActionResult {
	return f.exec.Execute(context.Background(), r)
}

// mustCalls checks the mutating calls (method, path, body as JSON, dry run).
func (f *fixture) mustCalls(want ...kubefake.Call) {
	f.t.Helper()
	got := f.fake.Calls()
	if len(got) != len(want) {
		f.t.Fatalf("calls = %v, want %d: %v", got, len(want), want)
	}
	for i := range want {
		g, w := got[i], want[i]
		if g.Method != w.Method || g.Path != w.Path || g.DryRun != w.DryRun {
			f.t.Errorf("call %d = %s %s dry=%v, want %s %s dry=%v", i, g.Method, g.Path, g.DryRun, w.Method, w.Path, w.DryRun)
		}
		if w.Body != "" && !jsonEqual(g.Body, w.Body) {
			f.t.Errorf("call %d body = %s\nwant %s", i, g.Body, w.Body)
		}
		if g.Code != 200 {
			f.t.Errorf("call %d answered %d", i, g.Code)
		}
	}
}

func jsonEqual(a, b string) bool {
	var x, y interface{}
	if json.Unmarshal([]byte(a), &x) != nil || json.Unmarshal([]byte(b), &y) != nil {
		return false
	}
	return reflect.DeepEqual(x, y)
}

func wantOutcome(t *testing.T, r *reflexionv1.ActionResult, o reflexionv1.ActionResult_Outcome, substr string) {
	t.Helper()
	if r.GetOutcome() != o || !strings.Contains(r.GetMessage(), substr) {
		t.Fatalf("result = %v %q, want %v containing %q", r.GetOutcome(), r.GetMessage(), o, substr)
	}
}

func TestDeletePodDeletesExactlyThatPod(t *testing.T) {
	f := newFixture(t, false)
	name := f.podOf("shop", "reports")
	r := f.run(f.req(reflexionv1.ActionType_ACTION_TYPE_DELETE_POD, "shop", "reports", nil))
	wantOutcome(t, r, reflexionv1.ActionResult_OUTCOME_APPLIED, "deleted pod shop/"+name)
	f.mustCalls(kubefake.Call{Method: "DELETE", Path: "/api/v1/namespaces/shop/pods/" + name})
	if f.fake.Get("pods", "shop", name) != nil || f.podOf("shop", "reports") == name {
		t.Error("pod not replaced")
	}
	if len(r.GetChanges()) != 1 || r.GetChanges()[0].GetAfter() != "deleted" {
		t.Errorf("changes = %v", r.GetChanges())
	}
}

func TestPatchImageSetsTheDeploymentTemplateImage(t *testing.T) {
	f := newFixture(t, false)
	r := f.run(f.req(reflexionv1.ActionType_ACTION_TYPE_PATCH_IMAGE, "shop", "web", func(r *reflexionv1.ActionRequest) {
		r.Action.Image = "web:1.2"
	}))
	wantOutcome(t, r, reflexionv1.ActionResult_OUTCOME_APPLIED, "web:1.3-rc0 -> web:1.2")
	f.mustCalls(kubefake.Call{Method: "PATCH", Path: "/apis/apps/v1/namespaces/shop/deployments/web",
		Body: `[{"op":"test","path":"/spec/template/spec/containers/0/name","value":"app"},
		        {"op":"test","path":"/spec/template/spec/containers/0/image","value":"web:1.3-rc0"},
		        {"op":"replace","path":"/spec/template/spec/containers/0/image","value":"web:1.2"}]`})
	want := []*reflexionv1.ValueChange{{Path: "Deployment/web spec.template.spec.containers[app].image",
		Before: "web:1.3-rc0", After: "web:1.2"}}
	if len(r.Changes) != 1 || r.Changes[0].String() != want[0].String() {
		t.Errorf("changes = %v, want %v", r.Changes, want)
	}
	if !f.fake.WorkloadHealthy("shop/web") {
		t.Error("web not healthy after the fix")
	}
}

func TestPatchImageOfABarePodPatchesThePod(t *testing.T) {
	f := newFixture(t, false)
	f.fake.AddPod("shop", "solo", map[string]string{"app": "solo"}, kubefake.OneContainer("web:9-missing", nil))
	r := f.run(f.req(reflexionv1.ActionType_ACTION_TYPE_PATCH_IMAGE, "shop", "solo", func(r *reflexionv1.ActionRequest) {
		r.Action.Image = "web:1.2"
		r.Container = ""
	}))
	wantOutcome(t, r, reflexionv1.ActionResult_OUTCOME_APPLIED, "Pod/solo")
	f.mustCalls(kubefake.Call{Method: "PATCH", Path: "/api/v1/namespaces/shop/pods/solo",
		Body: `[{"op":"test","path":"/spec/containers/0/name","value":"app"},
		        {"op":"test","path":"/spec/containers/0/image","value":"web:9-missing"},
		        {"op":"replace","path":"/spec/containers/0/image","value":"web:1.2"}]`})
	if !kubefake.PodHealthy(f.fake.Get("pods", "shop", "solo")) {
		t.Error("bare pod not healthy after its image was fixed")
	}
}

func TestRollbackRestoresThePreviousTemplateWithoutItsHash(t *testing.T) {
	f := newFixture(t, false)
	var prevRS string
	for _, rs := range f.fake.List("replicasets", "shop") {
		md := rs["metadata"].(map[string]interface{})
		if md["annotations"].(map[string]interface{})["deployment.kubernetes.io/revision"] == "1" &&
			strings.HasPrefix(md["name"].(string), "checkout-") {
			prevRS = md["name"].(string)
		}
	}
	r := f.run(f.req(reflexionv1.ActionType_ACTION_TYPE_ROLLBACK_DEPLOYMENT, "shop", "checkout", nil))
	wantOutcome(t, r, reflexionv1.ActionResult_OUTCOME_APPLIED, "back to the template of revision 1 (ReplicaSet "+prevRS+")")
	calls := f.fake.Calls()
	if len(calls) != 1 || calls[0].Method != "PATCH" || calls[0].Path != "/apis/apps/v1/namespaces/shop/deployments/checkout" {
		t.Fatalf("calls = %v", calls)
	}
	var ops []map[string]interface{}
	json.Unmarshal([]byte(calls[0].Body), &ops)
	if len(ops) != 2 || ops[0]["op"] != "test" || ops[0]["path"] != "/metadata/resourceVersion" ||
		ops[1]["op"] != "replace" || ops[1]["path"] != "/spec/template" {
		t.Fatalf("ops = %v", ops)
	}
	if strings.Contains(calls[0].Body, "pod-template-hash") || !strings.Contains(calls[0].Body, `"checkout:1.9"`) {
		t.Errorf("template = %s", calls[0].Body)
	}
	if !f.fake.WorkloadHealthy("shop/checkout") {
		t.Error("checkout not healthy after the rollback")
	}
	ann := f.fake.Get("deployments", "shop", "checkout")["metadata"].(map[string]interface{})["annotations"].(map[string]interface{})
	if ann["deployment.kubernetes.io/revision"] != "3" {
		t.Errorf("revision after rollback = %v, want 3", ann["deployment.kubernetes.io/revision"])
	}
}

func TestRollbackOfAFirstRevisionIsRefused(t *testing.T) {
	f := newFixture(t, false)
	r := f.run(f.req(reflexionv1.ActionType_ACTION_TYPE_ROLLBACK_DEPLOYMENT, "shop", "cart", nil))
	wantOutcome(t, r, reflexionv1.ActionResult_OUTCOME_REFUSED, "no earlier revision")
	f.mustCalls()
}

func TestIncreaseMemoryLimitMultipliesAndRoundsToMi(t *testing.T) {
	f := newFixture(t, false)
	r := f.run(f.req(reflexionv1.ActionType_ACTION_TYPE_INCREASE_MEMORY_LIMIT, "shop", "cart", func(r *reflexionv1.ActionRequest) {
		r.Action.Params.MemoryFactor = 1.45 // 185.6Mi -> 186Mi
	}))
	wantOutcome(t, r, reflexionv1.ActionResult_OUTCOME_APPLIED, "128Mi -> 186Mi")
	f.mustCalls(kubefake.Call{Method: "PATCH", Path: "/apis/apps/v1/namespaces/shop/deployments/cart",
		Body: `[{"op":"test","path":"/spec/template/spec/containers/0/name","value":"app"},
		        {"op":"test","path":"/spec/template/spec/containers/0/resources/limits/memory","value":"128Mi"},
		        {"op":"replace","path":"/spec/template/spec/containers/0/resources/limits/memory","value":"186Mi"}]`})
	if !f.fake.WorkloadHealthy("shop/cart") {
		t.Error("cart not healthy with 186Mi")
	}
}

func TestRelaxProbesScalesDelayAndTimeout(t *testing.T) {
	f := newFixture(t, false)
	r := f.run(f.req(reflexionv1.ActionType_ACTION_TYPE_RELAX_PROBES, "shop", "search", func(r *reflexionv1.ActionRequest) {
		r.Action.Params.ProbeFactor = 1.5 // 3 -> 5 (ceil 4.5), 1 -> 2 (ceil 1.5)
	}))
	wantOutcome(t, r, reflexionv1.ActionResult_OUTCOME_APPLIED, "livenessProbe.initialDelaySeconds 3->5")
	f.mustCalls(kubefake.Call{Method: "PATCH", Path: "/apis/apps/v1/namespaces/shop/deployments/search",
		Body: `[{"op":"test","path":"/spec/template/spec/containers/0/name","value":"app"},
		        {"op":"add","path":"/spec/template/spec/containers/0/livenessProbe/initialDelaySeconds","value":5},
		        {"op":"add","path":"/spec/template/spec/containers/0/livenessProbe/timeoutSeconds","value":2}]`})
	if !f.fake.WorkloadHealthy("shop/search") {
		t.Error("search not healthy")
	}
}

func TestLowerResourceRequestsScalesCPUAndMemory(t *testing.T) {
	f := newFixture(t, false)
	r := f.run(f.req(reflexionv1.ActionType_ACTION_TYPE_LOWER_RESOURCE_REQUESTS, "shop", "batch", nil))
	wantOutcome(t, r, reflexionv1.ActionResult_OUTCOME_APPLIED, "cpu 6->4500m, memory 1Gi->768Mi")
	f.mustCalls(kubefake.Call{Method: "PATCH", Path: "/apis/apps/v1/namespaces/shop/deployments/batch",
		Body: `[{"op":"test","path":"/spec/template/spec/containers/0/name","value":"app"},
		        {"op":"test","path":"/spec/template/spec/containers/0/resources/requests/cpu","value":"6"},
		        {"op":"replace","path":"/spec/template/spec/containers/0/resources/requests/cpu","value":"4500m"},
		        {"op":"test","path":"/spec/template/spec/containers/0/resources/requests/memory","value":"1Gi"},
		        {"op":"replace","path":"/spec/template/spec/containers/0/resources/requests/memory","value":"768Mi"}]`})
	if !f.fake.WorkloadHealthy("shop/batch") {
		t.Error("batch not schedulable")
	}
}

func TestAttachPullSecretPatchesTheServiceAccountOnceThenDeletesThePod(t *testing.T) {
	f := newFixture(t, false)
	name := f.podOf("data", "ingest")
	withSecret := func(r *reflexionv1.ActionRequest) { r.Action.PullSecret = "regcred" }
	r := f.run(f.req(reflexionv1.ActionType_ACTION_TYPE_ATTACH_PULL_SECRET, "data", "ingest", withSecret))
	wantOutcome(t, r, reflexionv1.ActionResult_OUTCOME_APPLIED, "attached pull secret regcred")
	sa := f.fake.Get("serviceaccounts", "data", "default")
	calls := f.fake.Calls()
	if len(calls) != 2 || calls[0].Method != "PATCH" || calls[0].Path != "/api/v1/namespaces/data/serviceaccounts/default" ||
		!strings.Contains(calls[0].Body, `{"op":"add","path":"/imagePullSecrets","value":[{"name":"regcred"}]}`) ||
		calls[1].Method != "DELETE" || calls[1].Path != "/api/v1/namespaces/data/pods/"+name {
		t.Fatalf("calls = %v", calls)
	}
	if got := sa["imagePullSecrets"]; !reflect.DeepEqual(got, []interface{}{map[string]interface{}{"name": "regcred"}}) {
		t.Errorf("imagePullSecrets = %v", got)
	}
	if !f.fake.WorkloadHealthy("data/ingest") {
		t.Error("ingest not healthy after the secret was attached")
	}
	// A second attach (a new action id) does not add the secret twice.
	r = f.run(f.req(reflexionv1.ActionType_ACTION_TYPE_ATTACH_PULL_SECRET, "data", "ingest", withSecret))
	wantOutcome(t, r, reflexionv1.ActionResult_OUTCOME_APPLIED, "already had pull secret regcred")
	if calls := f.fake.Calls(); len(calls) != 3 || calls[2].Method != "DELETE" {
		t.Errorf("second attach: calls = %v", calls)
	}
}

func TestAttachPullSecretRefusesASecretThatIsNotAPullSecret(t *testing.T) {
	f := newFixture(t, false)
	r := f.run(f.req(reflexionv1.ActionType_ACTION_TYPE_ATTACH_PULL_SECRET, "data", "ingest", func(r *reflexionv1.ActionRequest) {
		r.Action.PullSecret = "etl-db-password"
	}))
	wantOutcome(t, r, reflexionv1.ActionResult_OUTCOME_REFUSED, `no image pull secret "etl-db-password"`)
	f.mustCalls()
}

func TestDryRunSendsDryRunAllAndChangesNothing(t *testing.T) {
	for _, c := range []struct {
		typ  reflexionv1.ActionType
		ns   string
		app  string
		mod  func(*reflexionv1.ActionRequest)
		want []string // methods
	}{
		{reflexionv1.ActionType_ACTION_TYPE_DELETE_POD, "shop", "reports", nil, []string{"DELETE"}},
		{reflexionv1.ActionType_ACTION_TYPE_ROLLBACK_DEPLOYMENT, "shop", "checkout", nil, []string{"PATCH"}},
		{reflexionv1.ActionType_ACTION_TYPE_PATCH_IMAGE, "shop", "web", func(r *reflexionv1.ActionRequest) { r.Action.Image = "web:1.2" }, []string{"PATCH"}},
		{reflexionv1.ActionType_ACTION_TYPE_INCREASE_MEMORY_LIMIT, "shop", "cart", nil, []string{"PATCH"}},
		{reflexionv1.ActionType_ACTION_TYPE_RELAX_PROBES, "shop", "search", nil, []string{"PATCH"}},
		{reflexionv1.ActionType_ACTION_TYPE_LOWER_RESOURCE_REQUESTS, "shop", "batch", nil, []string{"PATCH"}},
		{reflexionv1.ActionType_ACTION_TYPE_ATTACH_PULL_SECRET, "data", "ingest", func(r *reflexionv1.ActionRequest) { r.Action.PullSecret = "regcred" }, []string{"PATCH", "DELETE"}},
	} {
		for _, how := range []string{"request", "agent"} {
			t.Run(c.typ.String()+"/"+how, func(t *testing.T) {
				f := newFixture(t, how == "agent")
				before := map[string][]kubefake.Object{}
				for _, res := range []string{"pods", "deployments", "replicasets", "serviceaccounts"} {
					before[res] = f.fake.List(res, "")
				}
				r := f.run(f.req(c.typ, c.ns, c.app, func(r *reflexionv1.ActionRequest) {
					if c.mod != nil {
						c.mod(r)
					}
					r.DryRun = how == "request"
				}))
				wantOutcome(t, r, reflexionv1.ActionResult_OUTCOME_DRY_RUN, "nothing changed")
				calls := f.fake.Calls()
				if len(calls) != len(c.want) {
					t.Fatalf("calls = %v", calls)
				}
				for i, call := range calls {
					if call.Method != c.want[i] || !call.DryRun || call.Code != 200 {
						t.Errorf("call %d = %v, want a dry-run %s", i, call, c.want[i])
					}
				}
				for res, objs := range before {
					if after := f.fake.List(res, ""); !reflect.DeepEqual(objs, after) {
						t.Errorf("%s changed by a dry run", res)
					}
				}
				if len(r.GetChanges()) == 0 {
					t.Error("dry run reports no changes (what it would change)")
				}
			})
		}
	}
}

func TestAnActionIDIsExecutedAtMostOnce(t *testing.T) {
	f := newFixture(t, false)
	req := f.req(reflexionv1.ActionType_ACTION_TYPE_PATCH_IMAGE, "shop", "web", func(r *reflexionv1.ActionRequest) {
		r.Action.Image = "web:1.2"
	})
	first := f.run(req)
	again := f.run(req) // a re-send after a reconnect
	if first != again {
		t.Errorf("re-send answered %v, first was %v", again, first)
	}
	if n := len(f.fake.Calls()); n != 1 {
		t.Errorf("%d mutating calls for one action id", n)
	}
	// The GETs happened once too: the re-send did not call the API at all.
	before := len(f.fake.Requests())
	f.run(req)
	if after := len(f.fake.Requests()); after != before {
		t.Errorf("re-send made %d API requests", after-before)
	}
}

func TestTheDedupeCacheIsBounded(t *testing.T) {
	c := newResultCache(3)
	for _, id := range []string{"a", "b", "c", "d"} {
		e, first := c.claim(id)
		if !first {
			t.Fatalf("%s: not first", id)
		}
		c.complete(id, e, &reflexionv1.ActionResult{ActionId: id})
	}
	if len(c.m) != 3 {
		t.Errorf("%d entries, want 3", len(c.m))
	}
	if _, first := c.claim("a"); !first {
		t.Error("oldest entry a not evicted")
	}
	if e, first := c.claim("d"); first || e.result.GetActionId() != "d" {
		t.Error("newest entry d evicted")
	}
}

func TestRefusals(t *testing.T) {
	f := newFixture(t, false)
	for _, c := range []struct {
		name string
		req  *reflexionv1.ActionRequest
		want string
	}{
		{"namespace not allowed", f.req(reflexionv1.ActionType_ACTION_TYPE_DELETE_POD, "finance", "ledger", nil), `namespace "finance" is not in the agent's allowed namespaces`},
		{"create_missing_config", f.req(reflexionv1.ActionType_ACTION_TYPE_CREATE_MISSING_CONFIG, "shop", "reports", nil), "tier C"},
		{"relax_node_selector", f.req(reflexionv1.ActionType_ACTION_TYPE_RELAX_NODE_SELECTOR, "shop", "batch", nil), "tier C"},
		{"scale_node_pool", f.req(reflexionv1.ActionType_ACTION_TYPE_SCALE_NODE_POOL, "shop", "batch", nil), "tier C"},
		{"tier C by tier", f.req(reflexionv1.ActionType_ACTION_TYPE_DELETE_POD, "shop", "batch", func(r *reflexionv1.ActionRequest) {
			r.Action.Tier = reflexionv1.SafetyTier_SAFETY_TIER_C
		}), "tier C"},
		{"unknown type", f.req(reflexionv1.ActionType(99), "shop", "web", nil), "unknown action type"},
		{"deadline passed", f.req(reflexionv1.ActionType_ACTION_TYPE_DELETE_POD, "shop", "web", func(r *reflexionv1.ActionRequest) {
			r.Deadline = timestamppb.New(t0.Add(-time.Second))
		}), "deadline"},
		{"image already set", f.req(reflexionv1.ActionType_ACTION_TYPE_PATCH_IMAGE, "shop", "web", func(r *reflexionv1.ActionRequest) {
			r.Action.Image = "web:1.3-rc0"
		}), "already has image"},
		{"no memory limit", f.req(reflexionv1.ActionType_ACTION_TYPE_INCREASE_MEMORY_LIMIT, "shop", "search", nil), "no memory limit"},
		{"no probes", f.req(reflexionv1.ActionType_ACTION_TYPE_RELAX_PROBES, "shop", "web", nil), "no liveness or readiness probe"},
	} {
		t.Run(c.name, func(t *testing.T) {
			wantOutcome(t, f.run(c.req), reflexionv1.ActionResult_OUTCOME_REFUSED, c.want)
		})
	}
	f.mustCalls()
}

func TestAnAPIErrorIsFailedWithItsMessage(t *testing.T) {
	f := newFixture(t, false)
	req := f.req(reflexionv1.ActionType_ACTION_TYPE_DELETE_POD, "shop", "web", nil)
	req.Action.PodName = "web-gone"
	wantOutcome(t, f.run(req), reflexionv1.ActionResult_OUTCOME_FAILED, `HTTP 404 from DELETE /api/v1/namespaces/shop/pods/web-gone: pods "web-gone" not found`)
}

func TestObservePodFollowsTheReplacement(t *testing.T) {
	f := newFixture(t, false)
	old := f.podOf("shop", "web")
	oldPod := f.fake.Get("pods", "shop", old)
	rs := oldPod["metadata"].(map[string]interface{})["ownerReferences"].([]interface{})[0].(map[string]interface{})["name"].(string)
	obs := &reflexionv1.ObservationRequest{WorkflowId: "wf", ActionId: "a", Namespace: "shop", PodName: old,
		Owner: &reflexionv1.WorkloadRef{Kind: "ReplicaSet", Name: rs}, Container: "app"}
	r, err := ObservePod(context.Background(), f.kube, obs)
	if err != nil || r.Healthy || r.FailureReason != "ImagePullBackOff" || r.PodName != old {
		t.Fatalf("before: %v, %v", r, err)
	}
	f.run(f.req(reflexionv1.ActionType_ACTION_TYPE_PATCH_IMAGE, "shop", "web", func(r *reflexionv1.ActionRequest) { r.Action.Image = "web:1.2" }))
	r, err = ObservePod(context.Background(), f.kube, obs)
	if err != nil || !r.Healthy || r.PodName == old || r.FailureReason != "" {
		t.Fatalf("after the fix: %v, %v", r, err)
	}
	if len(r.Signals) == 0 || !strings.Contains(r.Signals[0], "replacement pod") {
		t.Errorf("signals = %v", r.Signals)
	}
}

func TestObservePodOfAnOOMPodReportsRestarts(t *testing.T) {
	f := newFixture(t, false)
	name := f.podOf("shop", "cart")
	r, err := ObservePod(context.Background(), f.kube, &reflexionv1.ObservationRequest{Namespace: "shop", PodName: name})
	if err != nil || r.Healthy || r.Restarts != 3 || r.FailureReason != "OOMKilled" {
		t.Fatalf("%v, %v", r, err)
	}
}

func TestBuildIncidentCarriesThePodItsEventsAndTheFacts(t *testing.T) {
	f := newFixture(t, false)
	check := func(app, ns string, want *reflexionv1.Diagnosis) {
		t.Helper()
		name := f.podOf(ns, app)
		raw, err := f.kube.Get(context.Background(), podPath(ns, name), nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		var p Pod
		json.Unmarshal(raw, &p)
		fl, bad := DetectFailure(&p)
		if !bad {
			t.Fatalf("%s not failing", app)
		}
		inc, warnings, err := BuildIncident(context.Background(), f.kube, t0, raw, &p, fl, "r1")
		if err != nil || len(warnings) > 0 {
			t.Fatalf("%s: %v %v", app, err, warnings)
		}
		if inc.GetPodName() != "" || inc.GetNamespace() != "" || inc.GetErrorType() != "" || inc.GetRequestId() != "r1" {
			t.Errorf("%s: names set: %v", app, inc)
		}
		if got := inc.GetPod().GetFields()["metadata"].GetStructValue().GetFields()["name"].GetStringValue(); got != name {
			t.Errorf("%s: pod.metadata.name = %q", app, got)
		}
		if len(inc.GetPodEvents()) == 0 {
			t.Errorf("%s: no events", app)
		}
		fx := inc.GetExecutorFacts()
		if fx.GetLastHealthyImage() != want.LastHealthyImage || fx.GetRecentRollout() != want.RecentRollout ||
			fx.GetFirstRevision() != want.FirstRevision || fx.GetMemoryLimitBytes() != want.MemoryLimitBytes ||
			strings.Join(fx.GetAvailablePullSecrets(), ",") != strings.Join(want.AvailablePullSecrets, ",") {
			t.Errorf("%s: facts = %v, want %v", app, fx, want)
		}
	}
	check("web", "shop", &reflexionv1.Diagnosis{LastHealthyImage: "web:1.2", RecentRollout: true, MemoryLimitBytes: 256 << 20})
	check("cart", "shop", &reflexionv1.Diagnosis{FirstRevision: true, MemoryLimitBytes: 128 << 20})
	check("ingest", "data", &reflexionv1.Diagnosis{FirstRevision: true, MemoryLimitBytes: 256 << 20,
		AvailablePullSecrets: []string{"regcred"}})
}
