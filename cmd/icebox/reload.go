package main

import (
	"log/slog"
	"reflect"
)

// reload applies what can change while calls go on: TURN secrets, peer
// policy, quotas and certificate, signaling limits, origins and certificate,
// the STUN TCP idle timeout and the log level. Listening addresses and other
// settings that need new sockets are logged as needing a restart. The new
// config has been validated; a part that still cannot take it (an unreadable
// secret file or certificate) keeps its old settings and reload says so.
func (d *daemon) reload(old, cfg Config, level *slog.LevelVar) error {
	for key, changed := range map[string]bool{
		"public_ip":                           old.PublicIP != cfg.PublicIP,
		"state_dir":                           old.StateDir != cfg.StateDir,
		"stun.listen":                         !reflect.DeepEqual(old.STUN.Listen, cfg.STUN.Listen),
		"stun.tcp":                            old.STUN.TCP != cfg.STUN.TCP,
		"stun.sockets":                        old.STUN.Sockets != cfg.STUN.Sockets,
		"stun.max_tcp_connections":            old.STUN.MaxTCPConnections != cfg.STUN.MaxTCPConnections,
		"stun.max_tcp_connections_per_source": old.STUN.MaxTCPConnectionsPerSource != cfg.STUN.MaxTCPConnectionsPerSource,
		"stun.max_tls_handshakes":             old.STUN.MaxTLSHandshakes != cfg.STUN.MaxTLSHandshakes,
		"stun.tls_handshake_timeout":          old.STUN.TLSHandshakeTimeout != cfg.STUN.TLSHandshakeTimeout,
		"admin":                               old.Admin != cfg.Admin,
	} {
		if changed {
			d.log.Warn("setting changed; it takes effect on restart", "key", key)
		}
	}
	if d.turn != nil {
		if err := d.turn.Reload(cfg.TURN); err != nil {
			return err
		}
	}
	if err := d.signal.reload(cfg, d.turn); err != nil {
		return err
	}
	d.stun.SetTCPIdleTimeout(cfg.STUN.TCPIdleTimeout)
	level.Set(parseLevel(cfg.Log.Level))
	d.log.Info("config reloaded")
	return nil
}
