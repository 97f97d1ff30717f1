package agent

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"sort"
	"time"

	reflexionv1 "github.com/reflexion-dev/reflexion/client/go/reflexionv1"
	"google.golang.org/protobuf/types/known/structpb"
)

// Limits of the incident (Incident field comments).
const (
	maxPodEvents  = 256
	maxPodJSON    = 1 << 20
	recentRollout = time.Hour
	dockerCfgJSON = "kubernetes.io/dockerconfigjson"
	dockerCfgOld  = "kubernetes.io/dockercfg"
)

// workload is a pod's Deployment with its ReplicaSets, as far as found.
type workload struct {
	rs          *ReplicaSet  // the pod's ReplicaSet (nil for a bare pod)
	deployment  *Deployment  // its Deployment (nil when the RS has none)
	replicaSets []ReplicaSet // the Deployment's ReplicaSets, newest revision first
}

// findWorkload follows the pod's controller (or owner when the pod is gone)
// to its ReplicaSet and Deployment and lists the Deployment's ReplicaSets
// (by spec.selector.matchLabels, controlled by the Deployment).
func findWorkload(ctx context.Context, k *Kube, ns string, pod *Pod, owner *reflexionv1.WorkloadRef) (*workload, error) {
	w := &workload{}
	var rsName string
	if pod != nil {
		if ref := pod.Metadata.controller(); ref != nil && ref.Kind == "ReplicaSet" {
			rsName = ref.Name
		} else if ref != nil {
			return w, nil // another controller: not a Deployment
		}
	} else if owner.GetKind() == "ReplicaSet" {
		rsName = owner.GetName()
	}
	if rsName == "" {
		return w, nil
	}
	var rs ReplicaSet
	if _, err := k.Get(ctx, replicaSetPath(ns, rsName), nil, &rs); err != nil {
		return nil, err
	}
	w.rs = &rs
	ref := rs.Metadata.controller()
	if ref == nil || ref.Kind != "Deployment" {
		return w, nil
	}
	var d Deployment
	if _, err := k.Get(ctx, deploymentPath(ns, ref.Name), nil, &d); err != nil {
		return nil, err
	}
	w.deployment = &d
	var list struct{ Items []ReplicaSet }
	if _, err := k.Get(ctx, replicaSetsPath(ns), d.Spec.Selector.query(), &list); err != nil {
		return nil, err
	}
	for _, r := range list.Items {
		if c := r.Metadata.controller(); c != nil && c.Kind == "Deployment" && c.UID == d.Metadata.UID {
			w.replicaSets = append(w.replicaSets, r)
		}
	}
	sort.Slice(w.replicaSets, func(i, j int) bool {
		return revision(&w.replicaSets[i].Metadata) > revision(&w.replicaSets[j].Metadata)
	})
	return w, nil
}

// previous returns the ReplicaSet of the highest revision below the
// Deployment's current one, or nil.
func (w *workload) previous() *ReplicaSet {
	if w.deployment == nil {
		return nil
	}
	cur := revision(&w.deployment.Metadata)
	for i := range w.replicaSets {
		if r := revision(&w.replicaSets[i].Metadata); r > 0 && r < cur {
			return &w.replicaSets[i]
		}
	}
	return nil
}

// BuildIncident builds the incident of a failing pod: the pod object as a
// Struct, its events, a request id, and the executor facts (see
// Diagnosis): last healthy image, pull secrets of the namespace, a recent
// rollout, a first revision, the memory limit. pod_name, namespace and
// error_type stay empty: the server reads them from the pod. A fact that
// cannot be read (e.g. forbidden) is left out and named in the returned
// warnings; only a failure to read the pod's own data is an error.
func BuildIncident(ctx context.Context, k *Kube, now time.Time, podJSON []byte, pod *Pod,
	f Failure, requestID string) (*reflexionv1.Incident, []string, error) {
	ns, name := pod.Metadata.Namespace, pod.Metadata.Name
	if len(podJSON) > maxPodJSON {
		return nil, nil, fmt.Errorf("pod %s/%s: object larger than %d bytes", ns, name, maxPodJSON)
	}
	var raw map[string]interface{}
	if err := json.Unmarshal(podJSON, &raw); err != nil {
		return nil, nil, fmt.Errorf("pod %s/%s: %w", ns, name, err)
	}
	// Items of a list carry no kind/apiVersion; the incident holds a v1.Pod.
	if raw["kind"] == nil {
		raw["kind"], raw["apiVersion"] = "Pod", "v1"
	}
	podStruct, err := structpb.NewStruct(raw)
	if err != nil {
		return nil, nil, fmt.Errorf("pod %s/%s as Struct: %w", ns, name, err)
	}
	inc := &reflexionv1.Incident{Pod: podStruct, RequestId: requestID}
	var warnings []string

	var events struct {
		Items []map[string]interface{}
	}
	if _, err := k.Get(ctx, eventsPath(ns), url.Values{"fieldSelector": {"involvedObject.name=" + name}}, &events); err != nil {
		warnings = append(warnings, "events: "+err.Error())
	}
	// The newest maxPodEvents (the API lists oldest first).
	items := events.Items
	if len(items) > maxPodEvents {
		items = items[len(items)-maxPodEvents:]
	}
	for _, ev := range items {
		s, err := structpb.NewStruct(ev)
		if err != nil {
			warnings = append(warnings, "event as Struct: "+err.Error())
			continue
		}
		inc.PodEvents = append(inc.PodEvents, s)
	}

	facts := &reflexionv1.Diagnosis{}
	inc.ExecutorFacts = facts
	if i := containerIndex(pod.Spec.Containers, f.Container); i >= 0 {
		if m := pod.Spec.Containers[i].Resources.Limits["memory"]; m != "" {
			if b, err := ParseBytes(m); err == nil {
				facts.MemoryLimitBytes = b
			} else {
				warnings = append(warnings, "memory limit: "+err.Error())
			}
		}
	}
	if names, err := pullSecrets(ctx, k, ns); err != nil {
		warnings = append(warnings, "pull secrets: "+err.Error())
	} else {
		facts.AvailablePullSecrets = names
	}
	w, err := findWorkload(ctx, k, ns, pod, nil)
	if err != nil {
		warnings = append(warnings, "workload: "+err.Error())
		return inc, warnings, nil
	}
	if w.deployment != nil {
		facts.FirstRevision = len(w.replicaSets) == 1
		if len(w.replicaSets) > 1 {
			newest := w.replicaSets[0].Metadata.CreationTimestamp
			for _, r := range w.replicaSets {
				if r.Metadata.CreationTimestamp.After(newest) {
					newest = r.Metadata.CreationTimestamp
				}
			}
			facts.RecentRollout = now.Sub(newest) < recentRollout
		}
		if prev := w.previous(); prev != nil && f.Container != "" {
			cur := containerIndex(w.deployment.Spec.Template.Spec.Containers, f.Container)
			old := containerIndex(prev.Spec.Template.Spec.Containers, f.Container)
			if cur >= 0 && old >= 0 {
				oldImage := prev.Spec.Template.Spec.Containers[old].Image
				if oldImage != "" && oldImage != w.deployment.Spec.Template.Spec.Containers[cur].Image {
					facts.LastHealthyImage = oldImage
				}
			}
		}
	}
	return inc, warnings, nil
}

// pullSecrets lists the names of the namespace's image pull secrets
// (types kubernetes.io/dockerconfigjson and kubernetes.io/dockercfg),
// sorted. Only names and types are decoded; secret data is discarded.
func pullSecrets(ctx context.Context, k *Kube, ns string) ([]string, error) {
	var list struct {
		Items []struct {
			Metadata struct{ Name string }
			Type     string
		}
	}
	if _, err := k.Get(ctx, secretsPath(ns), nil, &list); err != nil {
		return nil, err
	}
	var names []string
	for _, s := range list.Items {
		if s.Type == dockerCfgJSON || s.Type == dockerCfgOld {
			names = append(names, s.Metadata.Name)
		}
	}
	sort.Strings(names)
	return names, nil
}
