package main

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"icebox/internal/cfgerr"
)

// AdminConfig is the admin section: the operator's own endpoints.
type AdminConfig struct {
	// Where /metrics (Prometheus), /healthz, /readyz and, with pprof,
	// /debug/pprof/ are served; "" turns them off. Default
	// "127.0.0.1:9478": loopback only, as these say a lot about the box.
	Listen string `yaml:"listen"`
	// Go's profiler under /debug/pprof/ on the admin listener.
	// Default true.
	Pprof bool `yaml:"pprof"`
}

func defaultAdminConfig() AdminConfig {
	return AdminConfig{Listen: "127.0.0.1:9478", Pprof: true}
}

func (c *AdminConfig) validate() error {
	if c.Listen == "" {
		return nil
	}
	if _, _, err := net.SplitHostPort(c.Listen); err != nil {
		return cfgerr.New("listen", err.Error(), `listen: "127.0.0.1:9478", or "" to turn it off`)
	}
	return nil
}

// admin serves the operator's endpoints on their own listener, apart from
// anything clients reach.
type admin struct {
	srv *http.Server
	ln  net.Listener
}

// startAdmin listens at once so a taken port fails start-up, not later.
// ready is what /readyz answers (daemon.readyz: the STUN/TURN read loops
// and the cluster link).
func startAdmin(cfg AdminConfig, reg *prometheus.Registry, ready func() error, log *slog.Logger) (*admin, error) {
	if cfg.Listen == "" {
		return nil, nil
	}
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if err := ready(); err != nil {
			http.Error(w, "not ready: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ready")
	})
	if cfg.Pprof {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	ln, err := listenTCP("admin.listen", cfg.Listen, `, "" to turn it off`, log)
	if err != nil {
		return nil, err
	}
	a := &admin{srv: &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}, ln: ln}
	serveHTTP(log, "admin listener", nil, func() error { return a.srv.Serve(ln) })
	return a, nil
}

func (a *admin) addr() string {
	if a == nil {
		return ""
	}
	return a.ln.Addr().String()
}

func (a *admin) close(ctx context.Context) {
	if a != nil {
		a.srv.Shutdown(ctx)
	}
}
