package agent

import (
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"
)

// The subset of the Kubernetes objects the agent reads. encoding/json
// matches field names case-insensitively, so only fields whose Go name
// differs carry a tag. Writes never go through these types: patches are
// built from paths, so fields the agent does not know are never dropped.

// ObjectMeta is metav1.ObjectMeta (subset).
type ObjectMeta struct {
	Name              string
	Namespace         string
	UID               string
	ResourceVersion   string
	CreationTimestamp time.Time
	DeletionTimestamp *time.Time
	Labels            map[string]string
	Annotations       map[string]string
	OwnerReferences   []OwnerReference
}

// OwnerReference is metav1.OwnerReference (subset).
type OwnerReference struct {
	Kind       string
	Name       string
	UID        string
	Controller *bool
}

// controller returns the controlling owner reference, or nil.
func (m *ObjectMeta) controller() *OwnerReference {
	for i := range m.OwnerReferences {
		if r := &m.OwnerReferences[i]; r.Controller != nil && *r.Controller {
			return r
		}
	}
	return nil
}

// Pod is v1.Pod (subset).
type Pod struct {
	Metadata ObjectMeta
	Spec     PodSpec
	Status   PodStatus
}

// PodSpec is v1.PodSpec (subset).
type PodSpec struct {
	Containers         []Container
	ServiceAccountName string
}

// Container is v1.Container (subset).
type Container struct {
	Name           string
	Image          string
	Resources      Resources
	LivenessProbe  *Probe
	ReadinessProbe *Probe
}

// Resources is v1.ResourceRequirements.
type Resources struct {
	Limits   map[string]string
	Requests map[string]string
}

// Probe is v1.Probe (the timing fields the agent changes).
type Probe struct {
	InitialDelaySeconds *int64
	TimeoutSeconds      *int64
}

// PodStatus is v1.PodStatus (subset).
type PodStatus struct {
	Phase             string
	Conditions        []PodCondition
	ContainerStatuses []ContainerStatus
}

// PodCondition is v1.PodCondition.
type PodCondition struct {
	Type, Status, Reason, Message string
}

// ContainerStatus is v1.ContainerStatus (subset).
type ContainerStatus struct {
	Name         string
	Image        string
	Ready        bool
	RestartCount int32
	State        ContainerState
	LastState    ContainerState
}

// ContainerState is v1.ContainerState.
type ContainerState struct {
	Waiting    *StateDetail
	Running    *struct{}
	Terminated *StateDetail
}

// StateDetail is the waiting or terminated state (subset).
type StateDetail struct {
	Reason   string
	Message  string
	ExitCode int32
}

// PodTemplate is v1.PodTemplateSpec (subset).
type PodTemplate struct {
	Metadata ObjectMeta
	Spec     PodSpec
}

// Deployment is apps/v1.Deployment (subset).
type Deployment struct {
	Metadata ObjectMeta
	Spec     struct {
		Selector LabelSelector
		Template PodTemplate
	}
}

// ReplicaSet is apps/v1.ReplicaSet (subset).
type ReplicaSet struct {
	Metadata ObjectMeta
	Spec     struct {
		Selector LabelSelector
		Template PodTemplate
	}
}

// LabelSelector is metav1.LabelSelector (matchLabels only: what Deployments
// created by kubectl and Helm use).
type LabelSelector struct {
	MatchLabels map[string]string
}

// String is the label selector query form, keys sorted ("a=1,b=2").
func (s LabelSelector) String() string {
	keys := make([]string, 0, len(s.MatchLabels))
	for k := range s.MatchLabels {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = k + "=" + s.MatchLabels[k]
	}
	return strings.Join(parts, ",")
}

// Matches reports whether labels carry every matchLabels pair (an empty
// selector matches nothing, as for a Deployment it is invalid).
func (s LabelSelector) Matches(labels map[string]string) bool {
	if len(s.MatchLabels) == 0 {
		return false
	}
	for k, v := range s.MatchLabels {
		if labels[k] != v {
			return false
		}
	}
	return true
}

func (s LabelSelector) query() url.Values {
	return url.Values{"labelSelector": {s.String()}}
}

// revision is the deployment.kubernetes.io/revision annotation (0 if none).
func revision(m *ObjectMeta) int64 {
	n, err := strconv.ParseInt(m.Annotations["deployment.kubernetes.io/revision"], 10, 64)
	if err != nil {
		return 0
	}
	return n
}

// containerIndex returns the index of the container named name, or when
// name is "" the only container; -1 when there is none (or several).
func containerIndex(cs []Container, name string) int {
	if name == "" {
		if len(cs) == 1 {
			return 0
		}
		return -1
	}
	for i := range cs {
		if cs[i].Name == name {
			return i
		}
	}
	return -1
}
