package agent

import (
	"context"
	"fmt"
	"strconv"
	"strings"

	reflexionv1 "github.com/reflexion-dev/reflexion/client/go/reflexionv1"
)

// Undo (ACTION_TYPE_UNDO): set each Action.restore entry's path back from
// `after` to `before`. Only the path shapes this agent's own actions report
// are recognised:
//
//	Deployment/NAME revision                                    (rollback_deployment)
//	Deployment/NAME spec.template.spec.containers[C].FIELD      (patch_image, increase_memory_limit,
//	Pod/NAME spec.containers[C].image                            relax_probes, lower_resource_requests)
//	ServiceAccount/NAME imagePullSecrets                        (attach_pull_secret)
//
// with FIELD one of undoFields. Any other path refuses the whole undo
// before anything changes. An entry whose current value no longer equals
// its `after` was changed by someone since and is left alone (named in the
// message); the others are restored. A revision entry rolls the
// Deployment forward to the ReplicaSet of the recorded revision (what the
// rollback left), which also restores the container fields of that
// Deployment listed with it.

// undoFields are the container fields the agent's actions change.
var undoFields = map[string]bool{
	"image":                              true,
	"resources.limits.memory":            true,
	"resources.requests.cpu":             true,
	"resources.requests.memory":          true,
	"livenessProbe.initialDelaySeconds":  true,
	"livenessProbe.timeoutSeconds":       true,
	"readinessProbe.initialDelaySeconds": true,
	"readinessProbe.timeoutSeconds":      true,
}

// undoEntry is one parsed restore entry.
type undoEntry struct {
	vc        *reflexionv1.ValueChange
	object    string // "Deployment/web"
	kind      string // "Deployment", "Pod" or "ServiceAccount"
	name      string
	field     string // "revision", "imagePullSecrets" or an undoFields key
	container string
}

func parseUndoPath(vc *reflexionv1.ValueChange) (*undoEntry, error) {
	path := vc.GetPath()
	object, rest, ok := strings.Cut(path, " ")
	kind, name, ok2 := strings.Cut(object, "/")
	if !ok2 || name == "" {
		return nil, refuse("refused: undo: path %q is not one this agent changes", path)
	}
	if !ok {
		if kind == "Pod" {
			return nil, refuse("refused: undo: path %q is a deleted pod: its controller recreated it, nothing to restore", path)
		}
		return nil, refuse("refused: undo: path %q is not one this agent changes", path)
	}
	e := &undoEntry{vc: vc, object: object, kind: kind, name: name}
	switch {
	case kind == "Deployment" && rest == "revision":
		if n, err := strconv.ParseInt(vc.GetBefore(), 10, 64); err != nil || n < 1 {
			return nil, refuse("refused: undo: %s: %q is not a revision number", path, vc.GetBefore())
		}
		e.field = "revision"
		return e, nil
	case kind == "ServiceAccount" && rest == "imagePullSecrets":
		e.field = rest
		return e, nil
	}
	prefix := map[string]string{"Deployment": "spec.template.spec.containers[", "Pod": "spec.containers["}[kind]
	if prefix != "" && strings.HasPrefix(rest, prefix) {
		c, field, ok := strings.Cut(strings.TrimPrefix(rest, prefix), "].")
		if ok && c != "" && undoFields[field] && (kind == "Deployment" || field == "image") {
			e.container, e.field = c, field
			return e, nil
		}
	}
	return nil, refuse("refused: undo: path %q is not one this agent changes", path)
}

// fieldValue is a container field as the agent's actions report it.
func fieldValue(c *Container, field string) (string, bool) {
	switch field {
	case "image":
		return c.Image, true
	case "resources.limits.memory":
		return c.Resources.Limits["memory"], true
	case "resources.requests.cpu":
		return c.Resources.Requests["cpu"], true
	case "resources.requests.memory":
		return c.Resources.Requests["memory"], true
	}
	probeName, f, _ := strings.Cut(field, ".")
	p := c.LivenessProbe
	if probeName == "readinessProbe" {
		p = c.ReadinessProbe
	}
	if p == nil {
		return "", false
	}
	v, def := p.InitialDelaySeconds, int64(0)
	if f == "timeoutSeconds" {
		v, def = p.TimeoutSeconds, 1
	}
	if v == nil {
		return strconv.FormatInt(def, 10) + " (default)", true
	}
	return strconv.FormatInt(*v, 10), true
}

// fieldOps sets a container field (JSON pointer of the container: at) from
// cur to want, asserting cur first.
func fieldOps(at, field, cur, want string) ([]op, error) {
	ptr := at + "/" + strings.ReplaceAll(field, ".", "/")
	if strings.Contains(field, "Probe.") {
		// Probe timings: "N" or "N (default)" (the field unset).
		if strings.HasSuffix(want, " (default)") {
			if strings.HasSuffix(cur, " (default)") {
				return nil, nil
			}
			return []op{{Op: "remove", Path: ptr}}, nil
		}
		n, err := strconv.ParseInt(want, 10, 64)
		if err != nil || n < 0 {
			return nil, refuse("refused: undo: %q is not a probe timing", want)
		}
		var ops []op
		if c, err := strconv.ParseInt(cur, 10, 64); err == nil {
			ops = append(ops, testOp(ptr, c))
		}
		return append(ops, op{Op: "add", Path: ptr, Value: n}), nil
	}
	ops := []op{}
	if cur != "" {
		ops = append(ops, testOp(ptr, cur))
	}
	if want == "" {
		return append(ops, op{Op: "remove", Path: ptr}), nil
	}
	return append(ops, op{Op: "add", Path: ptr, Value: want}), nil
}

// undoRun collects what an undo restored and left alone.
type undoRun struct {
	*run
	skipped []string
}

func (u *undoRun) skip(e *undoEntry, format string, args ...interface{}) {
	u.skipped = append(u.skipped, e.vc.GetPath()+": "+fmt.Sprintf(format, args...))
}

func (u *undoRun) changedSince(e *undoEntry, cur string) {
	u.skip(e, "is now %q, not %q: someone changed it since; left alone", cur, e.vc.GetAfter())
}

func (x *run) undo(ctx context.Context) error {
	a := x.a
	if a.GetUndoOf() == "" {
		return refuse("refused: undo names no undo_of")
	}
	if len(a.GetRestore()) == 0 {
		return refuse("refused: undo of %s restores nothing", a.GetUndoOf())
	}
	if len(a.GetRestore()) > maxChanges {
		return refuse("refused: undo of %s restores %d values; at most %d", a.GetUndoOf(), len(a.GetRestore()), maxChanges)
	}
	var order []string
	byObject := map[string][]*undoEntry{}
	for _, vc := range a.GetRestore() {
		e, err := parseUndoPath(vc)
		if err != nil {
			return err
		}
		if byObject[e.object] == nil {
			order = append(order, e.object)
		}
		byObject[e.object] = append(byObject[e.object], e)
	}
	u := &undoRun{run: x}
	for _, object := range order {
		entries := byObject[object]
		var err error
		switch entries[0].kind {
		case "Deployment":
			err = u.undoDeployment(ctx, entries)
		case "Pod":
			err = u.undoPod(ctx, entries)
		case "ServiceAccount":
			err = u.undoServiceAccount(ctx, entries)
		}
		if err != nil {
			return err
		}
	}
	left := ""
	if len(u.skipped) > 0 {
		left = "; not restored: " + strings.Join(u.skipped, "; ")
	}
	if len(x.changes) == 0 {
		return refuse("refused: undo of %s: nothing restored%s", a.GetUndoOf(), left)
	}
	var done []string
	for _, c := range x.changes {
		done = append(done, fmt.Sprintf("%s %s -> %s", c.GetPath(), c.GetBefore(), c.GetAfter()))
	}
	x.summary = fmt.Sprintf("undid %s in %s: %s%s", a.GetUndoOf(), x.ns, strings.Join(done, "; "), left)
	return nil
}

// containerPatch restores container-field entries of one object whose
// containers are cs at JSON pointer prefix; returns the ops and records the
// changes it will make.
func (u *undoRun) containerPatch(name, prefix string, cs []Container, entries []*undoEntry) ([]op, []*reflexionv1.ValueChange, error) {
	var ops []op
	var changes []*reflexionv1.ValueChange
	named := map[int]bool{}
	if len(entries) == 0 {
		return nil, nil, nil
	}
	for _, e := range entries {
		i := containerIndex(cs, e.container)
		if i < 0 {
			u.skip(e, "%s has no container %q any more; left alone", name, e.container)
			continue
		}
		cur, ok := fieldValue(&cs[i], e.field)
		if !ok {
			u.skip(e, "%s container %s has no %s any more; left alone", name, e.container, strings.Split(e.field, ".")[0])
			continue
		}
		if cur != e.vc.GetAfter() {
			u.changedSince(e, cur)
			continue
		}
		if cur == e.vc.GetBefore() {
			continue
		}
		at := fmt.Sprintf("%s/containers/%d", prefix, i)
		fo, err := fieldOps(at, e.field, cur, e.vc.GetBefore())
		if err != nil {
			return nil, nil, err
		}
		if !named[i] {
			named[i] = true
			ops = append(ops, testOp(at+"/name", cs[i].Name))
		}
		ops = append(ops, fo...)
		changes = append(changes, &reflexionv1.ValueChange{Path: e.vc.GetPath(), Before: cur, After: e.vc.GetBefore()})
	}
	return ops, changes, nil
}

func (u *undoRun) undoPod(ctx context.Context, entries []*undoEntry) error {
	var p Pod
	if _, err := u.kube.Get(ctx, podPath(u.ns, entries[0].name), nil, &p); err != nil {
		if IsNotFound(err) {
			for _, e := range entries {
				u.skip(e, "pod %s/%s is gone; left alone", u.ns, e.name)
			}
			return nil
		}
		return err
	}
	ops, changes, err := u.containerPatch("Pod/"+p.Metadata.Name, "/spec", p.Spec.Containers, entries)
	if err != nil || len(ops) == 0 {
		return err
	}
	if err := u.patch(ctx, podPath(u.ns, p.Metadata.Name), ops); err != nil {
		return err
	}
	u.changes = append(u.changes, changes...)
	return nil
}

// replicaSetIn parses "(ReplicaSet NAME)" out of a revision value.
func replicaSetIn(v string) string {
	_, rest, ok := strings.Cut(v, "(ReplicaSet ")
	if !ok {
		return ""
	}
	name, _, _ := strings.Cut(rest, ")")
	return name
}

func (u *undoRun) undoDeployment(ctx context.Context, entries []*undoEntry) error {
	name := entries[0].name
	var d Deployment
	if _, err := u.kube.Get(ctx, deploymentPath(u.ns, name), nil, &d); err != nil {
		if IsNotFound(err) {
			for _, e := range entries {
				u.skip(e, "Deployment %s/%s is gone; left alone", u.ns, name)
			}
			return nil
		}
		return err
	}
	var rev *undoEntry
	var fields []*undoEntry
	for _, e := range entries {
		if e.field == "revision" {
			rev = e
		} else {
			fields = append(fields, e)
		}
	}
	obj := "Deployment/" + name
	if rev == nil {
		ops, changes, err := u.containerPatch(obj, "/spec/template/spec", d.Spec.Template.Spec.Containers, fields)
		if err != nil || len(ops) == 0 {
			return err
		}
		if err := u.patch(ctx, deploymentPath(u.ns, name), ops); err != nil {
			return err
		}
		u.changes = append(u.changes, changes...)
		return nil
	}
	// Roll forward: the Deployment must still run the ReplicaSet the
	// rollback went to, and the recorded revision must still exist.
	w := &workload{deployment: &d}
	var list struct{ Items []ReplicaSet }
	if _, err := u.kube.Get(ctx, replicaSetsPath(u.ns), d.Spec.Selector.query(), &list); err != nil {
		return err
	}
	for _, r := range list.Items {
		if c := r.Metadata.controller(); c != nil && c.Kind == "Deployment" && c.UID == d.Metadata.UID {
			w.replicaSets = append(w.replicaSets, r)
		}
	}
	curRev := revision(&d.Metadata)
	var current, target *ReplicaSet
	wantRev, _ := strconv.ParseInt(rev.vc.GetBefore(), 10, 64) // checked by parseUndoPath
	for i := range w.replicaSets {
		r := &w.replicaSets[i]
		if revision(&r.Metadata) == curRev {
			current = r
		}
		if revision(&r.Metadata) == wantRev {
			target = r
		}
	}
	skipAll := func(format string, args ...interface{}) {
		for _, e := range entries {
			u.skip(e, format, args...)
		}
	}
	curName := ""
	if current != nil {
		curName = current.Metadata.Name
	}
	if want := replicaSetIn(rev.vc.GetAfter()); want == "" || want != curName {
		skipAll("%s now runs revision %d (ReplicaSet %s), not %q: someone changed it since; left alone",
			obj, curRev, curName, rev.vc.GetAfter())
		return nil
	}
	if target == nil {
		skipAll("%s has no ReplicaSet of revision %d any more; left alone", obj, wantRev)
		return nil
	}
	// The listed container fields must still be what the rollback set.
	cs := d.Spec.Template.Spec.Containers
	var changes []*reflexionv1.ValueChange
	for _, e := range fields {
		i := containerIndex(cs, e.container)
		cur := ""
		if i >= 0 {
			cur, _ = fieldValue(&cs[i], e.field)
		}
		if cur != e.vc.GetAfter() {
			u.changedSince(e, cur)
			skipAll("%s changed since the rollback; the whole template is left alone", obj)
			return nil
		}
		now := ""
		if j := containerIndex(target.Spec.Template.Spec.Containers, e.container); j >= 0 {
			now, _ = fieldValue(&target.Spec.Template.Spec.Containers[j], e.field)
		}
		if now != cur {
			changes = append(changes, &reflexionv1.ValueChange{Path: e.vc.GetPath(), Before: cur, After: now})
		}
	}
	ops, err := templateOps(ctx, u.kube, u.ns, target.Metadata.Name, d.Metadata.ResourceVersion)
	if err != nil {
		return err
	}
	if err := u.patch(ctx, deploymentPath(u.ns, name), ops); err != nil {
		return err
	}
	u.changes = append(u.changes, &reflexionv1.ValueChange{Path: rev.vc.GetPath(),
		Before: strconv.FormatInt(curRev, 10),
		After:  fmt.Sprintf("template of revision %d (ReplicaSet %s)", wantRev, target.Metadata.Name)})
	u.changes = append(u.changes, changes...)
	return nil
}

// secretList formats pull secret names as the agent reports them.
func secretList(names []string) string { return "[" + strings.Join(names, ",") + "]" }

func parseSecretList(v string) ([]string, bool) {
	if !strings.HasPrefix(v, "[") || !strings.HasSuffix(v, "]") {
		return nil, false
	}
	inner := v[1 : len(v)-1]
	if inner == "" {
		return nil, true
	}
	names := strings.Split(inner, ",")
	for _, n := range names {
		if n == "" {
			return nil, false
		}
	}
	return names, true
}

func (u *undoRun) undoServiceAccount(ctx context.Context, entries []*undoEntry) error {
	e := entries[len(entries)-1] // one field per service account
	for _, extra := range entries[:len(entries)-1] {
		u.skip(extra, "listed twice; the last entry is used")
	}
	var sa struct {
		Metadata         ObjectMeta
		ImagePullSecrets []struct{ Name string }
	}
	path := serviceAccountPath(u.ns, e.name)
	if _, err := u.kube.Get(ctx, path, nil, &sa); err != nil {
		if IsNotFound(err) {
			u.skip(e, "ServiceAccount %s/%s is gone; left alone", u.ns, e.name)
			return nil
		}
		return err
	}
	var names []string
	for _, s := range sa.ImagePullSecrets {
		names = append(names, s.Name)
	}
	cur := secretList(names)
	if cur != e.vc.GetAfter() {
		u.changedSince(e, cur)
		return nil
	}
	want, ok := parseSecretList(e.vc.GetBefore())
	if !ok {
		return refuse("refused: undo: %q is not a list of pull secrets", e.vc.GetBefore())
	}
	if cur == e.vc.GetBefore() {
		return nil
	}
	ops := []op{testOp("/metadata/resourceVersion", sa.Metadata.ResourceVersion)}
	if len(want) == 0 {
		ops = append(ops, op{Op: "remove", Path: "/imagePullSecrets"})
	} else {
		var l []interface{}
		for _, n := range want {
			l = append(l, map[string]string{"name": n})
		}
		ops = append(ops, op{Op: "add", Path: "/imagePullSecrets", Value: l})
	}
	if err := u.patch(ctx, path, ops); err != nil {
		return err
	}
	u.change(e.vc.GetPath(), cur, e.vc.GetBefore())
	return nil
}
