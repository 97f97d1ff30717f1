package kubefake

import (
	"fmt"
	"strconv"
	"strings"
)

var quantityMult = []struct {
	suffix string
	mult   float64
}{
	{"Ki", 1 << 10}, {"Mi", 1 << 20}, {"Gi", 1 << 30}, {"Ti", 1 << 40},
	{"k", 1e3}, {"M", 1e6}, {"G", 1e9}, {"T", 1e12}, {"m", 1e-3},
}

// parseBytes parses a resource quantity ("128Mi", "1G", "250m", "2") as a
// number of base units.
func parseBytes(s string) (float64, error) {
	t := strings.TrimSpace(s)
	mult := 1.0
	for _, q := range quantityMult {
		if strings.HasSuffix(t, q.suffix) {
			t, mult = strings.TrimSuffix(t, q.suffix), q.mult
			break
		}
	}
	f, err := strconv.ParseFloat(t, 64)
	if err != nil || f < 0 || t == "" {
		return 0, fmt.Errorf("quantity %q: invalid", s)
	}
	return f * mult, nil
}

// Container returns the pod's (or template spec's) container named name
// ("" = the first), or nil.
func Container(pod Object, name string) Object {
	spec, _ := pod["spec"].(map[string]interface{})
	cs, _ := spec["containers"].([]interface{})
	for _, c := range cs {
		m, _ := c.(map[string]interface{})
		if name == "" || str(m["name"]) == name {
			return m
		}
	}
	return nil
}

// Image is the image of the pod's container name ("" = the first).
func Image(pod Object, name string) string { return str(Container(pod, name)["image"]) }

// Resource returns a container's resources.KIND.NAME (e.g. "limits",
// "memory") in base units (bytes, cores), 0 when unset or invalid.
func Resource(pod Object, container, kind, name string) float64 {
	res, _ := Container(pod, container)["resources"].(map[string]interface{})
	l, _ := res[kind].(map[string]interface{})
	v, err := parseBytes(str(l[name]))
	if err != nil {
		return 0
	}
	return v
}

// ProbeSeconds returns a container's probe field (e.g. "livenessProbe",
// "initialDelaySeconds"), or def when unset.
func ProbeSeconds(pod Object, container, probe, field string, def float64) float64 {
	p, _ := Container(pod, container)[probe].(map[string]interface{})
	if v, ok := p[field].(float64); ok {
		return v
	}
	return def
}

// Label returns the pod's label k.
func Label(pod Object, k string) string {
	md, _ := pod["metadata"].(map[string]interface{})
	l, _ := md["labels"].(map[string]interface{})
	return str(l[k])
}

// Namespace returns the pod's namespace.
func Namespace(pod Object) string {
	md, _ := pod["metadata"].(map[string]interface{})
	return str(md["namespace"])
}

// PullSecrets returns the image pull secret names of the pod's
// ServiceAccount (spec.serviceAccountName, default "default").
func PullSecrets(pod Object, v *View) []string {
	spec, _ := pod["spec"].(map[string]interface{})
	sa := str(spec["serviceAccountName"])
	if sa == "" {
		sa = "default"
	}
	o := v.Get("serviceaccounts", Namespace(pod), sa)
	l, _ := o["imagePullSecrets"].([]interface{})
	var out []string
	for _, e := range l {
		m, _ := e.(map[string]interface{})
		out = append(out, str(m["name"]))
	}
	return out
}

// PodHealthy reports phase Running, Ready True and every container running
// (the same test the agent applies).
func PodHealthy(pod Object) bool {
	st, _ := pod["status"].(map[string]interface{})
	if str(st["phase"]) != "Running" {
		return false
	}
	ready := false
	conds, _ := st["conditions"].([]interface{})
	for _, c := range conds {
		m, _ := c.(map[string]interface{})
		if str(m["type"]) == "Ready" && str(m["status"]) == "True" {
			ready = true
		}
	}
	css, _ := st["containerStatuses"].([]interface{})
	if !ready || len(css) == 0 {
		return false
	}
	for _, c := range css {
		m, _ := c.(map[string]interface{})
		state, _ := m["state"].(map[string]interface{})
		if state["running"] == nil {
			return false
		}
	}
	return true
}

// Template builds a pod template {"metadata":{"labels":labels},"spec":spec}.
func Template(labels map[string]string, spec Object) Object {
	l := Object{}
	for k, v := range labels {
		l[k] = v
	}
	return Object{"metadata": Object{"labels": l}, "spec": spec}
}

// OneContainer is a pod spec with one container "app" of image and the
// given fields merged into the container.
func OneContainer(image string, fields Object) Object {
	c := Object{"name": "app", "image": image}
	for k, v := range fields {
		c[k] = v
	}
	return Object{"containers": []interface{}{c}}
}
