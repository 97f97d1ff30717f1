package agent

import (
	"fmt"
	"reflect"
	"strings"
	"testing"

	"github.com/reflexion-dev/reflexion/client/go/agent/kubefake"
	reflexionv1 "github.com/reflexion-dev/reflexion/client/go/reflexionv1"
)

// undoReq builds the undo of an applied action as the service does
// (core::BuildUndo): its restorable changes (a path with a field, before !=
// after), tier A, undo_of = the action id.
func (f *fixture) undoReq(orig *reflexionv1.ActionRequest, res *reflexionv1.ActionResult) *reflexionv1.ActionRequest {
	f.t.Helper()
	var restore []*reflexionv1.ValueChange
	for _, c := range res.GetChanges() {
		if strings.Contains(c.GetPath(), " ") && c.GetBefore() != c.GetAfter() {
			restore = append(restore, &reflexionv1.ValueChange{Path: c.Path, Before: c.Before, After: c.After})
		}
	}
	if len(restore) == 0 {
		f.t.Fatalf("nothing to undo in %v", res.GetChanges())
	}
	seq++
	return &reflexionv1.ActionRequest{WorkflowId: orig.WorkflowId, ActionId: fmt.Sprintf("%s/undo-%d", orig.ActionId, seq),
		Action: &reflexionv1.Action{Type: reflexionv1.ActionType_ACTION_TYPE_UNDO, Namespace: orig.Action.Namespace,
			PodName: orig.Action.PodName, Tier: reflexionv1.SafetyTier_SAFETY_TIER_A, UndoOf: res.GetActionId(),
			Restore: restore},
		Container: orig.Container, Deadline: orig.Deadline}
}

// template returns the pod template of Deployment ns/name (shaped like a
// pod for kubefake's readers).
func (f *fixture) template(ns, name string) kubefake.Object {
	d := f.fake.Get("deployments", ns, name)
	if d == nil {
		f.t.Fatalf("no deployment %s/%s", ns, name)
	}
	return d["spec"].(map[string]interface{})["template"].(map[string]interface{})
}

func (f *fixture) revisionOf(ns, name string) string {
	md := f.fake.Get("deployments", ns, name)["metadata"].(map[string]interface{})
	return md["annotations"].(map[string]interface{})["deployment.kubernetes.io/revision"].(string)
}

// inverse is what an undo of changes reports: each restorable change with
// before and after swapped.
func inverse(changes []*reflexionv1.ValueChange) []string {
	var out []string
	for _, c := range changes {
		if strings.Contains(c.GetPath(), " ") {
			out = append(out, c.GetPath()+": "+c.GetAfter()+" -> "+c.GetBefore())
		}
	}
	return out
}

func described(changes []*reflexionv1.ValueChange) []string {
	var out []string
	for _, c := range changes {
		out = append(out, c.GetPath()+": "+c.GetBefore()+" -> "+c.GetAfter())
	}
	return out
}

func TestUndoOfPatchImageSetsThePreviousImageBack(t *testing.T) {
	f := newFixture(t, false)
	req := f.req(reflexionv1.ActionType_ACTION_TYPE_PATCH_IMAGE, "shop", "web", func(r *reflexionv1.ActionRequest) {
		r.Action.Image = "web:1.2"
	})
	res := f.run(req)
	wantOutcome(t, res, reflexionv1.ActionResult_OUTCOME_APPLIED, "web:1.3-rc0 -> web:1.2")
	undo := f.run(f.undoReq(req, res))
	wantOutcome(t, undo, reflexionv1.ActionResult_OUTCOME_APPLIED, "undid "+req.ActionId)
	if got := kubefake.Image(f.template("shop", "web"), "app"); got != "web:1.3-rc0" {
		t.Errorf("image after undo = %s, want web:1.3-rc0", got)
	}
	if got, want := described(undo.GetChanges()), inverse(res.GetChanges()); !reflect.DeepEqual(got, want) {
		t.Errorf("undo changes = %v, want %v", got, want)
	}
	calls := f.fake.Calls()
	if len(calls) != 2 || !jsonEqual(calls[1].Body, `[
		{"op":"test","path":"/spec/template/spec/containers/0/name","value":"app"},
		{"op":"test","path":"/spec/template/spec/containers/0/image","value":"web:1.2"},
		{"op":"add","path":"/spec/template/spec/containers/0/image","value":"web:1.3-rc0"}]`) {
		t.Errorf("calls = %v", calls)
	}
}

func TestUndoOfEachActionRestoresTheObjectsItChanged(t *testing.T) {
	for _, c := range []struct {
		typ      reflexionv1.ActionType
		ns, app  string
		mod      func(*reflexionv1.ActionRequest)
		resource string // the object compared before and after
		name     string
	}{
		{reflexionv1.ActionType_ACTION_TYPE_INCREASE_MEMORY_LIMIT, "shop", "cart", nil, "deployments", "cart"},
		{reflexionv1.ActionType_ACTION_TYPE_RELAX_PROBES, "shop", "search", nil, "deployments", "search"},
		{reflexionv1.ActionType_ACTION_TYPE_LOWER_RESOURCE_REQUESTS, "shop", "batch", nil, "deployments", "batch"},
		{reflexionv1.ActionType_ACTION_TYPE_ATTACH_PULL_SECRET, "data", "ingest",
			func(r *reflexionv1.ActionRequest) { r.Action.PullSecret = "regcred" }, "serviceaccounts", "default"},
	} {
		t.Run(c.typ.String(), func(t *testing.T) {
			f := newFixture(t, false)
			spec := func() interface{} {
				o := f.fake.Get(c.resource, c.ns, c.name)
				if c.resource == "deployments" {
					return o["spec"].(map[string]interface{})["template"]
				}
				return o["imagePullSecrets"]
			}
			before := spec()
			req := f.req(c.typ, c.ns, c.app, c.mod)
			res := f.run(req)
			wantOutcome(t, res, reflexionv1.ActionResult_OUTCOME_APPLIED, "")
			if reflect.DeepEqual(before, spec()) {
				t.Fatal("the action changed nothing")
			}
			undo := f.run(f.undoReq(req, res))
			wantOutcome(t, undo, reflexionv1.ActionResult_OUTCOME_APPLIED, "undid")
			if after := spec(); !reflect.DeepEqual(before, after) {
				t.Errorf("after undo = %v, want %v", after, before)
			}
			if got, want := described(undo.GetChanges()), inverse(res.GetChanges()); !reflect.DeepEqual(got, want) {
				t.Errorf("undo changes = %v, want %v", got, want)
			}
		})
	}
}

func TestUndoOfARollbackRollsForwardToTheRecordedRevision(t *testing.T) {
	f := newFixture(t, false)
	req := f.req(reflexionv1.ActionType_ACTION_TYPE_ROLLBACK_DEPLOYMENT, "shop", "checkout", nil)
	res := f.run(req)
	wantOutcome(t, res, reflexionv1.ActionResult_OUTCOME_APPLIED, "rolled Deployment shop/checkout back")
	if got := kubefake.Image(f.template("shop", "checkout"), "app"); got != "checkout:1.9" {
		t.Fatalf("image after rollback = %s", got)
	}
	undoReq := f.undoReq(req, res)
	undo := f.run(undoReq)
	wantOutcome(t, undo, reflexionv1.ActionResult_OUTCOME_APPLIED, "undid")
	if got := kubefake.Image(f.template("shop", "checkout"), "app"); got != "checkout:2.0" {
		t.Errorf("image after undo = %s, want checkout:2.0 (revision 2's)", got)
	}
	if got := f.revisionOf("shop", "checkout"); got != "4" {
		t.Errorf("revision after undo = %s, want 4 (revision 2's ReplicaSet, renumbered)", got)
	}
	ch := undo.GetChanges()
	if len(ch) != 2 || ch[0].GetPath() != "Deployment/checkout revision" || ch[0].GetBefore() != "3" ||
		!strings.HasPrefix(ch[0].GetAfter(), "template of revision 2 (ReplicaSet checkout-") ||
		ch[1].GetBefore() != "checkout:1.9" || ch[1].GetAfter() != "checkout:2.0" {
		t.Errorf("undo changes = %v", described(ch))
	}
	// Undoing the undo goes back to the good revision.
	redo := f.run(f.undoReq(undoReq, undo))
	wantOutcome(t, redo, reflexionv1.ActionResult_OUTCOME_APPLIED, "undid")
	if got := kubefake.Image(f.template("shop", "checkout"), "app"); got != "checkout:1.9" {
		t.Errorf("image after the undo of the undo = %s, want checkout:1.9", got)
	}
	if !f.fake.WorkloadHealthy("shop/checkout") {
		t.Error("checkout not healthy again")
	}
}

func TestUndoLeavesAValueSomeoneChangedSinceAlone(t *testing.T) {
	f := newFixture(t, false)
	patch := f.req(reflexionv1.ActionType_ACTION_TYPE_PATCH_IMAGE, "shop", "web", func(r *reflexionv1.ActionRequest) {
		r.Action.Image = "web:1.2"
	})
	patched := f.run(patch)
	memory := f.req(reflexionv1.ActionType_ACTION_TYPE_INCREASE_MEMORY_LIMIT, "shop", "web", nil)
	raised := f.run(memory)
	wantOutcome(t, raised, reflexionv1.ActionResult_OUTCOME_APPLIED, "256Mi -> 384Mi")
	// Someone sets another image.
	wantOutcome(t, f.run(f.req(reflexionv1.ActionType_ACTION_TYPE_PATCH_IMAGE, "shop", "web", func(r *reflexionv1.ActionRequest) {
		r.Action.Image = "web:1.1"
	})), reflexionv1.ActionResult_OUTCOME_APPLIED, "")
	calls := len(f.fake.Calls())
	r := f.run(f.undoReq(patch, patched))
	wantOutcome(t, r, reflexionv1.ActionResult_OUTCOME_REFUSED,
		`is now "web:1.1", not "web:1.2": someone changed it since`)
	if len(f.fake.Calls()) != calls {
		t.Errorf("a refused undo patched: %v", f.fake.Calls()[calls:])
	}
	// With the memory limit in the same undo: that one is restored.
	both := f.undoReq(memory, raised)
	both.Action.Restore = append(both.Action.Restore, patched.GetChanges()[0])
	r = f.run(both)
	wantOutcome(t, r, reflexionv1.ActionResult_OUTCOME_APPLIED, "not restored: Deployment/web spec.template.spec.containers[app].image")
	if got := kubefake.Resource(f.template("shop", "web"), "app", "limits", "memory"); got != 256*(1<<20) {
		t.Errorf("memory limit = %v, want 256Mi", got)
	}
	if got := kubefake.Image(f.template("shop", "web"), "app"); got != "web:1.1" {
		t.Errorf("image = %s, want web:1.1 (left alone)", got)
	}
	if len(r.GetChanges()) != 1 {
		t.Errorf("changes = %v", described(r.GetChanges()))
	}
}

func TestUndoRefusesPathsItDoesNotProduce(t *testing.T) {
	f := newFixture(t, false)
	for _, c := range []struct {
		change *reflexionv1.ValueChange
		want   string
	}{
		{&reflexionv1.ValueChange{Path: "ConfigMap/app data.key", Before: "a", After: "b"}, `path "ConfigMap/app data.key" is not one this agent changes`},
		{&reflexionv1.ValueChange{Path: "Deployment/web spec.replicas", Before: "1", After: "2"}, `path "Deployment/web spec.replicas"`},
		{&reflexionv1.ValueChange{Path: "Pod/web-1 spec.containers[app].resources.limits.memory", Before: "1", After: "2"}, "is not one this agent changes"},
		{&reflexionv1.ValueChange{Path: "Pod/web-1", Before: "present", After: "deleted"}, "its controller recreated it"},
		{&reflexionv1.ValueChange{Path: "Deployment/web revision", Before: "two", After: "x"}, `"two" is not a revision number`},
		{&reflexionv1.ValueChange{Path: "web image", Before: "a", After: "b"}, "is not one this agent changes"},
	} {
		t.Run(c.change.Path, func(t *testing.T) {
			// A good entry first: nothing is restored when one path is unknown.
			req := f.req(reflexionv1.ActionType_ACTION_TYPE_UNDO, "shop", "web", func(r *reflexionv1.ActionRequest) {
				r.Action.Tier = reflexionv1.SafetyTier_SAFETY_TIER_A
				r.Action.UndoOf = "wf-0/1"
				r.Action.Restore = []*reflexionv1.ValueChange{
					{Path: "Deployment/web spec.template.spec.containers[app].image", Before: "web:1.2", After: "web:1.3-rc0"},
					c.change}
			})
			wantOutcome(t, f.run(req), reflexionv1.ActionResult_OUTCOME_REFUSED, c.want)
		})
	}
	for _, c := range []struct {
		name string
		mod  func(*reflexionv1.Action)
		want string
	}{
		{"no undo_of", func(a *reflexionv1.Action) { a.UndoOf = "" }, "no undo_of"},
		{"no restore", func(a *reflexionv1.Action) { a.Restore = nil }, "restores nothing"},
	} {
		t.Run(c.name, func(t *testing.T) {
			req := f.req(reflexionv1.ActionType_ACTION_TYPE_UNDO, "shop", "web", func(r *reflexionv1.ActionRequest) {
				r.Action.UndoOf = "wf-0/1"
				r.Action.Restore = []*reflexionv1.ValueChange{{Path: "Deployment/web spec.template.spec.containers[app].image"}}
				c.mod(r.Action)
			})
			wantOutcome(t, f.run(req), reflexionv1.ActionResult_OUTCOME_REFUSED, c.want)
		})
	}
	f.mustCalls()
}

func TestUndoDryRunValidatesAndChangesNothing(t *testing.T) {
	f := newFixture(t, false)
	req := f.req(reflexionv1.ActionType_ACTION_TYPE_PATCH_IMAGE, "shop", "web", func(r *reflexionv1.ActionRequest) {
		r.Action.Image = "web:1.2"
	})
	res := f.run(req)
	undo := f.undoReq(req, res)
	undo.DryRun = true
	r := f.run(undo)
	wantOutcome(t, r, reflexionv1.ActionResult_OUTCOME_DRY_RUN, "nothing changed")
	calls := f.fake.Calls()
	if len(calls) != 2 || !calls[1].DryRun {
		t.Errorf("calls = %v", calls)
	}
	if got := kubefake.Image(f.template("shop", "web"), "app"); got != "web:1.2" {
		t.Errorf("image after a dry-run undo = %s, want web:1.2", got)
	}
	if len(r.GetChanges()) != 1 {
		t.Errorf("a dry run reports what it would change: %v", r.GetChanges())
	}
}

func TestUndoIsExecutedAtMostOncePerActionID(t *testing.T) {
	f := newFixture(t, false)
	req := f.req(reflexionv1.ActionType_ACTION_TYPE_PATCH_IMAGE, "shop", "web", func(r *reflexionv1.ActionRequest) {
		r.Action.Image = "web:1.2"
	})
	undo := f.undoReq(req, f.run(req))
	first := f.run(undo)
	if again := f.run(undo); again != first {
		t.Errorf("re-sent undo answered %v, first %v", again, first)
	}
	if n := len(f.fake.Calls()); n != 2 {
		t.Errorf("%d mutating calls, want 2 (the patch and one undo)", n)
	}
}

func TestUndoIsAnImplementedTierAAction(t *testing.T) {
	found := false
	for _, a := range ImplementedActions {
		found = found || a == reflexionv1.ActionType_ACTION_TYPE_UNDO
	}
	if !found || tierC[reflexionv1.ActionType_ACTION_TYPE_UNDO] {
		t.Errorf("ImplementedActions = %v", ImplementedActions)
	}
}
