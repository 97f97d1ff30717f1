// Command kube-fake serves the in-memory fake Kubernetes API of
// client/go/agent/kubefake as a process, seeded with a scenario, for demos
// (scripts/agent-demo). It prints every mutating call it receives, one line
// each, on stdout, and the scenario's workload health every
// --status-interval and at exit.
//
//	kube-fake --listen 127.0.0.1:0 --port-file /tmp/kube.port --scenario mixed
//
// Scenarios: mixed (kubefake.Mixed: a dozen pods failing for mixed causes)
// and burst (kubefake.Burst: 50 OOMKilled pods on one node, one namespace).
//
// SIGTERM or SIGINT stops it.
package main

import (
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/reflexion-dev/reflexion/client/go/agent/kubefake"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:0", "address to serve on")
	portFile := flag.String("port-file", "", "write the port here once serving")
	scenario := flag.String("scenario", "mixed", "seeded cluster: mixed or burst")
	statusEvery := flag.Duration("status-interval", 0, "print the scenario's workload health this often (0 = only at exit)")
	flag.Parse()
	seeds := map[string]func(time.Time) (*kubefake.Server, kubefake.Scenario){
		"mixed": kubefake.Mixed, "burst": kubefake.Burst}
	seed, ok := seeds[*scenario]
	if !ok {
		fmt.Fprintf(os.Stderr, "kube-fake: unknown --scenario %q (have: mixed, burst)\n", *scenario)
		os.Exit(2)
	}
	s, sc := seed(time.Now())
	var mu sync.Mutex // one line at a time on stdout
	s.OnCall(func(c kubefake.Call) {
		mu.Lock()
		defer mu.Unlock()
		body := c.Body
		if len(body) > 300 {
			body = body[:300] + "..."
		}
		dry := ""
		if c.DryRun {
			dry = " [dryRun=All]"
		}
		fmt.Printf("kube-fake: %s %s%s -> %d %s\n", c.Method, c.Path, dry, c.Code, strings.ToValidUTF8(body, "?"))
	})
	l, err := net.Listen("tcp", *listen)
	if err != nil {
		fmt.Fprintf(os.Stderr, "kube-fake: listen %s: %v\n", *listen, err)
		os.Exit(1)
	}
	s.StartOn(l)
	defer s.Close()
	port := l.Addr().(*net.TCPAddr).Port
	if *portFile != "" {
		tmp := *portFile + ".tmp"
		if err := os.WriteFile(tmp, []byte(fmt.Sprintf("%d\n", port)), 0o644); err != nil {
			fmt.Fprintf(os.Stderr, "kube-fake: %v\n", err)
			os.Exit(1)
		}
		if err := os.Rename(tmp, *portFile); err != nil {
			fmt.Fprintf(os.Stderr, "kube-fake: %v\n", err)
			os.Exit(1)
		}
	}
	fmt.Printf("kube-fake: serving scenario %s on %s (namespaces %s allowed; fixable %s; fixable after an approval %s; unfixable %s; forbidden %s)\n",
		*scenario, s.URL(), strings.Join(sc.Allowed, ","), strings.Join(sc.Fixable, ","),
		strings.Join(sc.NeedsApproval, ","), strings.Join(sc.Unfixable, ","), strings.Join(sc.Forbidden, ","))
	printStatus := func() {
		mu.Lock()
		defer mu.Unlock()
		healthy := map[string]bool{}
		for _, w := range sc.Healthy(s) {
			healthy[w] = true
		}
		var parts []string
		for _, w := range append(append(append(append([]string{}, sc.Fixable...), sc.NeedsApproval...), sc.Unfixable...), sc.Forbidden...) {
			state := "failing"
			if s.WorkloadHealthy(w) {
				state = "healthy"
			}
			parts = append(parts, w+"="+state)
		}
		fmt.Printf("kube-fake: status fixable healthy %d/%d: %s\n", len(healthy), len(sc.Fixable), strings.Join(parts, " "))
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	var tick <-chan time.Time
	if *statusEvery > 0 {
		t := time.NewTicker(*statusEvery)
		defer t.Stop()
		tick = t.C
	}
	for {
		select {
		case <-tick:
			printStatus()
		case <-sig:
			printStatus()
			fmt.Printf("kube-fake: %d mutating calls\n", len(s.Calls()))
			return
		}
	}
}
