package agent

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"math/rand"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/reflexion-dev/reflexion/client/go/agent/kubefake"
	"github.com/reflexion-dev/reflexion/client/go/reflexion"
	reflexionv1 "github.com/reflexion-dev/reflexion/client/go/reflexionv1"
)

// e2eConfig: a 3 s observation window reported every 0.5 s, fixed seed.
const e2eConfig = `service:
  shutdown_drain: 0
workflow:
  observation_window: 3
reflexion:
  seed: 7
executor:
  report_interval: 0.5
`

// startServer starts the real reflexion-server ($REFLEXION_SERVER) on a free
// port of 127.0.0.1 with a fresh data dir and e2eConfig, and returns its
// address. It is stopped with SIGTERM at the end of the test, which fails
// unless it exits 0.
func startServer(t *testing.T) string {
	t.Helper()
	return startServerWith(t, "")
}

// startServerWith is startServer with more config sections (YAML).
func startServerWith(t *testing.T, extra string) string {
	t.Helper()
	return startServerConfig(t, e2eConfig+extra)
}

// startServerConfig is startServer with this whole config file (YAML).
func startServerConfig(t *testing.T, yaml string) string {
	t.Helper()
	bin := os.Getenv("REFLEXION_SERVER")
	if bin == "" {
		t.Skip("REFLEXION_SERVER is not set: set it to a built reflexion-server (scripts/test does)")
	}
	dir := t.TempDir()
	config := filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(config, []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	portFile := filepath.Join(dir, "port")
	var stderr syncBuffer
	cmd := exec.Command(bin, "--host", "127.0.0.1", "--port", "0",
		"--port_file", portFile, "--data_dir", filepath.Join(dir, "data"), "--config", config)
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", bin, err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		select {
		case <-exited:
			return
		default:
		}
		if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Errorf("SIGTERM: %v", err)
		}
		select {
		case err := <-exited:
			if err != nil {
				t.Errorf("server exited with %v after SIGTERM; stderr:\n%s", err, stderr.String())
			}
		case <-time.After(20 * time.Second):
			cmd.Process.Kill()
			<-exited
			t.Errorf("server did not exit within 20 s of SIGTERM; stderr:\n%s", stderr.String())
		}
		if t.Failed() {
			t.Logf("server stderr:\n%s", stderr.String())
		}
	})
	// The server writes the port file once it serves (polled: it is another
	// process, there is nothing to wait on).
	deadline := time.Now().Add(20 * time.Second)
	for {
		if b, err := os.ReadFile(portFile); err == nil && len(bytes.TrimSpace(b)) > 0 {
			return "127.0.0.1:" + strings.TrimSpace(string(b))
		}
		select {
		case err := <-exited:
			exited <- err
			t.Fatalf("server exited before serving (%v); stderr:\n%s", err, stderr.String())
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("server wrote no port file within 20 s; stderr:\n%s", stderr.String())
		}
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// e2eRule: web is healthy iff its image is web:1.2, cart iff its memory
// limit is at least 180Mi, ledger never (a bad tag in a namespace the agent
// may not touch).
func e2eRule(pod kubefake.Object, v *kubefake.View) kubefake.Verdict {
	switch kubefake.Label(pod, "app") {
	case "web":
		if img := kubefake.Image(pod, "app"); img != "web:1.2" {
			return kubefake.Verdict{Reason: "ImagePullBackOff", Message: "Back-off pulling image \"" + img + "\"",
				Events: []kubefake.Event{{Type: "Warning", Reason: "Failed", Message: "Failed to pull image \"" + img +
					"\": rpc error: code = NotFound desc = failed to pull and unpack image: manifest unknown: not found"}}}
		}
	case "cart":
		if kubefake.Resource(pod, "app", "limits", "memory") < 180<<20 {
			return kubefake.Verdict{Reason: "OOMKilled"}
		}
	case "ledger":
		return kubefake.Verdict{Reason: "ImagePullBackOff", Message: "Back-off pulling image \"ledger:bad\""}
	}
	return kubefake.Verdict{Healthy: true}
}

func TestAgentResolvesPodsThroughTheRealServer(t *testing.T) {
	addr := startServer(t)
	fake := kubefake.New(e2eRule, time.Now())
	for _, ns := range []string{"shop", "finance"} {
		fake.AddServiceAccount(ns, "default")
	}
	mem := func(l string) kubefake.Object {
		return kubefake.Object{"resources": kubefake.Object{"limits": kubefake.Object{"memory": l}}}
	}
	tmpl := func(app, image, limit string) kubefake.Object {
		return kubefake.Template(map[string]string{"app": app}, kubefake.OneContainer(image, mem(limit)))
	}
	fake.AddDeployment("shop", "web", 1, []kubefake.Object{tmpl("web", "web:1.2", "256Mi"), tmpl("web", "web:1.3-typo", "256Mi")},
		[]time.Duration{24 * time.Hour, 5 * time.Minute})
	fake.AddDeployment("shop", "cart", 1, []kubefake.Object{tmpl("cart", "cart:4.2", "128Mi")}, nil)
	fake.AddDeployment("finance", "ledger", 1, []kubefake.Object{tmpl("ledger", "ledger:bad", "256Mi")}, nil)
	fake.Start()
	defer fake.Close()

	var logs syncBuffer
	results := make(chan *reflexionv1.IncidentResult, 16)
	var mu sync.Mutex
	accepted := 0
	var workflows []string
	a, err := New(Config{Server: addr, Cluster: "e2e", AgentID: "agent-e2e", Namespaces: []string{"shop"},
		PollInterval: 200 * time.Millisecond, Kube: NewKube(fake.URL(), "", nil),
		Log: NewLogger(io.MultiWriter(&logs), "text", RealClock{}), Rand: rand.New(rand.NewSource(1)),
		OnResponse: func(r *reflexionv1.ResolveResponse) {
			switch {
			case r.GetResult() != nil:
				results <- r.GetResult()
			case r.GetAccepted() != nil:
				mu.Lock()
				accepted++
				workflows = append(workflows, r.GetAccepted().GetWorkflowId())
				mu.Unlock()
			}
		}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
		if t.Failed() || testing.Verbose() {
			t.Logf("agent log:\n%s", logs.String())
			for _, c := range fake.Calls() {
				t.Logf("kube call: %s", c)
			}
		}
	}()

	got := map[string]*reflexionv1.IncidentResult{} // by pod's app
	timeout := time.After(45 * time.Second)
	for len(got) < 2 {
		select {
		case r := <-results:
			app := strings.SplitN(r.GetPodName(), "-", 2)[0]
			if got[app] != nil {
				t.Errorf("second result for %s: %v", app, r)
			}
			got[app] = r
		case <-timeout:
			mu.Lock()
			wfs := append([]string(nil), workflows...)
			mu.Unlock()
			t.Fatalf("results after 45 s: %v; workflows now: %s", got, describeWorkflows(addr, wfs))
		}
	}
	for app, strategy := range map[string]string{"web": "patch_image", "cart": "increase_memory_limit"} {
		r := got[app]
		if r == nil {
			t.Errorf("%s: no result (got %v)", app, got)
			continue
		}
		if !r.GetSuccess() || r.GetStatus() != reflexionv1.WorkflowStatus_WORKFLOW_STATUS_RESOLVED ||
			r.GetFinalStrategy().GetType() != strategy || r.GetNamespace() != "shop" {
			t.Errorf("%s: result %v, want RESOLVED by %s", app, r, strategy)
		}
	}
	for _, w := range []string{"shop/web", "shop/cart"} {
		if !fake.WorkloadHealthy(w) {
			t.Errorf("%s is not healthy", w)
		}
	}
	if fake.WorkloadHealthy("finance/ledger") {
		t.Error("finance/ledger turned healthy")
	}
	// Each fix exactly once, nothing else changed.
	calls := fake.Calls()
	if len(calls) != 2 {
		t.Fatalf("mutating calls = %v, want 2", calls)
	}
	var webPatch, cartPatch int
	for _, c := range calls {
		switch {
		case c.Method == "PATCH" && c.Path == "/apis/apps/v1/namespaces/shop/deployments/web" &&
			strings.Contains(c.Body, `"value":"web:1.2"`) && !c.DryRun:
			webPatch++
		case c.Method == "PATCH" && c.Path == "/apis/apps/v1/namespaces/shop/deployments/cart" &&
			strings.Contains(c.Body, `"value":"192Mi"`) && !c.DryRun:
			cartPatch++
		}
	}
	if webPatch != 1 || cartPatch != 1 {
		t.Errorf("calls = %v: want one image patch of web and one 128Mi->192Mi patch of cart", calls)
	}
	// The foreign namespace was never even read.
	for _, r := range fake.Requests() {
		if strings.Contains(r, "/namespaces/finance/") || strings.HasPrefix(r, "GET /api/v1/pods") {
			t.Errorf("request outside the allowed namespaces: %s", r)
		}
	}
	// One incident per failing workload, none re-sent while the pods healed.
	mu.Lock()
	n := accepted
	mu.Unlock()
	if n != 2 {
		t.Errorf("%d incidents accepted, want 2", n)
	}
	if strings.Contains(logs.String(), "secret-") {
		t.Error("log shows a token")
	}
}

// describeWorkflows says where each workflow is (GetWorkflow), for a
// failure message.
func describeWorkflows(addr string, ids []string) string {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := reflexion.Dial(ctx, addr)
	if err != nil {
		return err.Error()
	}
	defer c.Close()
	var out []string
	for _, id := range ids {
		r, err := c.Reflexion.GetWorkflow(ctx, &reflexionv1.GetWorkflowRequest{WorkflowId: id})
		if err != nil {
			out = append(out, id+": "+err.Error())
			continue
		}
		out = append(out, fmt.Sprintf("%s: phase %s, node %q, steps %d", id, r.GetPhase(), r.GetCurrentNode(), r.GetSteps()))
	}
	return strings.Join(out, "; ")
}

// cutProxy forwards TCP connections to target until Cut closes them all
// (the listener stays: the next dial gets through again).
type cutProxy struct {
	l      net.Listener
	target string
	mu     sync.Mutex
	conns  []net.Conn
}

func newCutProxy(t *testing.T, target string) *cutProxy {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &cutProxy{l: l, target: target}
	t.Cleanup(func() { l.Close(); p.Cut() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			u, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			p.mu.Lock()
			p.conns = append(p.conns, c, u)
			p.mu.Unlock()
			go func() { io.Copy(u, c); u.Close() }()
			go func() { io.Copy(c, u); c.Close() }()
		}
	}()
	return p
}

func (p *cutProxy) Addr() string { return p.l.Addr().String() }

// Cut closes every connection made so far.
func (p *cutProxy) Cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
}

func TestAReSentActionAfterAReconnectRunsOnce(t *testing.T) {
	addr := startServer(t)
	proxy := newCutProxy(t, addr)
	fake := kubefake.New(e2eRule, time.Now())
	fake.AddServiceAccount("shop", "default")
	tmpl := func(image string) kubefake.Object {
		return kubefake.Template(map[string]string{"app": "web"}, kubefake.OneContainer(image, nil))
	}
	fake.AddDeployment("shop", "web", 1, []kubefake.Object{tmpl("web:1.2"), tmpl("web:1.3-typo")}, nil)
	entered, release := make(chan struct{}), make(chan struct{})
	var once, relOnce sync.Once
	fake.BeforeMutation(func(method, path string) {
		if method == "PATCH" {
			once.Do(func() { close(entered) })
			<-release // held until the server re-sent the action on the new session
		}
	})
	fake.Start()
	defer fake.Close()
	defer relOnce.Do(func() { close(release) })

	var mu sync.Mutex
	seen := map[string]int{} // action_request by action id
	workflow := make(chan string, 1)
	var logs syncBuffer
	a, err := New(Config{Server: proxy.Addr(), Cluster: "e2e", AgentID: "agent-reconnect", Namespaces: []string{"shop"},
		PollInterval: 200 * time.Millisecond, Kube: NewKube(fake.URL(), "", nil),
		Log: NewLogger(&logs, "text", RealClock{}), Rand: rand.New(rand.NewSource(1)),
		OnResponse: func(r *reflexionv1.ResolveResponse) {
			if ar := r.GetActionRequest(); ar != nil {
				mu.Lock()
				seen[ar.GetActionId()]++
				if seen[ar.GetActionId()] == 2 {
					relOnce.Do(func() { close(release) })
				}
				mu.Unlock()
			}
			if acc := r.GetAccepted(); acc != nil {
				workflow <- acc.GetWorkflowId()
			}
		}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	defer func() {
		cancel()
		<-done
		if t.Failed() || testing.Verbose() {
			t.Logf("agent log:\n%s", logs.String())
		}
	}()
	var wf string
	select {
	case wf = <-workflow:
	case <-time.After(30 * time.Second):
		t.Fatal("no incident accepted")
	}
	select {
	case <-entered:
	case <-time.After(30 * time.Second):
		t.Fatal("the action never reached the API")
	}
	proxy.Cut() // the session breaks while the PATCH is held

	// Follow the workflow to its end on a separate connection.
	c, err := reflexion.Dial(ctx, addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	wctx, wcancel := context.WithTimeout(ctx, 45*time.Second)
	defer wcancel()
	w, err := c.Reflexion.WatchWorkflow(wctx, &reflexionv1.WatchWorkflowRequest{WorkflowId: wf})
	if err != nil {
		t.Fatal(err)
	}
	var result *reflexionv1.IncidentResult
	for result == nil {
		m, err := w.Recv()
		if err != nil {
			t.Fatalf("WatchWorkflow %s: %v; now: %s", wf, err, describeWorkflows(addr, []string{wf}))
		}
		result = m.GetResult()
	}
	// Both catalog fixes of a bad tag with a good previous revision work here.
	if s := result.GetFinalStrategy().GetType(); !result.GetSuccess() || result.GetAttempts() != 1 ||
		(s != "patch_image" && s != "rollback_deployment") {
		t.Errorf("result = %v, want resolved by patch_image or rollback_deployment in one attempt", result)
	}
	mu.Lock()
	for id, n := range seen {
		if n < 2 {
			t.Errorf("action %s was not re-sent after the reconnect (%d)", id, n)
		}
	}
	mu.Unlock()
	if calls := fake.Calls(); len(calls) != 1 {
		t.Errorf("mutating calls = %v, want exactly one PATCH", calls)
	}
	if !fake.WorkloadHealthy("shop/web") {
		t.Error("web not healthy")
	}
}

// TestAnAgentWithATokenOpensItsSession: against a server with a tokens
// file the agent's token (role agent, its cluster) opens the session; the
// server welcomes it. (Without the token the stream is UNAUTHENTICATED:
// tests/server/auth_test.cc.)
func TestAnAgentWithATokenOpensItsSession(t *testing.T) {
	const token = "agent-e2e-secret-77"
	sum := sha256.Sum256([]byte(token))
	tokens := filepath.Join(t.TempDir(), "tokens.yaml")
	if err := os.WriteFile(tokens, []byte("tokens:\n  - sha256: "+hex.EncodeToString(sum[:])+
		"\n    principal: agent-e2e\n    role: agent\n    clusters: [e2e]\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	addr := startServerWith(t, "auth:\n  tokens_file: "+tokens+"\n")
	fake := kubefake.New(e2eRule, time.Now())
	fake.AddServiceAccount("shop", "default")
	fake.Start()
	defer fake.Close()
	var logs syncBuffer
	a, err := New(Config{Server: addr, Auth: reflexion.Options{Token: token}, Cluster: "e2e",
		AgentID: "agent-token", Namespaces: []string{"shop"}, PollInterval: 200 * time.Millisecond,
		Kube: NewKube(fake.URL(), "", nil), Log: NewLogger(&logs, "text", RealClock{}),
		Rand: rand.New(rand.NewSource(1))})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	// The agent logs the welcome (it handles it before any dispatch); polled,
	// bounded: nothing else says so.
	deadline := time.Now().Add(20 * time.Second)
	for !strings.Contains(logs.String(), "session open session_id=e2e/agent-token") {
		if time.Now().After(deadline) {
			t.Errorf("no welcome within 20 s; agent log:\n%s", logs.String())
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Run: %v", err)
	}
	if strings.Contains(logs.String(), token) {
		t.Errorf("the agent logged its token")
	}
}
