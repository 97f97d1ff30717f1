package kubefake

import (
	"encoding/json"
	"fmt"
	"reflect"
	"strconv"
	"strings"
)

// Object is a Kubernetes object as decoded JSON.
type Object = map[string]interface{}

// deepCopy copies a JSON value (maps, slices, scalars).
func deepCopy(v interface{}) interface{} {
	switch t := v.(type) {
	case map[string]interface{}:
		m := make(map[string]interface{}, len(t))
		for k, x := range t {
			m[k] = deepCopy(x)
		}
		return m
	case []interface{}:
		s := make([]interface{}, len(t))
		for i, x := range t {
			s[i] = deepCopy(x)
		}
		return s
	default:
		return v
	}
}

func copyObject(o Object) Object { return deepCopy(o).(map[string]interface{}) }

// normalize turns any Go value into its JSON-decoded form (float64
// numbers, map[string]interface{}), so comparisons and patches see one
// representation.
func normalize(v interface{}) interface{} {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	var out interface{}
	if err := json.Unmarshal(b, &out); err != nil {
		panic(err)
	}
	return out
}

type patchOp struct {
	Op    string          `json:"op"`
	Path  string          `json:"path"`
	From  string          `json:"from"`
	Value json.RawMessage `json:"value"`
}

// applyJSONPatch applies an RFC 6902 patch (add, remove, replace, test) to
// a copy of doc and returns it.
func applyJSONPatch(doc Object, body []byte) (Object, error) {
	var ops []patchOp
	if err := json.Unmarshal(body, &ops); err != nil {
		return nil, fmt.Errorf("json patch: %v", err)
	}
	var root interface{} = copyObject(doc)
	for i, op := range ops {
		var val interface{}
		if op.Op == "add" || op.Op == "replace" || op.Op == "test" {
			if len(op.Value) == 0 {
				return nil, fmt.Errorf("json patch op %d (%s %s): no value", i, op.Op, op.Path)
			}
			if err := json.Unmarshal(op.Value, &val); err != nil {
				return nil, fmt.Errorf("json patch op %d: value: %v", i, err)
			}
		}
		var err error
		switch op.Op {
		case "test":
			var cur interface{}
			cur, err = getPointer(root, op.Path)
			if err == nil && !reflect.DeepEqual(cur, val) {
				err = fmt.Errorf("test failed: %s is %s, not %s", op.Path, compact(cur), compact(val))
			}
		case "add", "replace", "remove":
			root, err = setPointer(root, op.Path, val, op.Op)
		default:
			err = fmt.Errorf("unsupported op %q", op.Op)
		}
		if err != nil {
			return nil, fmt.Errorf("json patch op %d (%s %s): %v", i, op.Op, op.Path, err)
		}
	}
	out, ok := root.(map[string]interface{})
	if !ok {
		return nil, fmt.Errorf("json patch: result is not an object")
	}
	return out, nil
}

func compact(v interface{}) string {
	b, _ := json.Marshal(v)
	return string(b)
}

func splitPointer(p string) ([]string, error) {
	if p == "" {
		return nil, nil
	}
	if !strings.HasPrefix(p, "/") {
		return nil, fmt.Errorf("pointer %q does not start with /", p)
	}
	parts := strings.Split(p[1:], "/")
	for i, s := range parts {
		parts[i] = strings.ReplaceAll(strings.ReplaceAll(s, "~1", "/"), "~0", "~")
	}
	return parts, nil
}

func getPointer(root interface{}, p string) (interface{}, error) {
	parts, err := splitPointer(p)
	if err != nil {
		return nil, err
	}
	cur := root
	for _, k := range parts {
		switch t := cur.(type) {
		case map[string]interface{}:
			v, ok := t[k]
			if !ok {
				return nil, fmt.Errorf("%s: no member %q", p, k)
			}
			cur = v
		case []interface{}:
			i, err := strconv.Atoi(k)
			if err != nil || i < 0 || i >= len(t) {
				return nil, fmt.Errorf("%s: bad index %q", p, k)
			}
			cur = t[i]
		default:
			return nil, fmt.Errorf("%s: %q is inside a scalar", p, k)
		}
	}
	return cur, nil
}

// setPointer performs add/replace/remove at p and returns the new root.
func setPointer(root interface{}, p string, val interface{}, op string) (interface{}, error) {
	parts, err := splitPointer(p)
	if err != nil {
		return nil, err
	}
	if len(parts) == 0 {
		if op == "remove" {
			return nil, fmt.Errorf("cannot remove the root")
		}
		return val, nil
	}
	parentPath := ""
	for _, k := range parts[:len(parts)-1] {
		parentPath += "/" + strings.ReplaceAll(strings.ReplaceAll(k, "~", "~0"), "/", "~1")
	}
	parent, err := getPointer(root, parentPath)
	if err != nil {
		return nil, err
	}
	last := parts[len(parts)-1]
	switch t := parent.(type) {
	case map[string]interface{}:
		_, exists := t[last]
		if (op == "replace" || op == "remove") && !exists {
			return nil, fmt.Errorf("no member %q to %s", last, op)
		}
		if op == "remove" {
			delete(t, last)
		} else {
			t[last] = val
		}
		return root, nil
	case []interface{}:
		var i int
		if last == "-" && op == "add" {
			i = len(t)
		} else if i, err = strconv.Atoi(last); err != nil || i < 0 || i > len(t) || (op != "add" && i == len(t)) {
			return nil, fmt.Errorf("bad index %q", last)
		}
		var ns []interface{}
		switch op {
		case "add":
			ns = append(append(append([]interface{}{}, t[:i]...), val), t[i:]...)
		case "replace":
			ns = append([]interface{}{}, t...)
			ns[i] = val
		case "remove":
			ns = append(append([]interface{}{}, t[:i]...), t[i+1:]...)
		}
		// Slices are values in their parent: write the new one back.
		return setPointer(root, parentPath, ns, "replace")
	default:
		return nil, fmt.Errorf("parent of %s is a scalar", p)
	}
}

// applyMergePatch applies an RFC 7386 JSON merge patch to a copy of doc.
func applyMergePatch(doc Object, body []byte) (Object, error) {
	var patch interface{}
	if err := json.Unmarshal(body, &patch); err != nil {
		return nil, fmt.Errorf("merge patch: %v", err)
	}
	pm, ok := patch.(map[string]interface{})
	if !ok {
		return nil, fmt.Errorf("merge patch: not an object")
	}
	return mergeInto(copyObject(doc), pm), nil
}

func mergeInto(dst, patch map[string]interface{}) map[string]interface{} {
	for k, v := range patch {
		if v == nil {
			delete(dst, k)
			continue
		}
		if pv, ok := v.(map[string]interface{}); ok {
			dv, _ := dst[k].(map[string]interface{})
			if dv == nil {
				dv = map[string]interface{}{}
			}
			dst[k] = mergeInto(dv, pv)
			continue
		}
		dst[k] = deepCopy(v)
	}
	return dst
}
