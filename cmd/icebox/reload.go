package main

import (
	"fmt"
	"log/slog"
	"reflect"

	"icebox/turnsrv"
)

// reload applies what can change while calls go on: TURN secrets, peer
// policy, quotas and certificates, signaling limits and origins, renamed
// certificate files, the STUN TCP idle timeouts (TURN's follows
// turn.quotas.max_lifetime) and the log level. Listening
// addresses and other settings that need new sockets are logged as needing
// a restart. The new config has been validated; if any part still cannot
// take it (an unreadable secret file or certificate), every part keeps its
// old settings and reload says why.
//
// The cluster section is not reloaded: each change is logged as needing a
// restart, against the settings the node runs with, at every reload until
// then. Its settings are the node's identity to the others (node name,
// secret, subject, NATS servers and credentials); applying one live means
// a new NATS connection under which the other nodes forget this node's
// members, and a changed secret or subject would cut this node off until
// every node had reloaded. A restart, node by node, does the same cleanly:
// the members reconnect and re-join.
func (d *daemon) reload(cfg Config, level *slog.LevelVar) error {
	for _, key := range d.signal.clusterConfig().Changed(cfg.Cluster) {
		d.log.Warn("cluster setting changed; restart needed, the running cluster settings stay until then", "key", "cluster."+key)
	}
	was := d.started
	for key, changed := range map[string]bool{
		"public_ip":                           was.PublicIP != cfg.PublicIP,
		"state_dir":                           was.StateDir != cfg.StateDir,
		"stun.listen":                         !reflect.DeepEqual(was.STUN.Listen, cfg.STUN.Listen),
		"stun.tcp":                            was.STUN.TCP != cfg.STUN.TCP,
		"stun.sockets":                        was.STUN.Sockets != cfg.STUN.Sockets,
		"stun.max_tcp_connections":            was.STUN.MaxTCPConnections != cfg.STUN.MaxTCPConnections,
		"stun.max_tcp_connections_per_source": was.STUN.MaxTCPConnectionsPerSource != cfg.STUN.MaxTCPConnectionsPerSource,
		"stun.max_tls_handshakes":             was.STUN.MaxTLSHandshakes != cfg.STUN.MaxTLSHandshakes,
		"stun.tls_handshake_timeout":          was.STUN.TLSHandshakeTimeout != cfg.STUN.TLSHandshakeTimeout,
		"turn.enabled":                        was.TURN.Enabled != cfg.TURN.Enabled,
		"signal.enabled":                      was.Signal.Enabled != cfg.Signal.Enabled,
		"admin":                               was.Admin != cfg.Admin,
		"tls.listen":                          was.TLS.Listen != cfg.TLS.Listen,
		"tls.acme":                            fmt.Sprint(was.TLS.ACME) != fmt.Sprint(cfg.TLS.ACME),
		"tls.cert (on or off)":                (was.TLS.Cert == "") != (cfg.TLS.Cert == ""),
		"signal.tls (on or off)":              (was.Signal.TLS.On() || was.TLS.On()) != (cfg.Signal.TLS.On() || cfg.TLS.On()),
		"turn.tls (on or off)":                (was.TURN.TLS.Cert != "" || was.TLS.On()) != (cfg.TURN.TLS.Cert != "" || cfg.TLS.On()),
	} {
		if changed {
			d.log.Warn("setting changed; it takes effect on restart", "key", key)
		}
	}
	// Every part prepares (loads secrets, certificates, checks) first;
	// only when all have succeeded does any of them change.
	commitTLS, err := d.tls.prepareReload(cfg, d.log)
	if err != nil {
		return err
	}
	var turnReload *turnsrv.PreparedReload
	var keys [][]byte
	if d.turn != nil {
		var err error
		if turnReload, err = d.turn.PrepareReload(cfg.TURN); err != nil {
			return err
		}
		keys = turnReload.Secrets()
	}
	commitSignal, err := d.signal.prepareReload(cfg, keys)
	if err != nil {
		return err
	}
	commitTLS()
	if turnReload != nil {
		turnReload.Commit()
		warnShortCredentialTTL(d.log, cfg.TURN)
	}
	commitSignal()
	d.stun.SetTCPIdleTimeout(cfg.STUN.TCPIdleTimeout)
	d.stun.SetTURNIdleTimeout(turnIdleTimeout(cfg.TURN))
	level.Set(parseLevel(cfg.Log.Level))
	d.log.Info("config reloaded")
	return nil
}
