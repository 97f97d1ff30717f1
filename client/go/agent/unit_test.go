package agent

import (
	"encoding/json"
	"math/rand"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

func TestParseBytes(t *testing.T) {
	for _, c := range []struct {
		in   string
		want int64
	}{
		{"128Mi", 128 << 20}, {"1Gi", 1 << 30}, {"512Ki", 512 << 10}, {"1.5Gi", 3 << 29},
		{"500M", 500e6}, {"1G", 1e9}, {"64k", 64e3}, {"134217728", 134217728}, {"1e3", 1000},
		{"0", 0}, {" 2Mi ", 2 << 20}, {"100m", 1}, // 0.1 byte rounds up
	} {
		got, err := ParseBytes(c.in)
		if err != nil || got != c.want {
			t.Errorf("ParseBytes(%q) = %d, %v; want %d", c.in, got, err, c.want)
		}
	}
	for _, bad := range []string{"", "Mi", "-1Mi", "12XB", "1.2.3", "1e3Mi", "abc", "9999999Ei"} {
		if got, err := ParseBytes(bad); err == nil {
			t.Errorf("ParseBytes(%q) = %d, want an error", bad, got)
		}
	}
}

func TestParseMilliCPU(t *testing.T) {
	for in, want := range map[string]int64{"250m": 250, "1": 1000, "0.5": 500, "6": 6000, "1.0005": 1001} {
		if got, err := ParseMilliCPU(in); err != nil || got != want {
			t.Errorf("ParseMilliCPU(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	if FormatMilliCPU(4500) != "4500m" || FormatMilliCPU(2000) != "2" || FormatMi(192*mi) != "192Mi" {
		t.Errorf("formatting: %s %s %s", FormatMilliCPU(4500), FormatMilliCPU(2000), FormatMi(192*mi))
	}
}

func TestClipUTF8NeverSplitsACharacter(t *testing.T) {
	s := strings.Repeat("é", 10) // 2 bytes each
	for max := 0; max <= 21; max++ {
		got := ClipUTF8(s, max)
		if !utf8.ValidString(got) || len(got) > max || len(got) < max-1 {
			t.Errorf("ClipUTF8(max %d) = %q (%d bytes)", max, got, len(got))
		}
	}
	if got := ClipUTF8("a\xffb", 10); got != "a\uFFFDb" {
		t.Errorf("invalid byte: %q", got)
	}
}

func TestBackoffIsFullJitterCappedAndSeeded(t *testing.T) {
	b := &Backoff{Base: 500 * time.Millisecond, Cap: 30 * time.Second, Rand: rand.New(rand.NewSource(7))}
	c := &Backoff{Base: 500 * time.Millisecond, Cap: 30 * time.Second, Rand: rand.New(rand.NewSource(7))}
	for n := 0; n < 20; n++ {
		bound := 500 * time.Millisecond << uint(n)
		if bound > 30*time.Second || n > 10 {
			bound = 30 * time.Second
		}
		d := b.Next()
		if d < 0 || d > bound {
			t.Errorf("delay %d = %v, outside [0, %v]", n, d, bound)
		}
		if e := c.Next(); e != d {
			t.Errorf("same seed, delay %d: %v vs %v", n, d, e)
		}
	}
	b.Reset()
	if d := b.Next(); d > 500*time.Millisecond {
		t.Errorf("after Reset: %v > 500ms", d)
	}
}

func pod(t *testing.T, js string) *Pod {
	t.Helper()
	var p Pod
	if err := json.Unmarshal([]byte(js), &p); err != nil {
		t.Fatal(err)
	}
	return &p
}

func TestDetectFailure(t *testing.T) {
	for _, c := range []struct {
		name, js, reason, container string
	}{
		{"crashloop", `{"status":{"phase":"Running","containerStatuses":[{"name":"a","state":{"running":{}}},{"name":"b","state":{"waiting":{"reason":"CrashLoopBackOff"}}}]}}`, "CrashLoopBackOff", "b"},
		{"image pull", `{"status":{"phase":"Pending","containerStatuses":[{"name":"a","state":{"waiting":{"reason":"ImagePullBackOff"}}}]}}`, "ImagePullBackOff", "a"},
		{"err image pull", `{"status":{"containerStatuses":[{"name":"a","state":{"waiting":{"reason":"ErrImagePull"}}}]}}`, "ErrImagePull", "a"},
		{"config", `{"status":{"containerStatuses":[{"name":"a","state":{"waiting":{"reason":"CreateContainerConfigError"}}}]}}`, "CreateContainerConfigError", "a"},
		{"create", `{"status":{"containerStatuses":[{"name":"a","state":{"waiting":{"reason":"CreateContainerError"}}}]}}`, "CreateContainerError", "a"},
		{"invalid image", `{"status":{"containerStatuses":[{"name":"a","state":{"waiting":{"reason":"InvalidImageName"}}}]}}`, "InvalidImageName", "a"},
		{"oom crashloop", `{"status":{"phase":"Running","containerStatuses":[{"name":"a","restartCount":3,"state":{"waiting":{"reason":"CrashLoopBackOff"}},"lastState":{"terminated":{"reason":"OOMKilled","exitCode":137}}}]}}`, "OOMKilled", "a"},
		{"oom running again", `{"status":{"phase":"Running","containerStatuses":[{"name":"a","restartCount":2,"state":{"running":{}},"lastState":{"terminated":{"reason":"OOMKilled","exitCode":137}}}]}}`, "OOMKilled", "a"},
		{"unschedulable", `{"status":{"phase":"Pending","conditions":[{"type":"PodScheduled","status":"False","reason":"Unschedulable"}]}}`, "Unschedulable", ""},
		{"healthy", `{"status":{"phase":"Running","containerStatuses":[{"name":"a","state":{"running":{}}}]}}`, "", ""},
		{"container creating", `{"status":{"phase":"Pending","containerStatuses":[{"name":"a","state":{"waiting":{"reason":"ContainerCreating"}}}]}}`, "", ""},
		{"oom without restarts", `{"status":{"containerStatuses":[{"name":"a","restartCount":0,"lastState":{"terminated":{"reason":"OOMKilled"}}}]}}`, "", ""},
		{"pending scheduling", `{"status":{"phase":"Pending","conditions":[{"type":"PodScheduled","status":"False","reason":"SchedulingGated"}]}}`, "", ""},
		{"being deleted", `{"metadata":{"deletionTimestamp":"2026-01-01T00:00:00Z"},"status":{"containerStatuses":[{"name":"a","state":{"waiting":{"reason":"CrashLoopBackOff"}}}]}}`, "", ""},
	} {
		f, bad := DetectFailure(pod(t, c.js))
		if bad != (c.reason != "") || f.Reason != c.reason || f.Container != c.container {
			t.Errorf("%s: DetectFailure = %+v, %v; want reason %q container %q", c.name, f, bad, c.reason, c.container)
		}
	}
}

const tru = true

func rsPod(ns, name, uid, rs, hash, reason string) *Pod {
	p := &Pod{Metadata: ObjectMeta{Name: name, Namespace: ns, UID: uid,
		Labels: map[string]string{"pod-template-hash": hash}}}
	if rs != "" {
		c := tru
		p.Metadata.OwnerReferences = []OwnerReference{{Kind: "ReplicaSet", Name: rs, Controller: &c}}
	}
	return p
}

func TestEpisodesSendOneIncidentPerFailureEpisode(t *testing.T) {
	e := NewEpisodes(16, time.Unix(1700000000, 0))
	p1 := rsPod("shop", "web-abc-1", "u1", "web-abc", "abc", "")
	crash := Failure{Reason: "CrashLoopBackOff", Container: "app"}
	id, ok := e.Begin(p1, crash)
	if !ok || id == "" {
		t.Fatal("first failure: no episode")
	}
	if _, ok := e.Begin(p1, crash); ok {
		t.Error("same pod, same reason, while sending: a second incident")
	}
	// Another replica of the same Deployment: the same episode.
	if _, ok := e.Begin(rsPod("shop", "web-abc-2", "u2", "web-abc", "abc", ""), crash); ok {
		t.Error("replica of the same Deployment: a second incident")
	}
	e.Accepted(id, "wf-1-1")
	// The workflow's fix replaced the pod (new uid, new ReplicaSet), still failing, other reason.
	repl := rsPod("shop", "web-def-1", "u3", "web-def", "def", "")
	if _, ok := e.Begin(repl, Failure{Reason: "ImagePullBackOff"}); ok {
		t.Error("replacement pod while the workflow is open: a second incident")
	}
	// The result arrives; the pod still fails: not again until healthy.
	e.Closed(id)
	if _, ok := e.Begin(repl, crash); ok {
		t.Error("same reason after the result, never healthy: re-sent")
	}
	// A poll in which the Deployment had no failing pod heals it.
	e.Polled("shop", map[string]bool{"shop/Deployment/other": true})
	if e.Len() != 0 {
		t.Fatalf("after healing: %v", e.Keys())
	}
	if _, ok := e.Begin(repl, crash); !ok {
		t.Error("a new failure after healthy: no incident")
	}
	// Other namespaces and bare pods are separate workloads.
	if _, ok := e.Begin(rsPod("data", "web-abc-1", "u9", "web-abc", "abc", ""), crash); !ok {
		t.Error("same name in another namespace: suppressed")
	}
	if _, ok := e.Begin(rsPod("shop", "solo", "u10", "", "", ""), crash); !ok {
		t.Error("bare pod: suppressed")
	}
}

func TestEpisodesHealedWhileOpenEndAtTheResult(t *testing.T) {
	e := NewEpisodes(16, time.Unix(0, 0))
	p := rsPod("shop", "a-1", "u1", "a-h", "h", "")
	f := Failure{Reason: "OOMKilled"}
	id, _ := e.Begin(p, f)
	e.Accepted(id, "wf")
	e.Polled("shop", map[string]bool{})
	if e.Len() != 1 {
		t.Fatal("open episode removed by a healthy poll")
	}
	e.Closed(id)
	if e.Len() != 0 {
		t.Errorf("healed episode kept after its result: %v", e.Keys())
	}
}

func TestEpisodesAfterDisconnect(t *testing.T) {
	e := NewEpisodes(16, time.Unix(0, 0))
	sent, _ := e.Begin(rsPod("shop", "a-1", "u1", "a-h", "h", ""), Failure{Reason: "OOMKilled"})
	acc, _ := e.Begin(rsPod("shop", "b-1", "u2", "b-h", "h", ""), Failure{Reason: "OOMKilled"})
	e.Accepted(acc, "wf")
	e.Disconnected()
	if _, ok := e.Begin(rsPod("shop", "a-1", "u1", "a-h", "h", ""), Failure{Reason: "OOMKilled"}); !ok {
		t.Errorf("unaccepted incident %s not re-sent after a disconnect", sent)
	}
	if _, ok := e.Begin(rsPod("shop", "b-1", "u2", "b-h", "h", ""), Failure{Reason: "OOMKilled"}); ok {
		t.Error("accepted incident re-sent after a disconnect (its workflow continues)")
	}
}

func TestEpisodesAreBounded(t *testing.T) {
	e := NewEpisodes(2, time.Unix(0, 0))
	f := Failure{Reason: "OOMKilled"}
	a, _ := e.Begin(rsPod("ns", "a", "ua", "", "", ""), f)
	e.Begin(rsPod("ns", "b", "ub", "", "", ""), f)
	if _, ok := e.Begin(rsPod("ns", "c", "uc", "", "", ""), f); ok {
		t.Error("full of open episodes: accepted a third")
	}
	e.Closed(a)
	if _, ok := e.Begin(rsPod("ns", "c", "uc", "", "", ""), f); !ok {
		t.Error("a closed episode was not evicted for a new one")
	}
	if e.Len() != 2 {
		t.Errorf("Len = %d, want 2", e.Len())
	}
}
