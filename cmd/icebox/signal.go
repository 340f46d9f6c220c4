package main

import (
	"context"
	"log/slog"
	"net"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"icebox/internal/cluster"
	"icebox/internal/credentials"
	"icebox/signal"
	"icebox/signal/web"
	"icebox/turnsrv"
)

// signalPart is the signaling server on its own listener, handed icebox's
// own ICE servers.
type signalPart struct {
	srv  *signal.Server
	node *cluster.Node // nil: pairings live in this process only
	ln   net.Listener
	done chan struct{}
	// shared is closed when serving the shared TLS port's HTTP ends;
	// nil without that port.
	shared chan struct{}
	// cluster is the cluster section the node runs with: a reload keeps
	// it (see daemon.reload).
	cluster cluster.Config
}

func startSignal(cfg Config, urls iceURLs, turn *turnsrv.Server, tlsp *tlsPart, log *slog.Logger, reg prometheus.Registerer) (*signalPart, error) {
	p := &signalPart{done: make(chan struct{}), cluster: cfg.Cluster}
	keys, err := tokenKeys(cfg, turn)
	if err != nil {
		return nil, err
	}
	iceServers := func(user string) ([]signal.ICEServer, time.Time) {
		if turn == nil || len(urls.turn) == 0 {
			// Nothing expires: refresh rarely.
			return iceURLs{stun: urls.stun}.servers("", ""), time.Now().Add(24 * time.Hour)
		}
		username, password, expires := turn.MintCredential(user, 0)
		return urls.servers(username, password), expires
	}
	opts := signal.Options{
		Logger:         log,
		Registerer:     reg,
		ICEServers:     iceServers,
		TokenKeys:      keys,
		GetCertificate: tlsp.signalCert(),
	}
	if cfg.Cluster.Enabled {
		if p.node, err = cluster.New(cfg.Cluster, cluster.Options{Logger: log.With("part", "cluster"), Registerer: reg}); err != nil {
			return nil, err
		}
		opts.Cluster = p.node
	}
	p.srv, err = signal.New(cfg.Signal.Config, opts)
	if err != nil {
		return nil, err
	}
	if p.node != nil {
		if err := p.node.Start(p.srv); err != nil {
			return nil, err
		}
	}
	if cfg.Signal.Web {
		p.srv.Handle("/", web.Handler())
	}
	if p.ln, err = listenTCP("signal.listen", cfg.Signal.Listen, ", or signal.enabled: false", log); err != nil {
		p.node.Close()
		return nil, err
	}
	serveHTTP(log, "signaling listener", p.done, func() error { return p.srv.Serve(p.ln) })
	if tlsp.mux != nil {
		p.shared = make(chan struct{})
		serveHTTP(log, "signaling on the shared TLS port", p.shared, func() error { return p.srv.ServeTerminated(tlsp.mux.HTTP()) })
	}
	return p, nil
}

// tokenKeys are the join-token keys: the TURN secrets, so that one secret
// serves both (docs/protocol.md's one set of credentials).
func tokenKeys(cfg Config, turn *turnsrv.Server) ([][]byte, error) {
	if turn != nil {
		return turn.Secrets(), nil
	}
	return credentials.Load(cfg.TURN.SecretSources(), stateDir(cfg.StateDir), true)
}

// prepareReload checks cfg for signaling with keys as the join-token keys
// (the TURN secrets the reload puts in force); nil keys means load them as
// startSignal does. The commit it returns cannot fail.
func (p *signalPart) prepareReload(cfg Config, keys [][]byte) (func(), error) {
	if p == nil {
		return func() {}, nil
	}
	if keys == nil {
		var err error
		if keys, err = tokenKeys(cfg, nil); err != nil {
			return nil, err
		}
	}
	return p.srv.PrepareReload(cfg.Signal.Config, keys)
}

// clusterReady reports whether the cluster's NATS is reachable; nil
// without a cluster.
func (p *signalPart) clusterReady() error {
	if p == nil || p.node == nil {
		return nil
	}
	return p.node.Ready()
}

func (p *signalPart) addr() string {
	if p == nil {
		return "off"
	}
	return p.ln.Addr().String()
}

// close stops accepting and closes every WebSocket with 1001 (going away).
func (p *signalPart) close(ctx context.Context) {
	if p == nil {
		return
	}
	p.srv.Shutdown(ctx)
	p.node.Close()
	p.ln.Close()
	for _, done := range []chan struct{}{p.done, p.shared} {
		if done == nil {
			continue
		}
		select {
		case <-done:
		case <-ctx.Done():
		}
	}
}

// clusterConfig is the cluster section the running node uses; off when
// signaling is.
func (p *signalPart) clusterConfig() cluster.Config {
	if p == nil {
		return cluster.DefaultConfig()
	}
	return p.cluster
}
