package agent

import (
	"context"
	"fmt"
	"strings"

	reflexionv1 "github.com/reflexion-dev/reflexion/client/go/reflexionv1"
)

// PodStatusReport field limits.
const (
	maxSignals      = 16
	maxSignalBytes  = 512
	maxReasonBytes  = 128
	maxObservers    = 4096
	defaultInterval = 2e9 // 2 s, when neither the request nor the welcome says
)

// ObservePod finds the pod an observation is about and reports its status.
// The pod is the request's pod, or — when the request names an owner (the
// pod is gone, or was replaced by a delete or a rollout) — the newest pod
// of the owner's Deployment (by its selector, controlled by one of its
// ReplicaSets) or of the ReplicaSet itself. A pod that cannot be found is
// reported unhealthy with failure_reason "PodNotFound".
func ObservePod(ctx context.Context, k *Kube, req *reflexionv1.ObservationRequest) (*reflexionv1.PodStatusReport, error) {
	ns := req.GetNamespace()
	pod, err := findObservedPod(ctx, k, ns, req.GetPodName(), req.GetOwner())
	if err != nil {
		return nil, err
	}
	r := &reflexionv1.PodStatusReport{WorkflowId: req.GetWorkflowId(), ActionId: req.GetActionId(),
		PodName: req.GetPodName()}
	if pod == nil {
		r.FailureReason = "PodNotFound"
		r.Signals = []string{ClipUTF8(fmt.Sprintf("no pod %s/%s and no replacement found", ns, req.GetPodName()), maxSignalBytes)}
		return r, nil
	}
	r.PodName = pod.Metadata.Name
	watch := req.GetContainer()
	r.Healthy = PodHealthy(pod, watch)
	for _, cs := range pod.Status.ContainerStatuses {
		if (watch == "" || cs.Name == watch) && cs.RestartCount > r.Restarts {
			r.Restarts = cs.RestartCount
		}
	}
	var signals []string
	if pod.Metadata.Name != req.GetPodName() {
		signals = append(signals, "replacement pod "+pod.Metadata.Name+" of "+req.GetPodName())
	}
	if !r.Healthy {
		if f, ok := DetectFailure(pod); ok {
			r.FailureReason = f.Reason
		}
		for _, cs := range pod.Status.ContainerStatuses {
			if watch != "" && cs.Name != watch {
				continue
			}
			if w := cs.State.Waiting; w != nil {
				if r.FailureReason == "" {
					r.FailureReason = w.Reason
				}
				signals = append(signals, fmt.Sprintf("container %s waiting %s: %s", cs.Name, w.Reason, w.Message))
			}
			if t := cs.LastState.Terminated; t != nil {
				signals = append(signals, fmt.Sprintf("container %s last terminated %s (exit code %d)", cs.Name, t.Reason, t.ExitCode))
			}
		}
		if r.FailureReason == "" {
			r.FailureReason = "NotReady"
			if pod.Status.Phase != "Running" && pod.Status.Phase != "" {
				r.FailureReason = pod.Status.Phase
			}
		}
	}
	r.FailureReason = ClipUTF8(r.FailureReason, maxReasonBytes)
	for _, s := range signals {
		if len(r.Signals) == maxSignals {
			break
		}
		r.Signals = append(r.Signals, ClipUTF8(s, maxSignalBytes))
	}
	return r, nil
}

func findObservedPod(ctx context.Context, k *Kube, ns, name string, owner *reflexionv1.WorkloadRef) (*Pod, error) {
	var named *Pod
	var p Pod
	if _, err := k.Get(ctx, podPath(ns, name), nil, &p); err == nil {
		named = &p
	} else if !IsNotFound(err) {
		return nil, err
	}
	var w *workload
	if named != nil {
		var err error
		if w, err = findWorkload(ctx, k, ns, named, nil); err != nil && !IsNotFound(err) {
			return nil, err
		}
	} else if owner.GetKind() == "ReplicaSet" {
		var err error
		if w, err = findWorkload(ctx, k, ns, nil, owner); err != nil && !IsNotFound(err) {
			return nil, err
		}
	}
	if w == nil || w.rs == nil {
		return named, nil // a bare pod, or another controller: the pod itself
	}
	sel, prefix := w.rs.Spec.Selector, w.rs.Metadata.Name
	if w.deployment != nil {
		sel, prefix = w.deployment.Spec.Selector, w.deployment.Metadata.Name+"-"
	}
	var list struct{ Items []Pod }
	if _, err := k.Get(ctx, podsPath(ns), sel.query(), &list); err != nil {
		return nil, err
	}
	var newest *Pod
	for i := range list.Items {
		c := &list.Items[i]
		ref := c.Metadata.controller()
		if c.Metadata.DeletionTimestamp != nil || ref == nil || ref.Kind != "ReplicaSet" ||
			!strings.HasPrefix(ref.Name, prefix) || !sel.Matches(c.Metadata.Labels) {
			continue
		}
		if newest == nil || c.Metadata.CreationTimestamp.After(newest.Metadata.CreationTimestamp) ||
			(c.Metadata.CreationTimestamp.Equal(newest.Metadata.CreationTimestamp) && c.Metadata.Name > newest.Metadata.Name) {
			newest = c
		}
	}
	if newest == nil {
		return named, nil
	}
	return newest, nil
}
