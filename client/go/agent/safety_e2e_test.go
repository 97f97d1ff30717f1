package agent

// End-to-end tests of the safety policy with the real server, the agent and
// the fake Kubernetes API (what scripts/agent-demo shows): TLS and tokens
// with an operator's approval through the real reflexionctl, shadow mode,
// and a burst that trips the breaker.

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"math/big"
	mrand "math/rand"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/reflexion-dev/reflexion/client/go/agent/kubefake"
	"github.com/reflexion-dev/reflexion/client/go/reflexion"
	reflexionv1 "github.com/reflexion-dev/reflexion/client/go/reflexionv1"
)

// collector keeps what the server sends the agent (OnResponse, which must
// not block) and lets a test wait for a condition on it.
type collector struct {
	mu        sync.Mutex
	results   []*reflexionv1.IncidentResult
	approvals []*reflexionv1.ApprovalRequest
	accepted  int
	changed   chan struct{} // closed and replaced on every message
}

func newCollector() *collector { return &collector{changed: make(chan struct{})} }

func (c *collector) onResponse(r *reflexionv1.ResolveResponse) {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case r.GetResult() != nil:
		c.results = append(c.results, r.GetResult())
	case r.GetApprovalRequest() != nil:
		c.approvals = append(c.approvals, r.GetApprovalRequest())
	case r.GetAccepted() != nil:
		c.accepted++
	default:
		return
	}
	close(c.changed)
	c.changed = make(chan struct{})
}

// waitFor waits until cond (called under the lock) holds, at most d;
// false on the deadline.
func (c *collector) waitFor(d time.Duration, cond func() bool) bool {
	deadline := time.After(d)
	for {
		c.mu.Lock()
		ok := cond()
		ch := c.changed
		c.mu.Unlock()
		if ok {
			return true
		}
		select {
		case <-ch:
		case <-deadline:
			return false
		}
	}
}

// finalResult is the last result of the workflow of pods of app (a
// workflow waiting for an approval reports WAITING, then its final
// result). Call under c.mu.
func (c *collector) lastResultOf(app string) *reflexionv1.IncidentResult {
	var last *reflexionv1.IncidentResult
	for _, r := range c.results {
		if strings.HasPrefix(r.GetPodName(), app+"-") {
			last = r
		}
	}
	return last
}

// startAgent runs an agent with cfg (Log, Rand and OnResponse filled in)
// until the test ends; the agent log is printed if the test failed.
func startAgent(t *testing.T, cfg Config, c *collector) {
	t.Helper()
	var logs syncBuffer
	cfg.Log = NewLogger(&logs, "text", RealClock{})
	cfg.Rand = mrand.New(mrand.NewSource(1))
	cfg.OnResponse = c.onResponse
	if cfg.PollInterval == 0 {
		cfg.PollInterval = 200 * time.Millisecond
	}
	a, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
		if t.Failed() || testing.Verbose() {
			t.Logf("agent log:\n%s", logs.String())
		}
		if cfg.Auth.Token != "" && strings.Contains(logs.String(), cfg.Auth.Token) {
			t.Error("the agent logged its token")
		}
	})
}

// writeTestPKI writes ca.pem, server.pem and server.key (ECDSA P-256, the
// server certificate for 127.0.0.1 and localhost) into dir.
func writeTestPKI(t *testing.T, dir string) (ca, cert, key string) {
	t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "e2e CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour), IsCA: true,
		BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	srvKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	srvTmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "localhost"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames: []string{"localhost"}, IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}}
	srvDER, err := x509.CreateCertificate(rand.Reader, srvTmpl, caTmpl, &srvKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(srvKey)
	if err != nil {
		t.Fatal(err)
	}
	write := func(name, typ string, der []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	return write("ca.pem", "CERTIFICATE", caDER), write("server.pem", "CERTIFICATE", srvDER),
		write("server.key", "EC PRIVATE KEY", keyDER)
}

// reflexionctlPath is the built reflexionctl: $REFLEXION_CTL, else
// client/reflexionctl of the build tree $REFLEXION_SERVER is in.
func reflexionctlPath(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("REFLEXION_CTL"); p != "" {
		if _, err := os.Stat(p); err != nil {
			t.Fatalf("REFLEXION_CTL: %v", err)
		}
		return p
	}
	p := filepath.Join(filepath.Dir(filepath.Dir(os.Getenv("REFLEXION_SERVER"))), "client", "reflexionctl")
	if _, err := os.Stat(p); err != nil {
		t.Skipf("no reflexionctl at %s: build it or set REFLEXION_CTL (scripts/test does)", p)
	}
	return p
}

// ctl runs reflexionctl with token in REFLEXION_TOKEN ("" = none) and
// returns its combined output and whether it exited 0.
func ctl(t *testing.T, bin, addr, ca, token string, args ...string) (string, bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, append([]string{"--server", addr, "--tls_ca", ca}, args...)...)
	env := []string{}
	for _, e := range os.Environ() {
		if !strings.HasPrefix(e, "REFLEXION_TOKEN=") {
			env = append(env, e)
		}
	}
	if token != "" {
		env = append(env, "REFLEXION_TOKEN="+token)
	}
	cmd.Env = env
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	if err != nil {
		if _, exit := err.(*exec.ExitError); !exit {
			t.Fatalf("run %s: %v", bin, err)
		}
	}
	return out.String(), err == nil
}

func TestOverTLSWithATokenTheAgentResolvesAndAnOperatorApprovesThroughReflexionctl(t *testing.T) {
	if os.Getenv("REFLEXION_SERVER") == "" {
		t.Skip("REFLEXION_SERVER is not set: set it to a built reflexion-server (scripts/test does)")
	}
	bin := reflexionctlPath(t)
	dir := t.TempDir()
	ca, cert, key := writeTestPKI(t, dir)
	const agentToken, operatorToken = "agent-tls-e2e-token-41", "operator-tls-e2e-token-42"
	hash := func(s string) string { h := sha256.Sum256([]byte(s)); return hex.EncodeToString(h[:]) }
	tokens := filepath.Join(dir, "tokens.yaml")
	if err := os.WriteFile(tokens, []byte(fmt.Sprintf("tokens:\n"+
		"  - sha256: %s\n    principal: agent-e2e\n    role: agent\n    clusters: [e2e]\n"+
		"  - sha256: %s\n    principal: operator-e2e\n    role: operator\n",
		hash(agentToken), hash(operatorToken))), 0o600); err != nil {
		t.Fatal(err)
	}
	addr := startServerConfig(t, `service:
  shutdown_drain: 0
workflow:
  observation_window: 3
reflexion:
  seed: 7
  tier_c: ask
executor:
  report_interval: 0.5
auth:
  tokens_file: `+tokens+`
tls:
  cert_file: `+cert+`
  key_file: `+key+`
`)
	// shop/web: a bad tag (the previous revision is good); shop/reports: a
	// missing ConfigMap, which only the tier C create_missing_config fixes.
	fake := kubefake.New(kubefake.MixedRule, time.Now())
	fake.AddServiceAccount("shop", "default")
	web := func(image string) kubefake.Object {
		return kubefake.Template(map[string]string{"app": "web"}, kubefake.OneContainer(image, nil))
	}
	fake.AddDeployment("shop", "web", 1, []kubefake.Object{web("web:1.2"), web("web:1.3-rc0")}, nil)
	fake.AddDeployment("shop", "reports", 1, []kubefake.Object{kubefake.Template(map[string]string{"app": "reports"},
		kubefake.OneContainer("reports:1.0", kubefake.Object{"envFrom": []interface{}{
			kubefake.Object{"configMapRef": kubefake.Object{"name": "reports-config"}}}}))}, nil)
	fake.Start()
	defer fake.Close()

	c := newCollector()
	startAgent(t, Config{Server: addr, Auth: reflexion.Options{Token: agentToken, TLSCA: ca}, Cluster: "e2e",
		AgentID: "agent-tls", Namespaces: []string{"shop"}, Kube: NewKube(fake.URL(), "", nil),
		TierC: []reflexionv1.ActionType{reflexionv1.ActionType_ACTION_TYPE_CREATE_MISSING_CONFIG}}, c)

	if !c.waitFor(45*time.Second, func() bool { return len(c.approvals) > 0 }) {
		t.Fatal("no approval request within 45 s")
	}
	c.mu.Lock()
	ap := c.approvals[0]
	c.mu.Unlock()
	if ap.GetAction().GetType() != reflexionv1.ActionType_ACTION_TYPE_CREATE_MISSING_CONFIG ||
		ap.GetTier() != reflexionv1.SafetyTier_SAFETY_TIER_C || !strings.HasPrefix(ap.GetAction().GetPodName(), "reports-") {
		t.Fatalf("approval request = %v, want create_missing_config (tier C) of a reports pod", ap)
	}
	wf := ap.GetWorkflowId()
	if out, ok := ctl(t, bin, addr, ca, "", "approve", wf); ok || !strings.Contains(out, "UNAUTHENTICATED") {
		t.Errorf("approve without a token: ok=%v %q, want UNAUTHENTICATED", ok, out)
	}
	if out, ok := ctl(t, bin, addr, ca, agentToken, "approve", wf); ok || !strings.Contains(out, "PERMISSION_DENIED") {
		t.Errorf("approve with the agent's token: ok=%v %q, want PERMISSION_DENIED", ok, out)
	}
	if calls := fake.Calls(); len(calls) > 0 {
		for _, call := range calls {
			if strings.Contains(call.Path, "configmaps") {
				t.Fatalf("a ConfigMap was created before the approval: %v", call)
			}
		}
	}
	if out, ok := ctl(t, bin, addr, ca, operatorToken, "approve", wf, "--note", "e2e operator"); !ok ||
		!strings.Contains(out, "approved "+wf) {
		t.Fatalf("approve as the operator: ok=%v %q", ok, out)
	}
	resolved := func(app string) bool {
		r := c.lastResultOf(app)
		return r != nil && r.GetStatus() == reflexionv1.WorkflowStatus_WORKFLOW_STATUS_RESOLVED
	}
	if !c.waitFor(45*time.Second, func() bool { return resolved("web") && resolved("reports") }) {
		c.mu.Lock()
		t.Fatalf("web and reports not both resolved within 45 s: %v", c.results)
	}
	c.mu.Lock()
	rep := c.lastResultOf("reports")
	c.mu.Unlock()
	if rep.GetWorkflowId() != wf || rep.GetFinalStrategy().GetType() != "create_missing_config" {
		t.Errorf("reports result = %v, want %s resolved by create_missing_config", rep, wf)
	}
	for _, w := range []string{"shop/web", "shop/reports"} {
		if !fake.WorkloadHealthy(w) {
			t.Errorf("%s is not healthy", w)
		}
	}
	if cm := fake.Get("configmaps", "shop", "reports-config"); cm == nil ||
		kubefake.Label(cm, "app.kubernetes.io/managed-by") != "reflexion-agent" {
		t.Errorf("ConfigMap shop/reports-config = %v, want created by the agent", cm)
	}
	// The server recorded who approved it.
	cl, err := reflexion.DialWith(context.Background(), addr, reflexion.Options{Token: operatorToken, TLSCA: ca})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	audit, err := cl.Reflexion.ListAudit(context.Background(), &reflexionv1.ListAuditRequest{WorkflowId: wf, PageSize: 100})
	if err != nil {
		t.Fatal(err)
	}
	decided, ranApproved := false, false
	for _, e := range audit.GetEntries() {
		if e.GetKind() == reflexionv1.AuditEntry_KIND_DECISION && e.GetDecidedBy() == "operator-e2e" && e.GetOutcome() == "approve" {
			decided = true
		}
		if e.GetKind() == reflexionv1.AuditEntry_KIND_ACTION &&
			e.GetAction().GetType() == reflexionv1.ActionType_ACTION_TYPE_CREATE_MISSING_CONFIG &&
			e.GetDecider() == reflexionv1.AuditEntry_DECIDER_HUMAN && e.GetDecidedBy() == "operator-e2e" {
			ranApproved = true
		}
	}
	if !decided || !ranApproved {
		t.Errorf("audit of %s: want the operator's decision and the action decided by operator-e2e: %v", wf, audit.GetEntries())
	}
}

func TestShadowModeExecutesNothingAndAuditsEveryWouldBeAction(t *testing.T) {
	addr := startServerWith(t, "policy:\n  mode: shadow\n")
	fake := kubefake.New(e2eRule, time.Now())
	fake.AddServiceAccount("shop", "default")
	mem := func(l string) kubefake.Object {
		return kubefake.Object{"resources": kubefake.Object{"limits": kubefake.Object{"memory": l}}}
	}
	tmpl := func(app, image, limit string) kubefake.Object {
		return kubefake.Template(map[string]string{"app": app}, kubefake.OneContainer(image, mem(limit)))
	}
	fake.AddDeployment("shop", "web", 1, []kubefake.Object{tmpl("web", "web:1.2", "256Mi"), tmpl("web", "web:1.3-typo", "256Mi")},
		[]time.Duration{24 * time.Hour, 5 * time.Minute})
	fake.AddDeployment("shop", "cart", 1, []kubefake.Object{tmpl("cart", "cart:4.2", "128Mi")}, nil)
	fake.Start()
	defer fake.Close()
	c := newCollector()
	startAgent(t, Config{Server: addr, Cluster: "e2e", AgentID: "agent-shadow", Namespaces: []string{"shop"},
		Kube: NewKube(fake.URL(), "", nil)}, c)
	if !c.waitFor(45*time.Second, func() bool { return len(c.results) >= 2 }) {
		t.Fatalf("results after 45 s: %v", c.results)
	}
	c.mu.Lock()
	results := append([]*reflexionv1.IncidentResult(nil), c.results...)
	c.mu.Unlock()
	workflows := map[string]bool{}
	for _, r := range results {
		workflows[r.GetWorkflowId()] = true
		if r.GetStatus() != reflexionv1.WorkflowStatus_WORKFLOW_STATUS_WAITING ||
			!strings.Contains(r.GetEscalationReason(), "shadow mode: would run") {
			t.Errorf("result = %v, want WAITING with \"shadow mode: would run\"", r)
		}
	}
	if calls := fake.Calls(); len(calls) != 0 {
		t.Errorf("mutating calls in shadow mode: %v", calls)
	}
	cl, err := reflexion.Dial(context.Background(), addr)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	audit, err := cl.Reflexion.ListAudit(context.Background(), &reflexionv1.ListAuditRequest{PageSize: 1000})
	if err != nil {
		t.Fatal(err)
	}
	shadow := map[string]bool{}
	for _, e := range audit.GetEntries() {
		switch e.GetKind() {
		case reflexionv1.AuditEntry_KIND_ACTION, reflexionv1.AuditEntry_KIND_OUTCOME:
			t.Errorf("an executed action in shadow mode: %v", e)
		case reflexionv1.AuditEntry_KIND_POLICY:
			if e.GetMode() != reflexionv1.PolicyMode_POLICY_MODE_SHADOW || e.GetOutcome() != "shadow" ||
				e.GetAction().GetType() == reflexionv1.ActionType_ACTION_TYPE_UNSPECIFIED {
				t.Errorf("policy entry = %v, want mode shadow, outcome shadow, the would-be action", e)
			}
			shadow[e.GetWorkflowId()] = true
		}
	}
	for wf := range workflows {
		if !shadow[wf] {
			t.Errorf("no shadow audit entry for %s; audit: %v", wf, audit.GetEntries())
		}
	}
	if len(shadow) != len(workflows) {
		t.Errorf("shadow entries for %v, workflows %v", shadow, workflows)
	}
}

func TestABurstTripsOneBreakerWithOneWaitingEscalationAndAClearResumesAutomation(t *testing.T) {
	// The breaker's defaults (20 incidents per namespace in 10m); the
	// namespace rate limit is lifted so the incidents acting before the trip
	// are not denied by it (a denied workflow waits for a human too).
	addr := startServerWith(t, "policy:\n  rate_limits:\n    namespace: {per_hour: 0, burst: 1}\n")
	fake, _ := kubefake.Burst(time.Now())
	fake.Start()
	defer fake.Close()
	c := newCollector()
	startAgent(t, Config{Server: addr, Cluster: "e2e", AgentID: "agent-burst", Namespaces: []string{"shop"},
		Kube: NewKube(fake.URL(), "", nil)}, c)
	if !c.waitFor(60*time.Second, func() bool { return len(c.results) >= kubefake.BurstPods }) {
		c.mu.Lock()
		t.Fatalf("%d results of %d within 60 s", len(c.results), kubefake.BurstPods)
	}
	c.mu.Lock()
	results := append([]*reflexionv1.IncidentResult(nil), c.results...)
	accepted := c.accepted
	c.mu.Unlock()
	if accepted != kubefake.BurstPods {
		t.Errorf("%d incidents accepted, want one per failing pod (%d)", accepted, kubefake.BurstPods)
	}
	waiting, resolved, held := 0, 0, 0
	escalation := ""
	for _, r := range results {
		switch r.GetStatus() {
		case reflexionv1.WorkflowStatus_WORKFLOW_STATUS_WAITING:
			waiting++
			escalation = r.GetWorkflowId()
			if !strings.Contains(r.GetEscalationReason(), "worker-3") {
				t.Errorf("the escalation does not name the node: %v", r)
			}
		case reflexionv1.WorkflowStatus_WORKFLOW_STATUS_RESOLVED:
			resolved++
		default:
			held++
		}
	}
	if waiting != 1 || held < kubefake.BurstPods-20 {
		t.Errorf("waiting %d, resolved %d, held %d: want one waiting escalation and at least %d held",
			waiting, resolved, held, kubefake.BurstPods-20)
	}
	cl, err := reflexion.Dial(context.Background(), addr)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx := context.Background()
	br, err := cl.Reflexion.ListBreakers(ctx, &reflexionv1.ListBreakersRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if len(br.GetBreakers()) != 1 {
		t.Fatalf("breakers = %v, want one", br.GetBreakers())
	}
	b := br.GetBreakers()[0]
	if b.GetScope() != "e2e/shop" || !strings.Contains(b.GetSuspectedCause(), "node worker-3") ||
		b.GetWorkflowId() != escalation || b.GetHeldIncidents() != int32(kubefake.BurstPods-20) {
		t.Errorf("breaker = %v, want e2e/shop, node worker-3, escalation %s, %d held", b, escalation, kubefake.BurstPods-20)
	}
	// Only incidents before the trip (at most 19 shards) acted.
	touched := map[string]bool{}
	for _, call := range fake.Calls() {
		m := regexp.MustCompile(`/namespaces/shop/(?:deployments|pods)/(shard-\d\d)`).FindStringSubmatch(call.Path)
		if m == nil {
			t.Errorf("unexpected call %v", call)
			continue
		}
		touched[m[1]] = true
	}
	if len(touched) > 19 || len(touched) < resolved {
		t.Errorf("calls touched %d shards (%v) for %d resolved: want at most 19", len(touched), touched, resolved)
	}
	if _, err := cl.Reflexion.ClearBreaker(ctx, &reflexionv1.ClearBreakerRequest{Scope: "e2e/shop",
		Reason: "worker-3 drained"}); err != nil {
		t.Fatal(err)
	}
	// A new failure after the clear is fixed without a human: a bad image
	// rolled out to shop/canary.
	req, err := http.NewRequest(http.MethodPatch, fake.URL()+"/apis/apps/v1/namespaces/shop/deployments/canary",
		strings.NewReader(`[{"op":"replace","path":"/spec/template/spec/containers/0/image","value":"canary:1.1-typo"}]`))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json-patch+json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("PATCH canary: HTTP %d", resp.StatusCode)
	}
	if !c.waitFor(45*time.Second, func() bool {
		r := c.lastResultOf("canary")
		return r != nil && r.GetStatus() == reflexionv1.WorkflowStatus_WORKFLOW_STATUS_RESOLVED
	}) {
		c.mu.Lock()
		t.Fatalf("canary not resolved within 45 s of the clear: %v", c.lastResultOf("canary"))
	}
	if !fake.WorkloadHealthy("shop/canary") {
		t.Error("shop/canary is not healthy")
	}
	br, err = cl.Reflexion.ListBreakers(ctx, &reflexionv1.ListBreakersRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if len(br.GetBreakers()) != 0 {
		t.Errorf("breakers after the clear = %v", br.GetBreakers())
	}
}
