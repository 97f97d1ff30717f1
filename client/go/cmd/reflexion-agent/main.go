// Command reflexion-agent watches the pods of a Kubernetes cluster and lets
// reflexion-server resolve the failing ones: it opens an agent session
// (Resolve + AgentHello), sends one incident per failure episode, executes
// the actions the server asks for and reports pod status while the server
// observes a fix. See the README, "The Go agent".
//
//	reflexion-agent --server 127.0.0.1:50051 --cluster prod --namespaces shop,data
//
// Flags fall back to REFLEXION_SERVER, REFLEXION_CLUSTER and
// REFLEXION_NAMESPACES. SIGTERM or SIGINT closes the session cleanly.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/reflexion-dev/reflexion/client/go/agent"
	"github.com/reflexion-dev/reflexion/client/go/reflexion"
	reflexionv1 "github.com/reflexion-dev/reflexion/client/go/reflexionv1"
)

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}

func main() {
	host, _ := os.Hostname()
	fs := flag.NewFlagSet("reflexion-agent", flag.ContinueOnError)
	server := fs.String("server", envOr("REFLEXION_SERVER", "127.0.0.1:50051"), "reflexion-server host:port (env REFLEXION_SERVER)")
	cluster := fs.String("cluster", os.Getenv("REFLEXION_CLUSTER"), "required: this cluster's name, a DNS-1123 label (env REFLEXION_CLUSTER)")
	agentID := fs.String("agent-id", host, "this agent instance, [A-Za-z0-9._-]{1,128}")
	namespaces := fs.String("namespaces", os.Getenv("REFLEXION_NAMESPACES"), "comma-separated namespaces to watch and act in; required unless --all-namespaces (env REFLEXION_NAMESPACES)")
	all := fs.Bool("all-namespaces", false, "watch and act in every namespace (needs the ClusterRoleBinding)")
	kubeAPI := fs.String("kube-api", "", "Kubernetes API URL (http:// or https://); default: in-cluster config from the service account")
	tokenFile := fs.String("token-file", "", "with --kube-api: file holding the bearer token (re-read on every request)")
	caFile := fs.String("ca-file", "", "with --kube-api: CA bundle of the API server (default: system roots)")
	token := fs.String("token", "", "reflexion-server bearer token (env REFLEXION_TOKEN; prefer the env: flags show in ps)")
	tlsCA := fs.String("tls-ca", "", "reflexion-server TLS: the CA (PEM file) its certificate chains to")
	tlsCert := fs.String("tls-cert", "", "reflexion-server mTLS: this agent's certificate (PEM file, with -tls-key)")
	tlsKey := fs.String("tls-key", "", "reflexion-server mTLS: this agent's private key (PEM file)")
	tlsName := fs.String("tls-server-name", "", "reflexion-server TLS: the name to check its certificate against (default: the --server host)")
	poll := fs.Duration("poll-interval", 10*time.Second, "how often to list pods")
	dryRun := fs.Bool("dry-run", false, "validate every action with dryRun=All and change nothing")
	tierC := fs.String("tier-c", "", "comma-separated tier C actions this agent runs once a human approved them (have: create_missing_config; default none: refused)")
	logFormat := fs.String("log-format", "text", "log format: text or json")
	if err := fs.Parse(os.Args[1:]); err == flag.ErrHelp {
		os.Exit(0)
	} else if err != nil {
		os.Exit(2)
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "reflexion-agent: unexpected arguments %q\n", fs.Args())
		os.Exit(2)
	}
	if *logFormat != "text" && *logFormat != "json" {
		fmt.Fprintf(os.Stderr, "reflexion-agent: --log-format %q: want text or json\n", *logFormat)
		os.Exit(2)
	}
	log := agent.NewLogger(os.Stderr, *logFormat, agent.RealClock{})
	var kube *agent.Kube
	var err error
	if *kubeAPI != "" {
		kube, err = agent.NewKubeFromFiles(*kubeAPI, *tokenFile, *caFile)
	} else {
		if *tokenFile != "" || *caFile != "" {
			err = fmt.Errorf("--token-file and --ca-file need --kube-api")
		} else {
			kube, _, err = agent.InClusterKube()
		}
	}
	if err != nil {
		log.Error("kubernetes config", "err", err)
		os.Exit(2)
	}
	var nsList []string
	for _, ns := range strings.Split(*namespaces, ",") {
		if ns = strings.TrimSpace(ns); ns != "" {
			nsList = append(nsList, ns)
		}
	}
	var tierCTypes []reflexionv1.ActionType
	for _, name := range strings.Split(*tierC, ",") {
		if name = strings.TrimSpace(name); name == "" {
			continue
		}
		v, ok := reflexionv1.ActionType_value["ACTION_TYPE_"+strings.ToUpper(name)]
		if !ok {
			log.Error("invalid configuration", "err", fmt.Sprintf("--tier-c: unknown action %q (have: create_missing_config)", name))
			os.Exit(2)
		}
		tierCTypes = append(tierCTypes, reflexionv1.ActionType(v))
	}
	if *token == "" {
		*token = os.Getenv("REFLEXION_TOKEN")
	}
	auth := reflexion.Options{Token: *token, TLSCA: *tlsCA, TLSCert: *tlsCert, TLSKey: *tlsKey,
		TLSServerName: *tlsName}
	a, err := agent.New(agent.Config{Server: *server, Auth: auth, Cluster: *cluster, AgentID: *agentID,
		Namespaces: nsList, AllNamespaces: *all, PollInterval: *poll, DryRun: *dryRun, TierC: tierCTypes,
		Kube: kube, Log: log})
	if err != nil {
		log.Error("invalid configuration", "err", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	log.Info("reflexion-agent starting", "version", agent.Version, "server", *server, "cluster", *cluster,
		"agent_id", *agentID, "namespaces", nsList, "all_namespaces", *all, "kube", kube.String(),
		"poll_interval", *poll, "dry_run", *dryRun, "tier_c", *tierC, "tls", *tlsCA != "", "mtls", *tlsCert != "",
		"token", *token != "")
	if err := a.Run(ctx); err != nil {
		log.Error("agent failed", "err", err)
		os.Exit(1)
	}
}
