package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"icebox/internal/cluster"
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
}

func startSignal(cfg Config, urls iceURLs, turn *turnsrv.Server, log *slog.Logger, reg prometheus.Registerer) (*signalPart, error) {
	p := &signalPart{done: make(chan struct{})}
	keys, err := tokenKeys(cfg, turn)
	if err != nil {
		return nil, err
	}
	iceServers := func(user string) ([]signal.ICEServer, time.Time) {
		out := []signal.ICEServer{{URLs: urls.stun}}
		if turn == nil || len(urls.turn) == 0 {
			// Nothing expires: refresh rarely.
			return out, time.Now().Add(24 * time.Hour)
		}
		username, password, expires := turn.MintCredential(user, 0)
		return append(out, signal.ICEServer{URLs: urls.turn, Username: username, Credential: password}), expires
	}
	opts := signal.Options{
		Logger:     log,
		Registerer: reg,
		ICEServers: iceServers,
		TokenKeys:  keys,
	}
	if cfg.Cluster.Enabled {
		if p.node, err = cluster.New(cfg.Cluster, cluster.Options{Logger: log.With("part", "cluster"), Registerer: reg}); err != nil {
			return nil, err
		}
		opts.Cluster = p.node
	}
	p.srv, err = signal.New(cfg.Signal, opts)
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
	if p.ln, err = net.Listen("tcp", cfg.Signal.Listen); err != nil {
		p.node.Close()
		return nil, fmt.Errorf("signal: listen %s: %w (another web server may hold the port; set signal.listen)", cfg.Signal.Listen, err)
	}
	go func() {
		defer close(p.done)
		if err := p.srv.Serve(p.ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("signaling listener failed", "err", err)
		}
	}()
	return p, nil
}

// tokenKeys are the join-token keys: the TURN secrets, so that one secret
// serves both (docs/protocol.md's one set of credentials).
func tokenKeys(cfg Config, turn *turnsrv.Server) ([][]byte, error) {
	if turn != nil {
		return turn.Secrets(), nil
	}
	return turnsrv.LoadSecrets(cfg.TURN, stateDir(cfg.StateDir), true)
}

func (p *signalPart) reload(cfg Config, turn *turnsrv.Server) error {
	if p == nil {
		return nil
	}
	keys, err := tokenKeys(cfg, turn)
	if err != nil {
		return err
	}
	if err := p.srv.Reload(cfg.Signal); err != nil {
		return err
	}
	p.srv.SetTokenKeys(keys)
	return nil
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
	select {
	case <-p.done:
	case <-ctx.Done():
	}
}
