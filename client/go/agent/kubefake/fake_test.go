package kubefake

import (
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

func do(t *testing.T, s *Server, method, path, contentType, body string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, s.URL()+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func started(t *testing.T) (*Server, Scenario) {
	s, sc := Mixed(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	s.Start()
	t.Cleanup(s.Close)
	return s, sc
}

const jp = "application/json-patch+json"

func TestJSONPatchTestFailureIsInvalidAndChangesNothing(t *testing.T) {
	s, _ := started(t)
	before := s.Get("deployments", "shop", "web")
	code, body := do(t, s, "PATCH", "/apis/apps/v1/namespaces/shop/deployments/web", jp,
		`[{"op":"test","path":"/spec/template/spec/containers/0/image","value":"nope"},
		  {"op":"replace","path":"/spec/template/spec/containers/0/image","value":"web:1.2"}]`)
	if code != 422 || !strings.Contains(body, "test failed") {
		t.Errorf("= %d %s", code, body)
	}
	if after := s.Get("deployments", "shop", "web"); Image(after["spec"].(map[string]interface{})["template"].(map[string]interface{}), "") !=
		Image(before["spec"].(map[string]interface{})["template"].(map[string]interface{}), "") {
		t.Error("a failed patch changed the deployment")
	}
	if c := s.Calls(); len(c) != 1 || c[0].Code != 422 {
		t.Errorf("calls = %v", c)
	}
}

func TestDryRunValidatesAndChangesNothing(t *testing.T) {
	s, _ := started(t)
	pods := len(s.List("pods", "shop"))
	code, _ := do(t, s, "PATCH", "/apis/apps/v1/namespaces/shop/deployments/web?dryRun=All", jp,
		`[{"op":"replace","path":"/spec/template/spec/containers/0/image","value":"web:1.2"}]`)
	if code != 200 || s.WorkloadHealthy("shop/web") || len(s.List("pods", "shop")) != pods {
		t.Errorf("dry-run patch: %d, healthy %v", code, s.WorkloadHealthy("shop/web"))
	}
	name := s.List("pods", "shop")[0]["metadata"].(map[string]interface{})["name"].(string)
	if code, _ := do(t, s, "DELETE", "/api/v1/namespaces/shop/pods/"+name+"?dryRun=All", "", ""); code != 200 || s.Get("pods", "shop", name) == nil {
		t.Error("dry-run delete deleted")
	}
	// Invalid even as a dry run: a container without an image.
	if code, _ := do(t, s, "PATCH", "/apis/apps/v1/namespaces/shop/deployments/web?dryRun=All", jp,
		`[{"op":"remove","path":"/spec/template/spec/containers/0/image"}]`); code != 422 {
		t.Errorf("invalid dry run = %d", code)
	}
	for _, c := range s.Calls() {
		if !c.DryRun {
			t.Errorf("call %v not recorded as a dry run", c)
		}
	}
}

func TestATemplateChangeRollsOutAndARollbackReusesTheOldReplicaSet(t *testing.T) {
	s, _ := started(t)
	rsBefore := len(s.List("replicasets", "shop"))
	if code, body := do(t, s, "PATCH", "/apis/apps/v1/namespaces/shop/deployments/web", jp,
		`[{"op":"replace","path":"/spec/template/spec/containers/0/image","value":"web:1.2"}]`); code != 200 {
		t.Fatalf("%d %s", code, body)
	}
	if !s.WorkloadHealthy("shop/web") {
		t.Error("web not healthy on web:1.2")
	}
	// Same template as revision 1 (its hash): no new ReplicaSet; it becomes revision 3.
	if n := len(s.List("replicasets", "shop")); n != rsBefore {
		t.Errorf("replicasets %d -> %d", rsBefore, n)
	}
	ann := s.Get("deployments", "shop", "web")["metadata"].(map[string]interface{})["annotations"].(map[string]interface{})
	if ann["deployment.kubernetes.io/revision"] != "3" {
		t.Errorf("revision = %v", ann["deployment.kubernetes.io/revision"])
	}
	if n := len(s.List("pods", "shop")); n == 0 {
		t.Error("no pods")
	}
}

func TestADeletedPodOfADeploymentIsReplaced(t *testing.T) {
	s, _ := started(t)
	var name string
	for _, p := range s.List("pods", "shop") {
		if Label(p, "app") == "api" {
			name = p["metadata"].(map[string]interface{})["name"].(string)
		}
	}
	before := len(s.List("pods", "shop"))
	if code, _ := do(t, s, "DELETE", "/api/v1/namespaces/shop/pods/"+name, "", ""); code != 200 {
		t.Fatal(code)
	}
	if s.Get("pods", "shop", name) != nil || len(s.List("pods", "shop")) != before {
		t.Errorf("pod %s not replaced (%d -> %d pods)", name, before, len(s.List("pods", "shop")))
	}
}

func TestUnsupportedRequestsAreRefused(t *testing.T) {
	s, _ := started(t)
	for _, c := range []struct {
		method, path, ct string
		want             int
	}{
		{"PATCH", "/apis/apps/v1/namespaces/shop/deployments/web", "application/strategic-merge-patch+json", 415},
		{"PATCH", "/apis/apps/v1/namespaces/shop/deployments/nope", jp, 404},
		{"PUT", "/apis/apps/v1/namespaces/shop/deployments/web", jp, 405},
		{"GET", "/api/v1/namespaces/shop/limitranges", "", 404},
		{"POST", "/api/v1/namespaces/shop/secrets", "application/json", 405},
		{"POST", "/api/v1/namespaces/shop/configmaps", "application/json", 400},
		{"GET", "/api/v1/namespaces/shop/pods?dryRun=Some", "", 400},
	} {
		if code, body := do(t, s, c.method, c.path, c.ct, "[]"); code != c.want {
			t.Errorf("%s %s = %d %s, want %d", c.method, c.path, code, body, c.want)
		}
	}
}

func TestMixedScenarioHasFailingFixableWorkloads(t *testing.T) {
	s, sc := started(t)
	if h := sc.Healthy(s); len(h) != 0 {
		t.Errorf("healthy at start: %v", h)
	}
	for _, w := range []string{"data/cache", "shop/frontend"} {
		if !s.WorkloadHealthy(w) {
			t.Errorf("%s not healthy", w)
		}
	}
}

func TestAConfigMapIsCreatedOnceAndADryRunCreatesNothing(t *testing.T) {
	s, _ := started(t)
	cm := `{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"reports-config","labels":{"a":"b"}},"data":{}}`
	path := "/api/v1/namespaces/shop/configmaps"
	if code, body := do(t, s, "POST", path+"?dryRun=All", "application/json", cm); code != 201 {
		t.Fatalf("dry-run POST = %d %s", code, body)
	}
	if s.Get("configmaps", "shop", "reports-config") != nil || s.WorkloadHealthy("shop/reports") {
		t.Fatal("a dry run created the ConfigMap")
	}
	if code, body := do(t, s, "POST", path, "application/json", cm); code != 201 {
		t.Fatalf("POST = %d %s", code, body)
	}
	if got := s.Get("configmaps", "shop", "reports-config"); got == nil || Label(got, "a") != "b" {
		t.Fatalf("configmap = %v", got)
	}
	if code, _ := do(t, s, "POST", path, "application/json", cm); code != 409 {
		t.Errorf("second POST = %d, want 409", code)
	}
	if code, _ := do(t, s, "GET", path+"/reports-config", "", ""); code != 200 {
		t.Errorf("GET = %d", code)
	}
	// The rule sees it: a new pod of reports starts.
	pod := ""
	for _, p := range s.List("pods", "shop") {
		if Label(p, "app") == "reports" {
			pod = p["metadata"].(map[string]interface{})["name"].(string)
		}
	}
	if code, _ := do(t, s, "DELETE", "/api/v1/namespaces/shop/pods/"+pod, "", ""); code != 200 || !s.WorkloadHealthy("shop/reports") {
		t.Errorf("DELETE = %d; reports healthy = %v", code, s.WorkloadHealthy("shop/reports"))
	}
}

func TestTheBurstScenarioHasFiftyFailingPodsOnOneNode(t *testing.T) {
	s, sc := Burst(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	pods := s.List("pods", "shop")
	failing := 0
	for _, p := range pods {
		if Label(p, "app") == "canary" {
			if !PodHealthy(p) {
				t.Error("canary failing at start")
			}
			continue
		}
		if PodHealthy(p) {
			t.Errorf("%v healthy at start", p["metadata"])
		}
		if spec := p["spec"].(map[string]interface{}); spec["nodeName"] != "worker-3" {
			t.Errorf("pod on %v, want worker-3", spec["nodeName"])
		}
		failing++
	}
	if failing != BurstPods || len(sc.Fixable) != BurstPods+1 {
		t.Errorf("%d failing pods, %d fixable workloads; want %d and %d", failing, len(sc.Fixable), BurstPods, BurstPods+1)
	}
}
