package main

import (
	"log/slog"
	"reflect"
	"slices"
	"strings"

	"icebox/signal"
	"icebox/turnsrv"
)

// reload applies what can change while calls go on: TURN secrets, peer
// policy, quotas and certificates, signaling limits and origins, renamed
// certificate files, the STUN TCP idle timeouts (TURN's follows
// turn.quotas.max_lifetime) and the log level. Every other option
// (liveSettings says which are applied) is named as needing a restart, at
// every reload until then. The new config has been validated; if any part still cannot
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
	for _, key := range restartOnlyChanges(d.started, cfg) {
		d.log.Warn("setting changed; it takes effect on restart", "key", key)
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
	d.stun.SetTURNIdleTimeout(cfg.TURN.StreamIdleTimeout())
	level.Set(parseLevel(cfg.Log.Level))
	d.log.Info("config reloaded")
	return nil
}

// liveSettings are the options a reload applies (keys, or sections whose
// every option it applies), besides signaling's (signalApplies). Every
// other option takes a restart and restartOnlyChanges names it, so a new
// option cannot be ignored unsaid. The certificate files are re-read
// under new names; whether TLS is on at all takes a restart.
var liveSettings = []string{
	"log.level",
	"stun.tcp_idle_timeout",
	"turn.secrets", "turn.secret_file", "turn.secret_env",
	"turn.credential_ttl", "turn.max_ttl", "turn.peers", "turn.quotas",
	"turn.tls.cert", "turn.tls.key",
	"signal.tls.cert", "signal.tls.key",
	"tls.cert", "tls.key",
	// The cluster section has its own warning (clusterConfig().Changed).
	"cluster",
}

// restartOnlyChanges names the options that differ between the config
// the daemon started with and cfg and that only a restart applies:
// compared with the start, not the last reload, they are named at every
// reload until the restart.
func restartOnlyChanges(started, cfg Config) []string {
	var keys []string
	for _, key := range changedOptions("", reflect.ValueOf(started), reflect.ValueOf(cfg)) {
		if !appliedByReload(key) {
			keys = append(keys, key)
		}
	}
	// A part's certificate files are re-read under new names, but a part
	// that started on the tls section's certificate has no files of its
	// own to re-read, and one that started on its own keeps them: moving
	// between the two, with TLS on throughout, takes a restart too.
	ownTURN := (started.TURN.TLS.Cert == "") != (cfg.TURN.TLS.Cert == "")
	ownSignal := started.Signal.TLS.On() != cfg.Signal.TLS.On()
	for key, changed := range map[string]bool{
		"tls.cert (on or off)":                           (started.TLS.Cert == "") != (cfg.TLS.Cert == ""),
		"signal.tls (on or off)":                         started.signalTLS() != cfg.signalTLS(),
		"turn.tls (on or off)":                           started.turnTLS() != cfg.turnTLS(),
		"turn.tls.cert (its own or the tls section's)":   ownTURN && started.turnTLS() && cfg.turnTLS(),
		"signal.tls.cert (its own or the tls section's)": ownSignal && started.signalTLS() && cfg.signalTLS(),
	} {
		if changed {
			keys = append(keys, key)
		}
	}
	return keys
}

// appliedByReload reports whether a reload applies the option key.
func appliedByReload(key string) bool {
	return signalApplies(key) || slices.ContainsFunc(liveSettings, func(live string) bool {
		return key == live || strings.HasPrefix(key, live+".")
	})
}

// signalApplies reports whether signaling's PrepareReload applies the
// option key: every option of signal.Config but its listener (listen,
// enabled) and certificate files (liveSettings), not those main reads
// once at start (SignalConfig's own, ice_host and web).
func signalApplies(key string) bool {
	name, ok := strings.CutPrefix(key, "signal.")
	if !ok || name == "listen" || name == "enabled" || strings.HasPrefix(name, "tls.") {
		return false
	}
	_, ok = fieldByTag(reflect.TypeFor[signal.Config](), name)
	return ok
}

// changedOptions lists the dotted keys of the options (leaves of the
// yaml tree) whose values differ between a and b, values of one struct
// type; an inline struct's options belong to the enclosing section.
func changedOptions(section string, a, b reflect.Value) []string {
	var keys []string
	for i := range a.NumField() {
		f := a.Type().Field(i)
		name, opts, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if !f.IsExported() || name == "-" || name == "" && opts != "inline" {
			continue
		}
		key := section
		if opts != "inline" {
			key = strings.TrimPrefix(section+"."+name, ".")
		}
		x, y := a.Field(i), b.Field(i)
		if f.Type.Kind() == reflect.Struct {
			keys = append(keys, changedOptions(key, x, y)...)
		} else if !reflect.DeepEqual(x.Interface(), y.Interface()) {
			keys = append(keys, key)
		}
	}
	return keys
}
