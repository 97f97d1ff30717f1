package reflexion

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	reflexionv1 "github.com/reflexion-dev/reflexion/client/go/reflexionv1"
	"google.golang.org/protobuf/types/known/structpb"
)

// startServer starts the real reflexion-server ($REFLEXION_SERVER) on a free
// port of 127.0.0.1 with a fresh data dir and no shutdown drain, and returns
// its address. The server is stopped with SIGTERM at the end of the test,
// which fails unless it exits 0.
func startServer(t *testing.T) string {
	t.Helper()
	bin := os.Getenv("REFLEXION_SERVER")
	if bin == "" {
		t.Skip("REFLEXION_SERVER is not set: set it to a built reflexion-server (scripts/test does)")
	}
	dir := t.TempDir()
	config := filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(config, []byte("service:\n  shutdown_drain: 0\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	portFile := filepath.Join(dir, "port")
	var stderr bytes.Buffer
	cmd := exec.Command(bin, "--host", "127.0.0.1", "--port", "0",
		"--port_file", portFile, "--data_dir", filepath.Join(dir, "data"),
		"--config", config)
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", bin, err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		select {
		case <-exited: // Exited early: already reported.
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
	})
	// The server writes the port file once it serves.
	deadline := time.Now().Add(20 * time.Second)
	for {
		if b, err := os.ReadFile(portFile); err == nil && len(bytes.TrimSpace(b)) > 0 {
			return "127.0.0.1:" + strings.TrimSpace(string(b))
		}
		select {
		case err := <-exited:
			exited <- err // Tells the cleanup.
			t.Fatalf("server exited before serving (%v); stderr:\n%s", err, stderr.String())
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("server wrote no port file within 20 s; stderr:\n%s", stderr.String())
		}
	}
}

func TestClientAgainstRealServer(t *testing.T) {
	addr := startServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c, err := Dial(ctx, addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()

	t.Run("HealthIsServing", func(t *testing.T) {
		serving, err := c.Serving(ctx, "")
		if err != nil {
			t.Fatalf("Health/Check: %v", err)
		}
		if !serving {
			t.Error("Health/Check: not SERVING")
		}
	})

	t.Run("ProcessIncidentReturnsAResult", func(t *testing.T) {
		resp, err := c.Reflexion.ProcessIncident(ctx, &reflexionv1.ProcessIncidentRequest{
			PodName: "web-1", Namespace: "default", ErrorType: "OOMKilled",
		})
		if err != nil {
			t.Fatalf("ProcessIncident: %v", err)
		}
		r := resp.GetResult()
		if !strings.HasPrefix(r.GetWorkflowId(), "wf-") {
			t.Errorf("workflow_id = %q, want wf-...", r.GetWorkflowId())
		}
		if !strings.HasPrefix(r.GetSignature(), "OOMKilled/") {
			t.Errorf("signature = %q, want OOMKilled/...", r.GetSignature())
		}
		if r.GetPodName() != "web-1" {
			t.Errorf("pod_name = %q, want web-1", r.GetPodName())
		}
	})

	t.Run("DiagnoseIncidentReadsAPodObject", func(t *testing.T) {
		// A v1.Pod whose container "app" was OOM-killed and now waits in
		// CrashLoopBackOff, as `kubectl get pod -o json` prints it.
		pod, err := structpb.NewStruct(map[string]interface{}{
			"apiVersion": "v1",
			"kind":       "Pod",
			"metadata":   map[string]interface{}{"name": "web-2", "namespace": "default"},
			"spec": map[string]interface{}{
				"containers": []interface{}{map[string]interface{}{
					"name":  "app",
					"image": "nginx:1.25",
					"resources": map[string]interface{}{
						"limits": map[string]interface{}{"memory": "128Mi"},
					},
				}},
			},
			"status": map[string]interface{}{
				"phase": "Running",
				"containerStatuses": []interface{}{map[string]interface{}{
					"name":         "app",
					"image":        "nginx:1.25",
					"ready":        false,
					"restartCount": 4,
					"state": map[string]interface{}{
						"waiting": map[string]interface{}{
							"reason":  "CrashLoopBackOff",
							"message": "back-off 1m20s restarting failed container=app",
						},
					},
					"lastState": map[string]interface{}{
						"terminated": map[string]interface{}{"reason": "OOMKilled", "exitCode": 137},
					},
				}},
			},
		})
		if err != nil {
			t.Fatal(err)
		}
		resp, err := c.Reflexion.DiagnoseIncident(ctx, &reflexionv1.DiagnoseIncidentRequest{Pod: pod})
		if err != nil {
			t.Fatalf("DiagnoseIncident: %v", err)
		}
		a := resp.GetAnalysis()
		if got, want := a.GetSignature(), "OOMKilled/memory_limit_too_low"; got != want {
			t.Errorf("signature = %q, want %q (evidence %q)", got, want, a.GetEvidence())
		}
		if a.GetContainer() != "app" {
			t.Errorf("container = %q, want app", a.GetContainer())
		}
	})
}
