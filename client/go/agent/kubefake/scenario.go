package kubefake

import (
	"fmt"
	"sort"
	"strings"
	"time"
)

// Scenario describes a seeded cluster: which workloads a correct fix turns
// healthy, which no catalog action fixes, and which live in namespaces the
// agent must not touch.
type Scenario struct {
	// Namespaces the agent is meant to watch.
	Allowed []string
	// "ns/deployment" of workloads a catalog fix turns healthy.
	Fixable []string
	// "ns/deployment" of failing workloads only a tier C action fixes (a
	// human approves it).
	NeedsApproval []string
	// "ns/deployment" of failing workloads nothing in the catalog fixes.
	Unfixable []string
	// "ns/deployment" of failing workloads outside Allowed.
	Forbidden []string
}

// Healthy returns the Fixable workloads whose pods are all healthy, sorted.
func (sc Scenario) Healthy(s *Server) []string {
	var out []string
	for _, w := range sc.Fixable {
		if s.WorkloadHealthy(w) {
			out = append(out, w)
		}
	}
	sort.Strings(out)
	return out
}

// WorkloadHealthy reports whether "ns/deployment" has at least one pod and
// every pod of it is healthy.
func (s *Server) WorkloadHealthy(w string) bool {
	parts := strings.SplitN(w, "/", 2)
	pods := 0
	for _, p := range s.List("pods", parts[0]) {
		if Label(p, "app") != parts[1] {
			continue
		}
		pods++
		if !PodHealthy(p) {
			return false
		}
	}
	return pods > 0
}

const (
	mi = 1 << 20
	// Kubernetes' default messages, as the kubelet writes them.
	notFoundMsg = "rpc error: code = NotFound desc = failed to pull and unpack image \"docker.io/library/%s\": " +
		"failed to resolve reference \"docker.io/library/%s\": docker.io/library/%s: not found"
	authMsg = "rpc error: code = Unknown desc = failed to pull and unpack image \"%s\": failed to resolve reference " +
		"\"%s\": pull access denied, repository does not exist or may require authorization: authorization failed"
)

// goodImages are the images that exist (and run) in the mixed scenario.
var goodImages = map[string]bool{"web:1.2": true, "api:2.0": true, "checkout:1.9": true,
	"etl:3.1": true, "ledger:5.0": true, "cart:4.2": true, "worker:1.0": true, "search:2.2": true,
	"batch:1.1": true, "reports:1.0": true, "cache:7.0": true, "frontend:3.3": true,
	"registry.example.com/data/ingest:1.0": true}

// crashingImages exist but crash at start (a bad release).
var crashingImages = map[string]string{
	"checkout:2.0": "panic: nil map in payment router",
	"etl:3.2":      "config: unknown key \"sink.batchsize\"",
}

func imageVerdict(image string) (Verdict, bool) {
	if msg, ok := crashingImages[image]; ok {
		return Verdict{Reason: "CrashLoopBackOff", ExitCode: 2, Message: msg,
			Events: []Event{{"Warning", "BackOff", "Back-off restarting failed container app in pod"}}}, true
	}
	if !goodImages[image] {
		return Verdict{Reason: "ImagePullBackOff", Message: fmt.Sprintf("Back-off pulling image %q", image),
			Events: []Event{{"Warning", "Failed", "Failed to pull image \"" + image + "\": " +
				fmt.Sprintf(notFoundMsg, image, image, image)}, {"Warning", "Failed", "Error: ImagePullBackOff"}}}, true
	}
	return Verdict{}, false
}

// MixedRule decides the pods of the mixed scenario: a pod is healthy when
// its workload's real cause is fixed (see Mixed).
func MixedRule(pod Object, v *View) Verdict {
	image := Image(pod, "app")
	if vd, bad := imageVerdict(image); bad {
		return vd
	}
	switch Label(pod, "app") {
	case "cart": // needs 180Mi
		if Resource(pod, "app", "limits", "memory") < 180*mi {
			return Verdict{Reason: "OOMKilled"}
		}
	case "worker": // needs 300Mi
		if Resource(pod, "app", "limits", "memory") < 300*mi {
			return Verdict{Reason: "OOMKilled"}
		}
	case "ingest":
		ok := false
		for _, s := range PullSecrets(pod, v) {
			ok = ok || s == "regcred"
		}
		if !ok {
			return Verdict{Reason: "ImagePullBackOff", Message: fmt.Sprintf("Back-off pulling image %q", image),
				Events: []Event{{"Warning", "Failed", "Failed to pull image \"" + image + "\": " +
					fmt.Sprintf(authMsg, image, image)}}}
		}
	case "search": // starts in 4 s: a liveness probe must wait at least 5
		if ProbeSeconds(pod, "app", "livenessProbe", "initialDelaySeconds", 0) < 5 {
			return Verdict{Reason: "CrashLoopBackOff", ExitCode: 137, Events: []Event{
				{"Warning", "Unhealthy", "Liveness probe failed: Get \"http://10.244.1.7:8080/healthz\": context deadline exceeded (Client.Timeout exceeded while awaiting headers)"},
				{"Normal", "Killing", "Container app failed liveness probe, will be restarted"}}}
		}
	case "batch": // nodes have 5 CPUs free
		if Resource(pod, "app", "requests", "cpu") > 5 {
			return Verdict{Reason: "Unschedulable", Message: "0/3 nodes are available: 3 Insufficient cpu. preemption: 0/3 nodes are available: 3 No preemption victims found for incoming pod."}
		}
	case "reports": // needs its ConfigMap (any content)
		if v.Get("configmaps", "shop", "reports-config") == nil {
			return Verdict{Reason: "CreateContainerConfigError", Message: "configmap \"reports-config\" not found"}
		}
	}
	return Verdict{Healthy: true}
}

// Mixed seeds the mixed scenario: a dozen pods in namespaces shop and data
// (allowed) and finance (not), failing for mixed causes:
//   - shop/web, shop/api (2 replicas): a bad image tag, the previous
//     revision's image is good (patch_image or rollback_deployment);
//   - shop/cart (128Mi, needs 180Mi), data/worker (256Mi, needs 300Mi):
//     OOMKilled (increase_memory_limit);
//   - shop/checkout, data/etl: a crashing release (rollback_deployment or
//     patch_image);
//   - data/ingest: a private image whose pull secret regcred exists in the
//     namespace but is not on the ServiceAccount (attach_pull_secret);
//   - shop/search: a liveness probe that kills the app before it started
//     (relax_probes);
//   - shop/batch: requests 6 CPUs, nodes have 5 (lower_resource_requests);
//   - shop/reports: a missing ConfigMap reports-config: only
//     create_missing_config (tier C: a human approves it, and the agent
//     runs it only with --tier-c create_missing_config) fixes it;
//   - finance/ledger: a bad image tag in a namespace the agent may not touch;
//   - data/cache, shop/frontend: healthy.
func Mixed(start time.Time) (*Server, Scenario) {
	s := New(MixedRule, start)
	for _, ns := range []string{"shop", "data", "finance"} {
		s.AddServiceAccount(ns, "default")
	}
	s.AddSecret("data", "regcred", "kubernetes.io/dockerconfigjson")
	s.AddSecret("data", "etl-db-password", "Opaque")
	s.AddSecret("shop", "tls-cert", "kubernetes.io/tls")
	mem := func(limit string) Object {
		return Object{"resources": Object{"limits": Object{"memory": limit}, "requests": Object{"memory": limit}}}
	}
	two := func(app, good, bad string, extra Object) []Object {
		return []Object{Template(map[string]string{"app": app}, OneContainer(good, extra)),
			Template(map[string]string{"app": app}, OneContainer(bad, extra))}
	}
	one := func(app, image string, extra Object) []Object {
		return []Object{Template(map[string]string{"app": app}, OneContainer(image, extra))}
	}
	recent := []time.Duration{48 * time.Hour, 10 * time.Minute}
	s.AddDeployment("shop", "web", 1, two("web", "web:1.2", "web:1.3-rc0", mem("256Mi")), recent)
	s.AddDeployment("shop", "api", 2, two("api", "api:2.0", "api:2.1-typo", mem("256Mi")), recent)
	s.AddDeployment("shop", "cart", 1, one("cart", "cart:4.2", mem("128Mi")), nil)
	s.AddDeployment("data", "worker", 1, one("worker", "worker:1.0", mem("256Mi")), nil)
	s.AddDeployment("shop", "checkout", 1, two("checkout", "checkout:1.9", "checkout:2.0", mem("256Mi")), recent)
	s.AddDeployment("data", "etl", 1, two("etl", "etl:3.1", "etl:3.2", mem("512Mi")), recent)
	s.AddDeployment("data", "ingest", 1, one("ingest", "registry.example.com/data/ingest:1.0", mem("256Mi")), nil)
	s.AddDeployment("shop", "search", 1, one("search", "search:2.2", Object{
		"livenessProbe": Object{"httpGet": Object{"path": "/healthz", "port": 8080.0},
			"initialDelaySeconds": 3.0, "timeoutSeconds": 1.0, "periodSeconds": 5.0}}), nil)
	s.AddDeployment("shop", "batch", 1, one("batch", "batch:1.1", Object{
		"resources": Object{"requests": Object{"cpu": "6", "memory": "1Gi"}}}), nil)
	s.AddDeployment("shop", "reports", 1, one("reports", "reports:1.0", Object{
		"envFrom": []interface{}{Object{"configMapRef": Object{"name": "reports-config"}}}}), nil)
	s.AddDeployment("finance", "ledger", 1, two("ledger", "ledger:5.0", "ledger:5.1-bad", mem("256Mi")), recent)
	s.AddDeployment("data", "cache", 1, one("cache", "cache:7.0", mem("1Gi")), nil)
	s.AddDeployment("shop", "frontend", 1, one("frontend", "frontend:3.3", mem("256Mi")), nil)
	return s, Scenario{
		Allowed: []string{"shop", "data"},
		Fixable: []string{"data/etl", "data/ingest", "data/worker", "shop/api", "shop/batch", "shop/cart",
			"shop/checkout", "shop/search", "shop/web"},
		NeedsApproval: []string{"shop/reports"},
		Forbidden:     []string{"finance/ledger"},
	}
}

// BurstPods is how many failing pods the burst scenario seeds.
const BurstPods = 50

// BurstRule decides the pods of the burst scenario: a container with a
// memory limit under 180Mi is OOMKilled; an image Mixed does not know (a
// bad tag) cannot be pulled.
func BurstRule(pod Object, v *View) Verdict {
	image := Image(pod, "app")
	if !strings.HasPrefix(image, "shard:") && image != "canary:1.0" {
		if vd, bad := imageVerdict(image); bad {
			return vd
		}
	}
	if Resource(pod, "app", "limits", "memory") < 180*mi {
		return Verdict{Reason: "OOMKilled"}
	}
	return Verdict{Healthy: true}
}

// Burst seeds the burst scenario: BurstPods Deployments shop/shard-00 ..
// shop/shard-49 of one replica each, all scheduled on node worker-3 and all
// OOMKilled (128Mi, they need 180Mi: increase_memory_limit fixes each), a
// storm that should trip the namespace breaker (20 incidents in 10 minutes
// by default) rather than be fixed pod by pod; and shop/canary, healthy
// (canary:1.0), whose image a demo can break after the breaker is cleared
// to show automation resuming (its previous revision is good).
func Burst(start time.Time) (*Server, Scenario) {
	s := New(BurstRule, start)
	s.AddServiceAccount("shop", "default")
	sc := Scenario{Allowed: []string{"shop"}}
	for i := 0; i < BurstPods; i++ {
		name := fmt.Sprintf("shard-%02d", i)
		spec := OneContainer(fmt.Sprintf("shard:%d.0", i), Object{"resources": Object{
			"limits": Object{"memory": "128Mi"}, "requests": Object{"memory": "128Mi"}}})
		spec["nodeName"] = "worker-3"
		s.AddDeployment("shop", name, 1, []Object{Template(map[string]string{"app": name}, spec)}, nil)
		sc.Fixable = append(sc.Fixable, "shop/"+name)
	}
	sc.Fixable = append(sc.Fixable, "shop/canary")
	canary := OneContainer("canary:1.0", Object{"resources": Object{"limits": Object{"memory": "256Mi"}}})
	canary["nodeName"] = "worker-1"
	s.AddDeployment("shop", "canary", 1, []Object{Template(map[string]string{"app": "canary"}, canary)}, nil)
	return s, sc
}
