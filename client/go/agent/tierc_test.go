package agent

import (
	"strings"
	"testing"
	"time"

	"github.com/reflexion-dev/reflexion/client/go/agent/kubefake"
	reflexionv1 "github.com/reflexion-dev/reflexion/client/go/reflexionv1"
)

func tierCFixture(t *testing.T, dryRun bool) *fixture {
	f := newFixture(t, dryRun)
	f.exec.runTierC = map[reflexionv1.ActionType]bool{reflexionv1.ActionType_ACTION_TYPE_CREATE_MISSING_CONFIG: true}
	return f
}

func createConfigReq(f *fixture, app string) *reflexionv1.ActionRequest {
	return f.req(reflexionv1.ActionType_ACTION_TYPE_CREATE_MISSING_CONFIG, "shop", app, func(r *reflexionv1.ActionRequest) {
		r.Action.Tier = reflexionv1.SafetyTier_SAFETY_TIER_C
	})
}

func TestCreateMissingConfigCreatesTheEmptyConfigMapAndReplacesThePod(t *testing.T) {
	f := tierCFixture(t, false)
	pod := f.podOf("shop", "reports")
	r := f.run(createConfigReq(f, "reports"))
	wantOutcome(t, r, reflexionv1.ActionResult_OUTCOME_APPLIED, "created the empty ConfigMap shop/reports-config")
	calls := f.fake.Calls()
	if len(calls) != 2 || calls[0].Method != "POST" || calls[0].Path != "/api/v1/namespaces/shop/configmaps" ||
		calls[0].Code != 201 || calls[1].Method != "DELETE" || calls[1].Path != "/api/v1/namespaces/shop/pods/"+pod {
		t.Fatalf("calls = %v, want POST configmaps (201) then DELETE of the pod", calls)
	}
	cm := f.fake.Get("configmaps", "shop", "reports-config")
	if cm == nil || kubefake.Label(cm, "app.kubernetes.io/managed-by") != "reflexion-agent" {
		t.Fatalf("configmap = %v", cm)
	}
	if !f.fake.WorkloadHealthy("shop/reports") {
		t.Error("the replacement pod is not healthy")
	}
	ch := r.GetChanges()
	if len(ch) != 2 || ch[0].GetPath() != "ConfigMap/reports-config" || ch[0].GetBefore() != "" ||
		ch[0].GetAfter() != "created (empty)" || ch[1].GetPath() != "Pod/"+pod {
		t.Errorf("changes = %v", ch)
	}
}

func TestCreateMissingConfigDryRunChangesNothing(t *testing.T) {
	f := tierCFixture(t, true)
	r := f.run(createConfigReq(f, "reports"))
	wantOutcome(t, r, reflexionv1.ActionResult_OUTCOME_DRY_RUN, "nothing changed")
	for _, c := range f.fake.Calls() {
		if !c.DryRun {
			t.Errorf("a call without dryRun=All: %v", c)
		}
	}
	if f.fake.Get("configmaps", "shop", "reports-config") != nil {
		t.Error("a dry run created the ConfigMap")
	}
}

func TestCreateMissingConfigRefusesAnExistingConfigMapAKeyReferenceAndAPodWithoutOne(t *testing.T) {
	f := tierCFixture(t, false)
	// Created since the pod failed: left alone.
	f.fake.AddConfigMap("shop", "reports-config", map[string]string{"k": "v"})
	wantOutcome(t, f.run(createConfigReq(f, "reports")), reflexionv1.ActionResult_OUTCOME_REFUSED, "exists")
	// A pod failing for another reason names no missing ConfigMap.
	wantOutcome(t, f.run(createConfigReq(f, "web")), reflexionv1.ActionResult_OUTCOME_REFUSED, "no missing ConfigMap")
	if calls := f.fake.Calls(); len(calls) != 0 {
		t.Errorf("calls = %v, want none", calls)
	}

	// A key reference: its content needs a human.
	g := kubefake.New(func(pod kubefake.Object, v *kubefake.View) kubefake.Verdict {
		if v.Get("configmaps", "shop", "app-config") == nil {
			return kubefake.Verdict{Reason: "CreateContainerConfigError", Message: `configmap "app-config" not found`}
		}
		return kubefake.Verdict{Healthy: true}
	}, t0)
	g.AddDeployment("shop", "keyed", 1, []kubefake.Object{kubefake.Template(map[string]string{"app": "keyed"},
		kubefake.OneContainer("keyed:1", kubefake.Object{"env": []interface{}{kubefake.Object{"name": "MODE",
			"valueFrom": kubefake.Object{"configMapKeyRef": kubefake.Object{"name": "app-config", "key": "mode"}}}}}))}, nil)
	g.Start()
	defer g.Close()
	f.fake = g
	f.exec = NewExecutor(NewKube(g.URL(), "", nil), func(string) bool { return true }, &fakeClock{now: t0}, false, 16)
	f.exec.runTierC = map[reflexionv1.ActionType]bool{reflexionv1.ActionType_ACTION_TYPE_CREATE_MISSING_CONFIG: true}
	r := f.run(createConfigReq(f, "keyed"))
	wantOutcome(t, r, reflexionv1.ActionResult_OUTCOME_REFUSED, `reads key "mode" of ConfigMap app-config`)
	if calls := g.Calls(); len(calls) != 0 {
		t.Errorf("calls = %v, want none", calls)
	}
}

func TestTierCIsRefusedUnlessEnabledAndOnlyCreateMissingConfigCanBe(t *testing.T) {
	f := newFixture(t, false)
	wantOutcome(t, f.run(createConfigReq(f, "reports")), reflexionv1.ActionResult_OUTCOME_REFUSED, "tier C")
	if calls := f.fake.Calls(); len(calls) != 0 {
		t.Errorf("calls = %v", calls)
	}
	cfg := Config{Server: "127.0.0.1:1", Cluster: "c", AgentID: "a", Namespaces: []string{"shop"},
		Kube: f.kube, Log: NewLogger(&syncBuffer{}, "text", RealClock{}), PollInterval: time.Second,
		TierC: []reflexionv1.ActionType{reflexionv1.ActionType_ACTION_TYPE_SCALE_NODE_POOL}}
	if _, err := New(cfg); err == nil || !strings.Contains(err.Error(), "--tier-c") {
		t.Errorf("New with --tier-c scale_node_pool: %v, want an error naming --tier-c", err)
	}
}
