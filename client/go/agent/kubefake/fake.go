// Package kubefake is an in-memory fake of the Kubernetes API for the
// agent's tests and demo: Pods, Deployments, ReplicaSets, ServiceAccounts,
// Secrets and Events, served over net/http/httptest with the GET, LIST
// (labelSelector, fieldSelector involvedObject.name), PATCH (JSON patch,
// merge patch) and DELETE the agent uses, dryRun=All (validated, nothing
// changed), a record of every mutating call, and a tiny controller: a
// Deployment whose template changes rolls out a new ReplicaSet (or back to
// an old one) and replaces its pods; a deleted pod of a Deployment is
// replaced. Each new pod's status comes from the test's HealthRule, so a
// fix that lands turns the pod healthy.
package kubefake

import (
	"context"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Verdict is what a HealthRule decides for a new pod.
type Verdict struct {
	Healthy bool
	// Reason when not healthy: ImagePullBackOff, ErrImagePull,
	// InvalidImageName, CreateContainerConfigError, CreateContainerError,
	// CrashLoopBackOff, OOMKilled or Unschedulable.
	Reason  string
	Message string
	// Container that fails ("" = the first).
	Container string
	// ExitCode of the last termination for CrashLoopBackOff (default 1).
	ExitCode int
	// Events about the pod (default: one Warning matching Reason).
	Events []Event
}

// Event is a v1.Event about a pod (type, reason, message).
type Event struct{ Type, Reason, Message string }

// HealthRule decides the status of a pod when it is created (or its spec
// is patched). It runs with the server's lock held: read other objects
// only through v.
type HealthRule func(pod Object, v *View) Verdict

// View reads the server's objects from inside a HealthRule.
type View struct{ s *Server }

// Get returns the object of resource ("serviceaccounts", "secrets",
// "deployments", ...) ns/name, or nil. Do not modify it.
func (v *View) Get(resource, ns, name string) Object { return v.s.objs[resource][ns+"/"+name] }

// Call is one mutating request the server received.
type Call struct {
	Method string
	Path   string // URL path
	Body   string // request body ("" for DELETE)
	DryRun bool   // dryRun=All
	Code   int    // HTTP status answered
}

func (c Call) String() string {
	dry := ""
	if c.DryRun {
		dry = " dryRun=All"
	}
	body := ""
	if c.Body != "" {
		body = " " + c.Body
	}
	return fmt.Sprintf("%s %s%s -> %d%s", c.Method, c.Path, dry, c.Code, body)
}

// Resources served.
var coreResources = map[string]bool{"pods": true, "events": true, "serviceaccounts": true, "secrets": true,
	"configmaps": true}
var appsResources = map[string]bool{"deployments": true, "replicasets": true}

// Bound of the request and call logs (Requests, Calls): the oldest entries
// are dropped.
const maxRequestLog = 100000

// Server is the fake API server. Safe for concurrent use.
type Server struct {
	mu       sync.Mutex
	objs     map[string]map[string]Object // resource -> "ns/name" -> object
	calls    []Call                       // bounded by maxRequestLog
	requests []string                     // "GET /path?query", bounded by maxRequestLog
	rule     HealthRule
	seq      int64
	now      time.Time // fake creation times: strictly increasing
	changed  chan struct{}
	onCall   func(Call)
	before   func(method, path string)
	ts       *httptest.Server
}

// New returns a server (not listening yet) whose new pods' statuses come
// from rule. Creation timestamps start at start and advance 1 ms per
// object (start: e.g. time.Now() to make the agent see a recent rollout).
func New(rule HealthRule, start time.Time) *Server {
	s := &Server{objs: map[string]map[string]Object{}, rule: rule, now: start.UTC().Truncate(time.Second),
		changed: make(chan struct{})}
	for r := range coreResources {
		s.objs[r] = map[string]Object{}
	}
	for r := range appsResources {
		s.objs[r] = map[string]Object{}
	}
	return s
}

// OnCall sets a function called (without the lock) after each mutating
// call, e.g. to print it.
func (s *Server) OnCall(f func(Call)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.onCall = f
}

// BeforeMutation sets a function called (without the lock) before each
// PATCH or DELETE is applied; it may block to hold the call (tests).
func (s *Server) BeforeMutation(f func(method, path string)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.before = f
}

// Start serves on a fresh 127.0.0.1 port; StartOn on l. Close stops.
func (s *Server) Start() { s.ts = httptest.NewServer(s) }

// StartOn serves on l.
func (s *Server) StartOn(l net.Listener) {
	s.ts = httptest.NewUnstartedServer(s)
	s.ts.Listener.Close()
	s.ts.Listener = l
	s.ts.Start()
}

// URL is the base URL ("http://127.0.0.1:PORT").
func (s *Server) URL() string { return s.ts.URL }

// Close stops serving.
func (s *Server) Close() {
	if s.ts != nil {
		s.ts.Close()
	}
}

// Calls returns the mutating calls so far, in order.
func (s *Server) Calls() []Call {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Call(nil), s.calls...)
}

// Requests returns every request so far ("METHOD /path?query"), in order.
func (s *Server) Requests() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.requests...)
}

// Get returns a copy of resource ns/name, or nil.
func (s *Server) Get(resource, ns, name string) Object {
	s.mu.Lock()
	defer s.mu.Unlock()
	if o := s.objs[resource][ns+"/"+name]; o != nil {
		return copyObject(o)
	}
	return nil
}

// List returns copies of the objects of resource in ns ("" = all), sorted
// by namespace and name.
func (s *Server) List(resource, ns string) []Object {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []Object
	for _, o := range s.listLocked(resource, ns) {
		out = append(out, copyObject(o))
	}
	return out
}

// WaitFor blocks until cond (called without the lock; it may use the
// server's getters) holds, re-checking after every change, or ctx ends.
func (s *Server) WaitFor(ctx context.Context, cond func() bool) error {
	for {
		s.mu.Lock()
		ch := s.changed
		s.mu.Unlock()
		if cond() {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

func (s *Server) notifyLocked() {
	close(s.changed)
	s.changed = make(chan struct{})
}

func (s *Server) tickLocked() (time.Time, int64) {
	s.seq++
	s.now = s.now.Add(time.Millisecond)
	return s.now, s.seq
}

func (s *Server) listLocked(resource, ns string) []Object {
	var keys []string
	for k := range s.objs[resource] {
		if ns == "" || strings.HasPrefix(k, ns+"/") {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	out := make([]Object, len(keys))
	for i, k := range keys {
		out[i] = s.objs[resource][k]
	}
	return out
}

// ---------------------------------------------------------------------------
// Seeding.

// metadata creates the metadata of a new object.
func (s *Server) metadataLocked(ns, name string) Object {
	t, seq := s.tickLocked()
	return Object{"name": name, "namespace": ns, "uid": fmt.Sprintf("uid-%d", seq),
		"resourceVersion": strconv.FormatInt(seq, 10), "creationTimestamp": t.Format(time.RFC3339Nano)}
}

func (s *Server) putLocked(resource string, o Object) {
	md := o["metadata"].(map[string]interface{})
	s.objs[resource][str(md["namespace"])+"/"+str(md["name"])] = o
	s.notifyLocked()
}

// AddSecret adds a Secret of type typ (e.g. kubernetes.io/dockerconfigjson).
func (s *Server) AddSecret(ns, name, typ string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.putLocked("secrets", Object{"apiVersion": "v1", "kind": "Secret", "metadata": s.metadataLocked(ns, name),
		"type": typ, "data": Object{".dockerconfigjson": "e30="}})
}

// AddServiceAccount adds a ServiceAccount with the named image pull secrets.
func (s *Server) AddServiceAccount(ns, name string, pullSecrets ...string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	sa := Object{"apiVersion": "v1", "kind": "ServiceAccount", "metadata": s.metadataLocked(ns, name)}
	if len(pullSecrets) > 0 {
		var l []interface{}
		for _, p := range pullSecrets {
			l = append(l, Object{"name": p})
		}
		sa["imagePullSecrets"] = l
	}
	s.putLocked("serviceaccounts", sa)
}

// AddDeployment adds a Deployment with one ReplicaSet per template in
// revisions (oldest first; the last is current) and `replicas` pods of
// the current one, their statuses decided by the rule. A template is a
// v1.PodTemplateSpec ({"metadata":{"labels":..},"spec":{..}}); its labels
// must include the selector labels (app=NAME is added when absent).
// createdAgo is how long ago each ReplicaSet was created, oldest first
// (nil: an hour apart, the newest now).
func (s *Server) AddDeployment(ns, name string, replicas int, revisions []Object, createdAgo []time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	md := s.metadataLocked(ns, name)
	md["labels"] = Object{"app": name}
	d := Object{"apiVersion": "apps/v1", "kind": "Deployment", "metadata": md,
		"spec": Object{"replicas": float64(replicas), "selector": Object{"matchLabels": Object{"app": name}}}}
	for i, t := range revisions {
		t = normalize(t).(map[string]interface{})
		tm, _ := t["metadata"].(map[string]interface{})
		if tm == nil {
			tm = Object{}
			t["metadata"] = tm
		}
		labels, _ := tm["labels"].(map[string]interface{})
		if labels == nil {
			labels = Object{}
			tm["labels"] = labels
		}
		if labels["app"] == nil {
			labels["app"] = name
		}
		ago := time.Duration(len(revisions)-1-i) * time.Hour
		if createdAgo != nil {
			ago = createdAgo[i]
		}
		rs := s.newReplicaSetLocked(d, t, int64(i+1))
		rs["metadata"].(map[string]interface{})["creationTimestamp"] = s.now.Add(-ago).Format(time.RFC3339Nano)
		if i == len(revisions)-1 {
			spec := d["spec"].(map[string]interface{})
			spec["template"] = deepCopy(t)
			setAnnotation(md, "deployment.kubernetes.io/revision", strconv.Itoa(i+1))
			s.putLocked("deployments", d)
			for r := 0; r < replicas; r++ {
				s.newPodLocked(rs)
			}
		}
	}
}

// AddPod adds a bare pod (no controller) with the given spec; its status
// comes from the rule.
func (s *Server) AddPod(ns, name string, labels map[string]string, spec Object) {
	s.mu.Lock()
	defer s.mu.Unlock()
	md := s.metadataLocked(ns, name)
	l := Object{}
	for k, v := range labels {
		l[k] = v
	}
	md["labels"] = l
	pod := Object{"apiVersion": "v1", "kind": "Pod", "metadata": md, "spec": normalize(spec)}
	s.setStatusLocked(pod)
	s.putLocked("pods", pod)
}

func setAnnotation(md Object, k, v string) {
	ann, _ := md["annotations"].(map[string]interface{})
	if ann == nil {
		ann = Object{}
		md["annotations"] = ann
	}
	ann[k] = v
}

func str(v interface{}) string { s, _ := v.(string); return s }

// templateHash is the pod-template-hash of a template (without the label).
func templateHash(t Object) string {
	c := copyObject(t)
	if md, ok := c["metadata"].(map[string]interface{}); ok {
		if l, ok := md["labels"].(map[string]interface{}); ok {
			delete(l, "pod-template-hash")
		}
	}
	h := fnv.New32a()
	b, _ := json.Marshal(c)
	h.Write(b)
	return fmt.Sprintf("%08x", h.Sum32())[:8]
}

func (s *Server) newReplicaSetLocked(d, template Object, rev int64) Object {
	dmd := d["metadata"].(map[string]interface{})
	hash := templateHash(template)
	t := copyObject(template)
	tmd := t["metadata"].(map[string]interface{})
	labels, _ := tmd["labels"].(map[string]interface{})
	if labels == nil {
		labels = Object{}
		tmd["labels"] = labels
	}
	labels["pod-template-hash"] = hash
	md := s.metadataLocked(str(dmd["namespace"]), str(dmd["name"])+"-"+hash)
	md["labels"] = deepCopy(labels)
	setAnnotation(md, "deployment.kubernetes.io/revision", strconv.FormatInt(rev, 10))
	md["ownerReferences"] = []interface{}{Object{"apiVersion": "apps/v1", "kind": "Deployment",
		"name": dmd["name"], "uid": dmd["uid"], "controller": true}}
	sel := Object{}
	for k, v := range labels {
		sel[k] = v
	}
	rs := Object{"apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": md,
		"spec": Object{"selector": Object{"matchLabels": sel}, "template": t}}
	s.putLocked("replicasets", rs)
	return rs
}

const suffixChars = "bcdfghjklmnpqrstvwxz2456789"

func (s *Server) newPodLocked(rs Object) Object {
	rmd := rs["metadata"].(map[string]interface{})
	t := rs["spec"].(map[string]interface{})["template"].(map[string]interface{})
	n := s.seq + 1
	suffix := ""
	for i := 0; i < 5; i++ {
		suffix += string(suffixChars[n%int64(len(suffixChars))])
		n /= int64(len(suffixChars))
	}
	md := s.metadataLocked(str(rmd["namespace"]), str(rmd["name"])+"-"+suffix)
	md["labels"] = deepCopy(t["metadata"].(map[string]interface{})["labels"])
	md["ownerReferences"] = []interface{}{Object{"apiVersion": "apps/v1", "kind": "ReplicaSet",
		"name": rmd["name"], "uid": rmd["uid"], "controller": true}}
	pod := Object{"apiVersion": "v1", "kind": "Pod", "metadata": md, "spec": deepCopy(t["spec"])}
	s.setStatusLocked(pod)
	s.putLocked("pods", pod)
	return pod
}

var pendingReasons = map[string]bool{"ImagePullBackOff": true, "ErrImagePull": true, "InvalidImageName": true,
	"CreateContainerConfigError": true, "CreateContainerError": true}

// setStatusLocked computes the pod's status from the rule and records its
// events.
func (s *Server) setStatusLocked(pod Object) {
	v := s.rule(pod, &View{s})
	md := pod["metadata"].(map[string]interface{})
	spec := pod["spec"].(map[string]interface{})
	containers, _ := spec["containers"].([]interface{})
	failing := v.Container
	if failing == "" && len(containers) > 0 {
		failing = str(containers[0].(map[string]interface{})["name"])
	}
	cond := func(t, st, reason, msg string) Object {
		c := Object{"type": t, "status": st}
		if reason != "" {
			c["reason"], c["message"] = reason, msg
		}
		return c
	}
	status := Object{}
	var statuses []interface{}
	for _, c := range containers {
		cm := c.(map[string]interface{})
		cs := Object{"name": cm["name"], "image": cm["image"], "ready": true, "restartCount": float64(0),
			"state": Object{"running": Object{"startedAt": s.now.Format(time.RFC3339)}}, "lastState": Object{}}
		if !v.Healthy && str(cm["name"]) == failing {
			cs["ready"] = false
			switch {
			case pendingReasons[v.Reason]:
				cs["state"] = Object{"waiting": Object{"reason": v.Reason, "message": v.Message}}
			case v.Reason == "OOMKilled":
				cs["restartCount"] = float64(3)
				cs["state"] = Object{"waiting": Object{"reason": "CrashLoopBackOff",
					"message": "back-off 40s restarting failed container=" + str(cm["name"])}}
				cs["lastState"] = Object{"terminated": Object{"reason": "OOMKilled", "exitCode": float64(137)}}
			default: // CrashLoopBackOff
				code := v.ExitCode
				if code == 0 {
					code = 1
				}
				cs["restartCount"] = float64(4)
				cs["state"] = Object{"waiting": Object{"reason": "CrashLoopBackOff",
					"message": "back-off 1m20s restarting failed container=" + str(cm["name"])}}
				cs["lastState"] = Object{"terminated": Object{"reason": "Error", "exitCode": float64(code)}}
			}
		}
		statuses = append(statuses, cs)
	}
	switch {
	case v.Healthy:
		status["phase"] = "Running"
		status["conditions"] = []interface{}{cond("PodScheduled", "True", "", ""), cond("Ready", "True", "", "")}
		status["containerStatuses"] = statuses
	case v.Reason == "Unschedulable":
		status["phase"] = "Pending"
		status["conditions"] = []interface{}{cond("PodScheduled", "False", "Unschedulable", v.Message)}
	case pendingReasons[v.Reason]:
		status["phase"] = "Pending"
		status["conditions"] = []interface{}{cond("PodScheduled", "True", "", ""),
			cond("Ready", "False", "ContainersNotReady", "containers with unready status: ["+failing+"]")}
		status["containerStatuses"] = statuses
	default:
		status["phase"] = "Running"
		status["conditions"] = []interface{}{cond("PodScheduled", "True", "", ""),
			cond("Ready", "False", "ContainersNotReady", "containers with unready status: ["+failing+"]")}
		status["containerStatuses"] = statuses
	}
	pod["status"] = status
	if v.Healthy {
		return
	}
	events := v.Events
	if len(events) == 0 {
		switch v.Reason {
		case "Unschedulable":
			events = []Event{{"Warning", "FailedScheduling", v.Message}}
		case "OOMKilled", "CrashLoopBackOff":
			events = []Event{{"Warning", "BackOff", "Back-off restarting failed container " + failing}}
		default:
			events = []Event{{"Warning", "Failed", v.Message}}
		}
	}
	for _, e := range events {
		emd := s.metadataLocked(str(md["namespace"]), fmt.Sprintf("%s.%x", str(md["name"]), s.seq))
		s.objs["events"][str(md["namespace"])+"/"+str(emd["name"])] = Object{"apiVersion": "v1", "kind": "Event",
			"metadata": emd, "type": e.Type, "reason": e.Reason, "message": e.Message, "count": float64(1),
			"involvedObject": Object{"kind": "Pod", "name": md["name"], "namespace": md["namespace"], "uid": md["uid"]},
			"firstTimestamp": s.now.Format(time.RFC3339), "lastTimestamp": s.now.Format(time.RFC3339)}
	}
}

// ---------------------------------------------------------------------------
// HTTP.

func writeJSON(w http.ResponseWriter, code int, v interface{}) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(v)
}

func statusErr(w http.ResponseWriter, code int, reason, msg string) {
	writeJSON(w, code, Object{"kind": "Status", "apiVersion": "v1", "status": "Failure",
		"message": msg, "reason": reason, "code": code})
}

// route splits an API path into namespace, resource and name.
func route(path string) (ns, resource, name string, ok bool) {
	if path == "/api/v1/pods" {
		return "", "pods", "", true
	}
	var rest string
	var set map[string]bool
	switch {
	case strings.HasPrefix(path, "/api/v1/namespaces/"):
		rest, set = strings.TrimPrefix(path, "/api/v1/namespaces/"), coreResources
	case strings.HasPrefix(path, "/apis/apps/v1/namespaces/"):
		rest, set = strings.TrimPrefix(path, "/apis/apps/v1/namespaces/"), appsResources
	default:
		return "", "", "", false
	}
	parts := strings.Split(rest, "/")
	if len(parts) < 2 || len(parts) > 3 || !set[parts[1]] || parts[0] == "" {
		return "", "", "", false
	}
	ns, resource = parts[0], parts[1]
	if len(parts) == 3 {
		if parts[2] == "" {
			return "", "", "", false
		}
		name = parts[2]
	}
	return ns, resource, name, true
}

func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(io.LimitReader(r.Body, 8<<20))
	q := r.URL.Query()
	s.mu.Lock()
	line := r.Method + " " + r.URL.Path
	if r.URL.RawQuery != "" {
		line += "?" + r.URL.RawQuery
	}
	s.requests = append(s.requests, line)
	if len(s.requests) > maxRequestLog {
		s.requests = s.requests[len(s.requests)-maxRequestLog:]
	}
	s.mu.Unlock()
	ns, resource, name, ok := route(r.URL.Path)
	if !ok {
		statusErr(w, http.StatusNotFound, "NotFound", "the server could not find the requested resource")
		return
	}
	if v := q.Get("dryRun"); v != "" && v != "All" {
		statusErr(w, http.StatusBadRequest, "BadRequest", "dryRun: unsupported value "+strconv.Quote(v))
		return
	}
	dry := q.Get("dryRun") == "All"
	switch {
	case r.Method == http.MethodGet && name == "":
		s.serveList(w, ns, resource, q)
	case r.Method == http.MethodGet:
		if o := s.Get(resource, ns, name); o != nil {
			writeJSON(w, http.StatusOK, o)
		} else {
			statusErr(w, http.StatusNotFound, "NotFound", fmt.Sprintf("%s %q not found", resource, name))
		}
	case r.Method == http.MethodPatch && name != "":
		s.record(w, r, body, dry, func() (int, interface{}) {
			return s.patchLocked(resource, ns, name, r.Header.Get("Content-Type"), body, dry)
		})
	case r.Method == http.MethodPost && name == "":
		s.record(w, r, body, dry, func() (int, interface{}) { return s.createLocked(resource, ns, body, dry) })
	case r.Method == http.MethodDelete && name != "":
		s.record(w, r, body, dry, func() (int, interface{}) { return s.deleteLocked(resource, ns, name, dry) })
	default:
		statusErr(w, http.StatusMethodNotAllowed, "MethodNotAllowed", r.Method+" is not supported here")
	}
}

func (s *Server) record(w http.ResponseWriter, r *http.Request, body []byte, dry bool, f func() (int, interface{})) {
	s.mu.Lock()
	before := s.before
	s.mu.Unlock()
	if before != nil {
		before(r.Method, r.URL.Path)
	}
	s.mu.Lock()
	code, out := f()
	c := Call{Method: r.Method, Path: r.URL.Path, Body: string(body), DryRun: dry, Code: code}
	s.calls = append(s.calls, c)
	if len(s.calls) > maxRequestLog {
		s.calls = s.calls[len(s.calls)-maxRequestLog:]
	}
	onCall := s.onCall
	s.notifyLocked()
	s.mu.Unlock()
	if onCall != nil {
		onCall(c)
	}
	writeJSON(w, code, out)
}

func failure(code int, reason, msg string) (int, interface{}) {
	return code, Object{"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": msg, "reason": reason, "code": code}
}

func labelsMatch(o Object, selector string) bool {
	if selector == "" {
		return true
	}
	md, _ := o["metadata"].(map[string]interface{})
	labels, _ := md["labels"].(map[string]interface{})
	for _, req := range strings.Split(selector, ",") {
		kv := strings.SplitN(req, "=", 2)
		if len(kv) != 2 || str(labels[kv[0]]) != kv[1] {
			return false
		}
	}
	return true
}

func (s *Server) serveList(w http.ResponseWriter, ns, resource string, q url.Values) {
	sel := q.Get("labelSelector")
	field := q.Get("fieldSelector")
	if field != "" && !strings.HasPrefix(field, "involvedObject.name=") {
		statusErr(w, http.StatusBadRequest, "BadRequest", "unsupported fieldSelector "+strconv.Quote(field))
		return
	}
	items := []interface{}{}
	for _, o := range s.List(resource, ns) {
		if !labelsMatch(o, sel) {
			continue
		}
		if field != "" {
			io, _ := o["involvedObject"].(map[string]interface{})
			if str(io["name"]) != strings.TrimPrefix(field, "involvedObject.name=") {
				continue
			}
		}
		// Lists carry no kind/apiVersion on items (as the API server).
		delete(o, "kind")
		delete(o, "apiVersion")
		items = append(items, o)
	}
	if resource == "events" {
		sort.SliceStable(items, func(i, j int) bool {
			return seqOf(items[i].(map[string]interface{})) < seqOf(items[j].(map[string]interface{}))
		})
	}
	s.mu.Lock()
	rv := strconv.FormatInt(s.seq, 10)
	s.mu.Unlock()
	writeJSON(w, http.StatusOK, Object{"kind": "List", "apiVersion": "v1",
		"metadata": Object{"resourceVersion": rv}, "items": items})
}

func seqOf(o Object) int64 {
	md, _ := o["metadata"].(map[string]interface{})
	n, _ := strconv.ParseInt(str(md["resourceVersion"]), 10, 64)
	return n
}

func (s *Server) patchLocked(resource, ns, name, contentType string, body []byte, dry bool) (int, interface{}) {
	cur := s.objs[resource][ns+"/"+name]
	if cur == nil {
		return failure(http.StatusNotFound, "NotFound", fmt.Sprintf("%s %q not found", resource, name))
	}
	var next Object
	var err error
	switch strings.TrimSpace(strings.Split(contentType, ";")[0]) {
	case "application/json-patch+json":
		next, err = applyJSONPatch(cur, body)
	case "application/merge-patch+json":
		next, err = applyMergePatch(cur, body)
	default:
		return failure(http.StatusUnsupportedMediaType, "UnsupportedMediaType",
			"the body of the request was in an unknown format: "+contentType)
	}
	if err != nil {
		return failure(http.StatusUnprocessableEntity, "Invalid", err.Error())
	}
	if err := validate(resource, cur, next); err != nil {
		return failure(http.StatusUnprocessableEntity, "Invalid", err.Error())
	}
	if dry || reflect.DeepEqual(cur, next) {
		return http.StatusOK, next
	}
	_, seq := s.tickLocked()
	next["metadata"].(map[string]interface{})["resourceVersion"] = strconv.FormatInt(seq, 10)
	s.putLocked(resource, next)
	switch resource {
	case "deployments":
		oldT := cur["spec"].(map[string]interface{})["template"]
		newT := next["spec"].(map[string]interface{})["template"]
		if !reflect.DeepEqual(oldT, newT) {
			s.rolloutLocked(next)
		}
	case "pods":
		if !reflect.DeepEqual(cur["spec"], next["spec"]) {
			s.setStatusLocked(next) // the kubelet restarts the container
		}
	}
	return http.StatusOK, next
}

// validate checks what the API server would for the agent's patches.
func validate(resource string, cur, next Object) error {
	cm, _ := cur["metadata"].(map[string]interface{})
	nm, _ := next["metadata"].(map[string]interface{})
	if nm == nil || str(nm["name"]) != str(cm["name"]) || str(nm["namespace"]) != str(cm["namespace"]) ||
		str(nm["uid"]) != str(cm["uid"]) {
		return fmt.Errorf("metadata.name, namespace and uid are immutable")
	}
	var spec map[string]interface{}
	switch resource {
	case "deployments":
		s, _ := next["spec"].(map[string]interface{})
		t, _ := s["template"].(map[string]interface{})
		spec, _ = t["spec"].(map[string]interface{})
		if spec == nil {
			return fmt.Errorf("spec.template.spec: required")
		}
	case "pods":
		spec, _ = next["spec"].(map[string]interface{})
		oc, _ := cur["spec"].(map[string]interface{})["containers"].([]interface{})
		nc, _ := spec["containers"].([]interface{})
		if len(oc) != len(nc) {
			return fmt.Errorf("spec.containers: may not add or remove containers")
		}
		for i := range oc {
			a, b := copyObject(oc[i].(map[string]interface{})), copyObject(nc[i].(map[string]interface{}))
			delete(a, "image")
			delete(b, "image")
			if !reflect.DeepEqual(a, b) {
				return fmt.Errorf("spec: Forbidden: pod updates may not change fields other than spec.containers[*].image")
			}
		}
	case "serviceaccounts":
		if ips, ok := next["imagePullSecrets"]; ok {
			l, ok := ips.([]interface{})
			if !ok {
				return fmt.Errorf("imagePullSecrets: must be a list")
			}
			for i, e := range l {
				m, _ := e.(map[string]interface{})
				if str(m["name"]) == "" {
					return fmt.Errorf("imagePullSecrets[%d].name: required", i)
				}
			}
		}
		return nil
	default:
		return nil
	}
	cs, _ := spec["containers"].([]interface{})
	if len(cs) == 0 {
		return fmt.Errorf("spec.containers: required")
	}
	for i, c := range cs {
		m, _ := c.(map[string]interface{})
		if str(m["name"]) == "" || str(m["image"]) == "" {
			return fmt.Errorf("spec.containers[%d]: name and image are required", i)
		}
		if res, ok := m["resources"].(map[string]interface{}); ok {
			for _, k := range []string{"limits", "requests"} {
				if l, ok := res[k].(map[string]interface{}); ok {
					for rk, rv := range l {
						if _, err := parseBytes(str(rv)); err != nil {
							return fmt.Errorf("spec.containers[%d].resources.%s.%s: %v", i, k, rk, err)
						}
					}
				}
			}
		}
	}
	return nil
}

// rolloutLocked makes the Deployment's current template live: it reuses a
// ReplicaSet of the same template (a rollback: it gets the next revision)
// or creates one, and replaces the Deployment's pods.
func (s *Server) rolloutLocked(d Object) {
	md := d["metadata"].(map[string]interface{})
	ns := str(md["namespace"])
	t := d["spec"].(map[string]interface{})["template"].(map[string]interface{})
	hash := templateHash(t)
	var maxRev int64
	var target Object
	for _, rs := range s.ownedLocked("replicasets", ns, str(md["uid"])) {
		rmd := rs["metadata"].(map[string]interface{})
		ann, _ := rmd["annotations"].(map[string]interface{})
		rev, _ := strconv.ParseInt(str(ann["deployment.kubernetes.io/revision"]), 10, 64)
		if rev > maxRev {
			maxRev = rev
		}
		if l, _ := rmd["labels"].(map[string]interface{}); str(l["pod-template-hash"]) == hash {
			target = rs
		}
	}
	if target == nil {
		target = s.newReplicaSetLocked(d, t, maxRev+1)
	} else {
		setAnnotation(target["metadata"].(map[string]interface{}), "deployment.kubernetes.io/revision",
			strconv.FormatInt(maxRev+1, 10))
	}
	setAnnotation(md, "deployment.kubernetes.io/revision", strconv.FormatInt(maxRev+1, 10))
	replicas := 1
	if r, ok := d["spec"].(map[string]interface{})["replicas"].(float64); ok {
		replicas = int(r)
	}
	tuid := str(target["metadata"].(map[string]interface{})["uid"])
	for _, rs := range s.ownedLocked("replicasets", ns, str(md["uid"])) {
		for _, p := range s.ownedLocked("pods", ns, str(rs["metadata"].(map[string]interface{})["uid"])) {
			pmd := p["metadata"].(map[string]interface{})
			if str(rs["metadata"].(map[string]interface{})["uid"]) != tuid {
				delete(s.objs["pods"], ns+"/"+str(pmd["name"]))
			}
		}
	}
	have := len(s.ownedLocked("pods", ns, tuid))
	for i := have; i < replicas; i++ {
		s.newPodLocked(target)
	}
	s.notifyLocked()
}

// ownedLocked lists objects of resource in ns controlled by uid.
func (s *Server) ownedLocked(resource, ns, uid string) []Object {
	var out []Object
	for _, o := range s.listLocked(resource, ns) {
		md := o["metadata"].(map[string]interface{})
		refs, _ := md["ownerReferences"].([]interface{})
		for _, r := range refs {
			if m, _ := r.(map[string]interface{}); str(m["uid"]) == uid {
				out = append(out, o)
			}
		}
	}
	return out
}

// createLocked creates a ConfigMap (the only kind the fake creates) from
// body: 409 if it exists, 400 if the body is not a ConfigMap of ns.
func (s *Server) createLocked(resource, ns string, body []byte, dry bool) (int, interface{}) {
	if resource != "configmaps" {
		return failure(http.StatusMethodNotAllowed, "MethodNotAllowed", "the fake creates configmaps only")
	}
	var o Object
	if err := json.Unmarshal(body, &o); err != nil {
		return failure(http.StatusBadRequest, "BadRequest", "decode: "+err.Error())
	}
	md, _ := o["metadata"].(map[string]interface{})
	name := str(md["name"])
	if str(o["kind"]) != "ConfigMap" || name == "" || (md["namespace"] != nil && str(md["namespace"]) != ns) {
		return failure(http.StatusBadRequest, "BadRequest", "want a ConfigMap with metadata.name in namespace "+ns)
	}
	if s.objs[resource][ns+"/"+name] != nil {
		return failure(http.StatusConflict, "AlreadyExists", fmt.Sprintf("configmaps %q already exists", name))
	}
	meta := s.metadataLocked(ns, name)
	for _, k := range []string{"labels", "annotations"} {
		if md[k] != nil {
			meta[k] = md[k]
		}
	}
	o["metadata"] = meta
	if dry {
		return http.StatusCreated, o
	}
	s.putLocked(resource, o)
	return http.StatusCreated, o
}

// AddConfigMap adds a ConfigMap with data.
func (s *Server) AddConfigMap(ns, name string, data map[string]string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	d := Object{}
	for k, v := range data {
		d[k] = v
	}
	s.putLocked("configmaps", Object{"apiVersion": "v1", "kind": "ConfigMap", "metadata": s.metadataLocked(ns, name), "data": d})
}

func (s *Server) deleteLocked(resource, ns, name string, dry bool) (int, interface{}) {
	cur := s.objs[resource][ns+"/"+name]
	if cur == nil {
		return failure(http.StatusNotFound, "NotFound", fmt.Sprintf("%s %q not found", resource, name))
	}
	if resource != "pods" {
		return failure(http.StatusMethodNotAllowed, "MethodNotAllowed", "the fake deletes pods only")
	}
	if dry {
		return http.StatusOK, cur
	}
	delete(s.objs[resource], ns+"/"+name)
	s.notifyLocked()
	// The ReplicaSet controller replaces a pod of the current revision.
	md := cur["metadata"].(map[string]interface{})
	refs, _ := md["ownerReferences"].([]interface{})
	for _, r := range refs {
		ref, _ := r.(map[string]interface{})
		if str(ref["kind"]) != "ReplicaSet" {
			continue
		}
		rs := s.objs["replicasets"][ns+"/"+str(ref["name"])]
		if rs == nil {
			continue
		}
		rmd := rs["metadata"].(map[string]interface{})
		rrefs, _ := rmd["ownerReferences"].([]interface{})
		for _, dr := range rrefs {
			dref, _ := dr.(map[string]interface{})
			d := s.objs["deployments"][ns+"/"+str(dref["name"])]
			if d == nil {
				continue
			}
			dann, _ := d["metadata"].(map[string]interface{})["annotations"].(map[string]interface{})
			rann, _ := rmd["annotations"].(map[string]interface{})
			if str(dann["deployment.kubernetes.io/revision"]) == str(rann["deployment.kubernetes.io/revision"]) {
				s.newPodLocked(rs)
			}
		}
	}
	return http.StatusOK, cur
}
