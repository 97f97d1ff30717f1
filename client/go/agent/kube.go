package agent

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"
)

// The in-cluster service account files (mounted by the kubelet).
const (
	serviceAccountDir = "/var/run/secrets/kubernetes.io/serviceaccount"
	// Largest API response read; a bigger one is an error (a pod list of a
	// few thousand pods fits).
	maxResponseBytes = 64 << 20
)

// Kube is a minimal Kubernetes API client over plain REST (net/http and
// encoding/json, no client-go). Safe for concurrent use. The bearer token is
// a secret: it is never logged, and String does not show it.
type Kube struct {
	base      string // e.g. "https://10.0.0.1:443", no trailing slash
	tokenFile string // re-read on every request (projected tokens rotate)
	token     string // used when tokenFile is ""
	http      *http.Client
}

// String names the API server only.
func (k *Kube) String() string { return "kube(" + k.base + ")" }

// NewKube returns a client of the API server at base (http:// or https://)
// that authenticates with token ("" for none) and uses client (nil: a
// client with a 30 s timeout and the system roots).
func NewKube(base, token string, client *http.Client) *Kube {
	if client == nil {
		client = &http.Client{Timeout: 30 * time.Second}
	}
	return &Kube{base: strings.TrimRight(base, "/"), token: token, http: client}
}

// NewKubeFromFiles returns a client of apiURL that reads its bearer token
// from tokenFile ("" for none; re-read on every request) and trusts the CA
// bundle in caFile ("" for the system roots). Errors: an unreadable or
// invalid CA file, a malformed URL.
func NewKubeFromFiles(apiURL, tokenFile, caFile string) (*Kube, error) {
	u, err := url.Parse(apiURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("kube API URL %q: want http(s)://host[:port]", apiURL)
	}
	transport := http.DefaultTransport.(*http.Transport).Clone()
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return nil, fmt.Errorf("read CA file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("CA file %s: no PEM certificate", caFile)
		}
		transport.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	}
	if tokenFile != "" {
		if _, err := os.Stat(tokenFile); err != nil {
			return nil, fmt.Errorf("token file: %w", err)
		}
	}
	k := NewKube(apiURL, "", &http.Client{Timeout: 30 * time.Second, Transport: transport})
	k.tokenFile = tokenFile
	return k, nil
}

// InClusterKube returns a client configured from the pod's service account
// (token, ca.crt) and KUBERNETES_SERVICE_HOST/PORT, and the namespace the
// agent runs in. Errors when not running in a cluster.
func InClusterKube() (*Kube, string, error) {
	host, port := os.Getenv("KUBERNETES_SERVICE_HOST"), os.Getenv("KUBERNETES_SERVICE_PORT")
	if host == "" || port == "" {
		return nil, "", errors.New("not in a cluster: KUBERNETES_SERVICE_HOST/PORT unset (use --kube-api)")
	}
	k, err := NewKubeFromFiles("https://"+net.JoinHostPort(host, port),
		serviceAccountDir+"/token", serviceAccountDir+"/ca.crt")
	if err != nil {
		return nil, "", err
	}
	ns, _ := os.ReadFile(serviceAccountDir + "/namespace")
	return k, strings.TrimSpace(string(ns)), nil
}

// APIError is a non-2xx answer of the API server.
type APIError struct {
	Method, Path string
	Code         int    // HTTP status
	Reason       string // Status.reason, e.g. "NotFound", "Conflict"
	Message      string // Status.message
}

func (e *APIError) Error() string {
	msg := e.Message
	if msg == "" {
		msg = http.StatusText(e.Code)
	}
	return fmt.Sprintf("HTTP %d from %s %s: %s", e.Code, e.Method, e.Path, msg)
}

// IsNotFound reports whether err is an API 404.
func IsNotFound(err error) bool {
	var ae *APIError
	return errors.As(err, &ae) && ae.Code == http.StatusNotFound
}

// Patch types the agent uses.
const (
	JSONPatch  = "application/json-patch+json"
	MergePatch = "application/merge-patch+json"
)

// Do sends one request and returns the response body. query may be nil.
// dryRun adds dryRun=All (the API server validates and changes nothing).
// Errors: *APIError for a non-2xx answer, transport errors otherwise.
func (k *Kube) Do(ctx context.Context, method, path string, query url.Values,
	contentType string, body []byte, dryRun bool) ([]byte, error) {
	q := url.Values{}
	for key, v := range query {
		q[key] = v
	}
	if dryRun {
		q.Set("dryRun", "All")
	}
	full := k.base + path
	if len(q) > 0 {
		full += "?" + q.Encode()
	}
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, full, rd)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", method, path, err)
	}
	req.Header.Set("Accept", "application/json")
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	token := k.token
	if k.tokenFile != "" {
		b, err := os.ReadFile(k.tokenFile)
		if err != nil {
			return nil, fmt.Errorf("read token file: %w", err)
		}
		token = strings.TrimSpace(string(b))
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := k.http.Do(req)
	if err != nil {
		// url.Error names the URL (no token in it).
		return nil, fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxResponseBytes+1))
	if err != nil {
		return nil, fmt.Errorf("%s %s: read body: %w", method, path, err)
	}
	if len(data) > maxResponseBytes {
		return nil, fmt.Errorf("%s %s: response larger than %d bytes", method, path, maxResponseBytes)
	}
	if resp.StatusCode/100 != 2 {
		ae := &APIError{Method: method, Path: path, Code: resp.StatusCode}
		var st struct{ Reason, Message string }
		if json.Unmarshal(data, &st) == nil {
			ae.Reason, ae.Message = st.Reason, st.Message
		}
		if ae.Message == "" {
			ae.Message = ClipUTF8(strings.TrimSpace(string(data)), 512)
		}
		return nil, ae
	}
	return data, nil
}

// Get decodes GET path (with query) into out.
func (k *Kube) Get(ctx context.Context, path string, query url.Values, out interface{}) ([]byte, error) {
	data, err := k.Do(ctx, http.MethodGet, path, query, "", nil, false)
	if err != nil {
		return nil, err
	}
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			return nil, fmt.Errorf("GET %s: decode: %w", path, err)
		}
	}
	return data, nil
}

// Patch sends a PATCH of patchType with body.
func (k *Kube) Patch(ctx context.Context, path, patchType string, body []byte, dryRun bool) error {
	_, err := k.Do(ctx, http.MethodPatch, path, nil, patchType, body, dryRun)
	return err
}

// Post sends a POST of a JSON body (a create).
func (k *Kube) Post(ctx context.Context, path string, body []byte, dryRun bool) error {
	_, err := k.Do(ctx, http.MethodPost, path, nil, "application/json", body, dryRun)
	return err
}

// Delete sends a DELETE.
func (k *Kube) Delete(ctx context.Context, path string, dryRun bool) error {
	_, err := k.Do(ctx, http.MethodDelete, path, nil, "", nil, dryRun)
	return err
}

// API paths.
func podsPath(ns string) string { return "/api/v1/namespaces/" + url.PathEscape(ns) + "/pods" }
func podPath(ns, name string) string {
	return podsPath(ns) + "/" + url.PathEscape(name)
}
func eventsPath(ns string) string { return "/api/v1/namespaces/" + url.PathEscape(ns) + "/events" }
func secretsPath(ns string) string {
	return "/api/v1/namespaces/" + url.PathEscape(ns) + "/secrets"
}
func configMapsPath(ns string) string {
	return "/api/v1/namespaces/" + url.PathEscape(ns) + "/configmaps"
}
func serviceAccountPath(ns, name string) string {
	return "/api/v1/namespaces/" + url.PathEscape(ns) + "/serviceaccounts/" + url.PathEscape(name)
}
func deploymentPath(ns, name string) string {
	return "/apis/apps/v1/namespaces/" + url.PathEscape(ns) + "/deployments/" + url.PathEscape(name)
}
func replicaSetsPath(ns string) string {
	return "/apis/apps/v1/namespaces/" + url.PathEscape(ns) + "/replicasets"
}
func replicaSetPath(ns, name string) string { return replicaSetsPath(ns) + "/" + url.PathEscape(name) }
