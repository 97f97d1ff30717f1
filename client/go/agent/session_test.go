package agent

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/reflexion-dev/reflexion/client/go/agent/kubefake"
	reflexionv1 "github.com/reflexion-dev/reflexion/client/go/reflexionv1"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// offline is an agent on the mixed scenario whose session is a channel: the
// test reads what it would send.
type offline struct {
	*Agent
	fake  *kubefake.Server
	out   chan *reflexionv1.ResolveRequest
	clock *fakeClock
	log   *bytes.Buffer
}

func newOffline(t *testing.T, all bool) *offline {
	fake, _ := kubefake.Mixed(t0)
	fake.Start()
	t.Cleanup(fake.Close)
	clock := &fakeClock{now: t0}
	var buf bytes.Buffer
	cfg := Config{Server: "unused:1", Cluster: "test", AgentID: "a", Kube: NewKube(fake.URL(), "", nil),
		Log: NewLogger(&buf, "json", clock), Clock: clock}
	if all {
		cfg.AllNamespaces = true
	} else {
		cfg.Namespaces = []string{"shop", "data"}
	}
	a, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	o := &offline{Agent: a, fake: fake, out: make(chan *reflexionv1.ResolveRequest, 1000), clock: clock, log: &buf}
	a.cur = &liveStream{out: o.out, done: make(chan struct{})}
	return o
}

func (o *offline) drain() []*reflexionv1.ResolveRequest {
	var out []*reflexionv1.ResolveRequest
	for {
		select {
		case m := <-o.out:
			out = append(out, m)
		default:
			return out
		}
	}
}

func incidentPods(t *testing.T, ms []*reflexionv1.ResolveRequest) map[string]string {
	t.Helper()
	got := map[string]string{} // request id -> ns/app
	for _, m := range ms {
		if inc := m.GetIncident(); inc != nil {
			if k := inc.GetPod().GetFields()["kind"].GetStringValue(); k != "Pod" {
				t.Errorf("incident.pod.kind = %q, want Pod", k)
			}
			md := inc.GetPod().GetFields()["metadata"].GetStructValue().GetFields()
			app := md["labels"].GetStructValue().GetFields()["app"].GetStringValue()
			got[inc.GetRequestId()] = md["namespace"].GetStringValue() + "/" + app
		}
	}
	return got
}

func TestPollSendsOneIncidentPerFailingWorkloadOfTheAllowedNamespaces(t *testing.T) {
	o := newOffline(t, false)
	o.PollOnce(context.Background())
	got := incidentPods(t, o.drain())
	want := map[string]bool{"data/etl": true, "data/ingest": true, "data/worker": true, "shop/api": true,
		"shop/batch": true, "shop/cart": true, "shop/checkout": true, "shop/search": true, "shop/web": true, "shop/reports": true}
	seen := map[string]bool{}
	for _, w := range got {
		if seen[w] {
			t.Errorf("two incidents for %s", w)
		}
		seen[w] = true
	}
	if len(seen) != len(want) {
		t.Errorf("incidents for %v, want %v", seen, want)
	}
	for w := range want {
		if !seen[w] {
			t.Errorf("no incident for %s", w)
		}
	}
	for _, r := range o.fake.Requests() {
		if strings.Contains(r, "finance") {
			t.Errorf("request into finance: %s", r)
		}
	}
	// The next polls send nothing new: the episodes are open.
	o.PollOnce(context.Background())
	o.PollOnce(context.Background())
	if again := o.drain(); len(again) != 0 {
		t.Errorf("second poll sent %d messages", len(again))
	}
}

func TestAllNamespacesWatchesEveryNamespace(t *testing.T) {
	o := newOffline(t, true)
	o.PollOnce(context.Background())
	found := false
	for _, w := range incidentPods(t, o.drain()) {
		found = found || w == "finance/ledger"
	}
	if !found {
		t.Error("--all-namespaces: no incident for finance/ledger")
	}
}

func TestADisconnectedAgentSendsNothingAndForgetsTheEpisode(t *testing.T) {
	o := newOffline(t, false)
	o.cur = nil
	o.PollOnce(context.Background())
	if n := o.Episodes().Len(); n != 0 {
		t.Errorf("%d episodes kept for incidents that were never sent", n)
	}
}

func TestDispatchExecutesAReSentActionOnce(t *testing.T) {
	o := newOffline(t, false)
	var web string
	for _, p := range o.fake.List("pods", "shop") {
		if kubefake.Label(p, "app") == "web" {
			web = p["metadata"].(map[string]interface{})["name"].(string)
		}
	}
	req := &reflexionv1.ResolveResponse{Message: &reflexionv1.ResolveResponse_ActionRequest{ActionRequest: &reflexionv1.ActionRequest{
		WorkflowId: "wf-1-1", ActionId: "wf-1-1/1", Container: "app", Deadline: timestamppb.New(t0.Add(time.Minute)),
		Action: &reflexionv1.Action{Type: reflexionv1.ActionType_ACTION_TYPE_PATCH_IMAGE, Namespace: "shop", PodName: web, Image: "web:1.2"}}}}
	ctx := context.Background()
	o.dispatch(ctx, ctx, req, 0)
	o.dispatch(ctx, ctx, req, 0) // re-sent
	o.wg.Wait()
	var results []*reflexionv1.ActionResult
	for _, m := range o.drain() {
		if r := m.GetActionResult(); r != nil {
			results = append(results, r)
		}
	}
	if len(results) != 2 || results[0] != results[1] || results[0].GetOutcome() != reflexionv1.ActionResult_OUTCOME_APPLIED {
		t.Errorf("results = %v", results)
	}
	if n := len(o.fake.Calls()); n != 1 {
		t.Errorf("%d mutating calls", n)
	}
}

func TestAnObserverReportsEveryIntervalUntilTheWindowEnds(t *testing.T) {
	o := newOffline(t, false)
	var cart string
	for _, p := range o.fake.List("pods", "shop") {
		if kubefake.Label(p, "app") == "cart" {
			cart = p["metadata"].(map[string]interface{})["name"].(string)
		}
	}
	obs := &reflexionv1.ResolveResponse{Message: &reflexionv1.ResolveResponse_ObservationRequest{ObservationRequest: &reflexionv1.ObservationRequest{
		WorkflowId: "wf", ActionId: "wf/1", Namespace: "shop", PodName: cart, Container: "app",
		WindowEnd: timestamppb.New(t0.Add(2 * time.Second)), ReportInterval: durationpb.New(500 * time.Millisecond)}}}
	ctx := context.Background()
	o.dispatch(ctx, ctx, obs, 0)
	o.wg.Wait()
	var reports []*reflexionv1.PodStatusReport
	for _, m := range o.drain() {
		if r := m.GetPodStatus(); r != nil {
			reports = append(reports, r)
		}
	}
	// t0, +0.5, +1, +1.5 (the clock moves only while the observer waits).
	if len(reports) != 4 {
		t.Fatalf("%d reports, want 4: %v", len(reports), reports)
	}
	for _, r := range reports {
		if r.GetHealthy() || r.GetFailureReason() != "OOMKilled" || r.GetPodName() != cart || r.GetRestarts() != 3 {
			t.Errorf("report = %v", r)
		}
	}
	// A request whose window has ended starts nothing.
	o.dispatch(ctx, ctx, obs, 0)
	o.wg.Wait()
	if n := len(o.drain()); n != 0 {
		t.Errorf("expired window: %d messages", n)
	}
}

func TestApprovalRequestsAreLoggedNeverAnswered(t *testing.T) {
	o := newOffline(t, false)
	ctx := context.Background()
	o.dispatch(ctx, ctx, &reflexionv1.ResolveResponse{Message: &reflexionv1.ResolveResponse_ApprovalRequest{ApprovalRequest: &reflexionv1.ApprovalRequest{
		WorkflowId: "wf-9", Etag: "e-1", Strategy: "create_missing_config",
		Action: &reflexionv1.Action{Type: reflexionv1.ActionType_ACTION_TYPE_CREATE_MISSING_CONFIG, Namespace: "shop"}}}}, 0)
	if n := len(o.drain()); n != 0 {
		t.Errorf("the agent answered an approval request (%d messages)", n)
	}
	for _, want := range []string{`"workflow_id":"wf-9"`, `"etag":"e-1"`, `"strategy":"create_missing_config"`, `reflexionctl approve wf-9 --etag e-1`} {
		if !strings.Contains(o.log.String(), want) {
			t.Errorf("log lacks %s: %s", want, o.log.String())
		}
	}
}

func TestATransientRejectionReportsThePodAgain(t *testing.T) {
	o := newOffline(t, false)
	ctx := context.Background()
	o.PollOnce(ctx)
	ids := incidentPods(t, o.drain())
	n := o.Episodes().Len()
	var anyID string
	for id := range ids {
		anyID = id
		break
	}
	o.dispatch(ctx, ctx, &reflexionv1.ResolveResponse{Message: &reflexionv1.ResolveResponse_Rejected{Rejected: &reflexionv1.IncidentRejected{
		RequestId: anyID, Code: 8, Message: "at the in-flight limit"}}}, 0)
	if o.Episodes().Len() != n-1 {
		t.Errorf("RESOURCE_EXHAUSTED: episode kept (%d of %d)", o.Episodes().Len(), n)
	}
	o.PollOnce(ctx)
	if again := incidentPods(t, o.drain()); len(again) != 1 {
		t.Errorf("after a transient rejection the next poll sent %v", again)
	}
}
