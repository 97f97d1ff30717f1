package reflexion

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	reflexionv1 "github.com/reflexion-dev/reflexion/client/go/reflexionv1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/structpb"
)

// startServer starts the real reflexion-server ($REFLEXION_SERVER) on a free
// port of 127.0.0.1 with a fresh data dir and no shutdown drain, and returns
// its address. The server is stopped with SIGTERM at the end of the test,
// which fails unless it exits 0.
func startServer(t *testing.T) string {
	t.Helper()
	return startServerWith(t, "")
}

// startServerWith is startServer with more config sections (YAML).
func startServerWith(t *testing.T, extra string) string {
	t.Helper()
	bin := os.Getenv("REFLEXION_SERVER")
	if bin == "" {
		t.Skip("REFLEXION_SERVER is not set: set it to a built reflexion-server (scripts/test does)")
	}
	dir := t.TempDir()
	config := filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(config, []byte("service:\n  shutdown_drain: 0\n"+extra), 0o644); err != nil {
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

// TestDialWithTokenAndTLS runs the server with a tokens file and TLS (a CA
// and a server certificate made by openssl) and dials it with and without
// the token.
func TestDialWithTokenAndTLS(t *testing.T) {
	if _, err := exec.LookPath("openssl"); err != nil {
		t.Skip("no openssl to make test certificates")
	}
	dir := t.TempDir()
	run := func(args ...string) {
		cmd := exec.Command("openssl", args...)
		cmd.Dir = dir
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("openssl %v: %v\n%s", args, err, out)
		}
	}
	ec := []string{"-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"}
	run(append([]string{"req", "-x509", "-days", "2", "-subj", "/CN=test-ca", "-keyout", "ca.key", "-out", "ca.pem"}, ec...)...)
	run(append([]string{"req", "-subj", "/CN=localhost", "-keyout", "server.key", "-out", "server.csr"}, ec...)...)
	if err := os.WriteFile(filepath.Join(dir, "server.ext"), []byte("subjectAltName=DNS:localhost,IP:127.0.0.1"), 0o644); err != nil {
		t.Fatal(err)
	}
	run("x509", "-req", "-days", "2", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
		"-CAcreateserial", "-extfile", "server.ext", "-out", "server.pem")
	const token = "go-viewer-secret-42"
	sum := sha256.Sum256([]byte(token))
	tokens := filepath.Join(dir, "tokens.yaml")
	if err := os.WriteFile(tokens, []byte("tokens:\n  - sha256: "+hex.EncodeToString(sum[:])+
		"\n    principal: go-viewer\n    role: viewer\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	addr := startServerWith(t, "auth:\n  tokens_file: "+tokens+"\ntls:\n  cert_file: "+
		filepath.Join(dir, "server.pem")+"\n  key_file: "+filepath.Join(dir, "server.key")+"\n")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	tlsOpts := Options{TLSCA: filepath.Join(dir, "ca.pem"), TLSServerName: "localhost"}

	// TLS without a token: the call is refused, naming what is missing.
	c, err := DialWith(ctx, addr, tlsOpts)
	if err != nil {
		t.Fatalf("DialWith TLS: %v", err)
	}
	defer c.Close()
	_, err = c.Reflexion.GetMetrics(ctx, &reflexionv1.GetMetricsRequest{})
	if status.Code(err) != codes.Unauthenticated || !strings.Contains(err.Error(), "missing bearer token") {
		t.Errorf("GetMetrics without a token: %v, want UNAUTHENTICATED missing bearer token", err)
	}
	// Health stays anonymous.
	if ok, err := c.Serving(ctx, ""); err != nil || !ok {
		t.Errorf("Serving: %v, %v", ok, err)
	}

	// With the token: served; a viewer may not resume.
	tlsOpts.Token = token
	c2, err := DialWith(ctx, addr, tlsOpts)
	if err != nil {
		t.Fatalf("DialWith TLS+token: %v", err)
	}
	defer c2.Close()
	if _, err := c2.Reflexion.GetMetrics(ctx, &reflexionv1.GetMetricsRequest{}); err != nil {
		t.Errorf("GetMetrics with the token: %v", err)
	}
	_, err = c2.Reflexion.ResumeWorkflow(ctx, &reflexionv1.ResumeWorkflowRequest{WorkflowId: "wf-1"})
	if status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), "principal go-viewer has viewer") {
		t.Errorf("ResumeWorkflow as viewer: %v, want PERMISSION_DENIED naming the role", err)
	}

	// Plaintext to a TLS server does not connect.
	pctx, pcancel := context.WithTimeout(ctx, 2*time.Second)
	defer pcancel()
	if c3, err := DialWith(pctx, addr, Options{Token: token}); err == nil {
		c3.Close()
		t.Errorf("a plaintext dial of a TLS server connected")
	}
	// Bad options are refused before dialing.
	if _, err := DialWith(ctx, addr, Options{TLSCert: "x.pem"}); err == nil {
		t.Errorf("TLSCert without TLSKey was accepted")
	}
}
