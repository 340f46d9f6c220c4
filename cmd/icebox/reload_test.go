package main

import (
	"bytes"
	"crypto/x509"
	"log/slog"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"icebox/internal/testenv"
)

// TestReloadAllOrNothing: when one part cannot take the new config, no
// part takes it. Before, TURN kept new settings while signaling refused.
// The parts prepare in turn (TLS certificates, TURN, signaling), so each
// refusal below comes after the parts before it prepared new settings:
// those must be discarded, and the parts keep the old ones.
func TestReloadAllOrNothing(t *testing.T) {
	dir := t.TempDir()
	cert, key := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	oldCert := testenv.WriteCert(t, cert, key, time.Now())
	// A second, valid pair under other names: renaming signal.tls's files
	// to it is a change the TLS part prepares.
	cert2, key2 := filepath.Join(dir, "cert2.pem"), filepath.Join(dir, "key2.pem")
	newCert := testenv.WriteCert(t, cert2, key2, time.Now())
	cfg := testConfig(t)
	cfg.Signal.TLS.Cert, cfg.Signal.TLS.Key = cert, key
	d, _ := startDaemon(t, cfg)
	ttl := func() time.Duration {
		_, _, exp := d.turn.MintCredential("probe", 0)
		return time.Until(exp).Round(time.Hour)
	}
	served := func() *x509.Certificate {
		c, err := d.tls.signal.GetCertificate(nil)
		if err != nil || c == nil {
			t.Fatalf("signal.tls serves no certificate: %v", err)
		}
		return c.Leaf
	}
	keptOld := func(when string) {
		t.Helper()
		if got := ttl(); got != cfg.TURN.CredentialTTL {
			t.Errorf("%s: TURN mints for %v, want the old %v", when, got, cfg.TURN.CredentialTTL)
		}
		if !bytes.Equal(served().Raw, oldCert.Raw) {
			t.Errorf("%s: signal.tls serves the new certificate file", when)
		}
	}
	keptOld("at start")
	level := &slog.LevelVar{}

	// Signaling, which prepares last, refuses: TLS and TURN have prepared
	// their new settings (a renamed certificate, a 1h credential TTL).
	next := cfg
	next.TURN.CredentialTTL = time.Hour
	next.Signal.TLS.Cert, next.Signal.TLS.Key = cert2, key2
	next.Signal.MaxErrors = 0 // out of range: signaling's check refuses it
	err := d.reload(next, level)
	if err == nil || !strings.Contains(err.Error(), "max_errors") {
		t.Fatalf("reload with signal.max_errors 0: %v, want signaling's refusal", err)
	}
	keptOld("after signaling refused")

	// TURN refuses (its secret file is missing) after TLS prepared.
	next = cfg
	next.TURN.SecretFile = filepath.Join(dir, "no-such-secret-file")
	next.Signal.TLS.Cert, next.Signal.TLS.Key = cert2, key2
	if err := d.reload(next, level); err == nil || !strings.Contains(err.Error(), "no-such-secret-file") {
		t.Fatalf("reload with a missing secret file: %v, want TURN's refusal", err)
	}
	keptOld("after TURN refused")

	// All take a good config: the changes refused above were real ones.
	next = cfg
	next.TURN.CredentialTTL = time.Hour
	next.Signal.TLS.Cert, next.Signal.TLS.Key = cert2, key2
	if err := d.reload(next, level); err != nil {
		t.Fatal(err)
	}
	if got := ttl(); got != time.Hour {
		t.Errorf("after a good reload TURN mints for %v, want 1h", got)
	}
	if !bytes.Equal(served().Raw, newCert.Raw) {
		t.Error("after a good reload signal.tls does not serve the renamed certificate file")
	}
}

// TestReloadCarriesMaxLifetimeToTheFrontDoor: a reload that raises
// turn.quotas.max_lifetime raises how long the STUN port keeps a quiet
// TCP or TLS connection that holds an allocation. Before, that stayed at
// the old max_lifetime plus a minute: an allocation granted the new
// lifetime lost its connection, and with it the allocation, before it
// needed a refresh. (turnsrv's TestTURNIdleTimeoutChangesLive shows the
// new timeout reaching a connection that holds one.)
func TestReloadCarriesMaxLifetimeToTheFrontDoor(t *testing.T) {
	cfg := testConfig(t)
	cfg.TURN.Quotas.MaxLifetime = 10 * time.Minute
	d, _ := startDaemon(t, cfg)
	if got, want := d.stun.TURNIdleTimeout(), 11*time.Minute; got != want {
		t.Fatalf("TURN idle timeout %v at start, want %v", got, want)
	}
	next := cfg
	next.TURN.Quotas.MaxLifetime = time.Hour
	if err := d.reload(next, &slog.LevelVar{}); err != nil {
		t.Fatal(err)
	}
	if got, want := d.stun.TURNIdleTimeout(), time.Hour+time.Minute; got != want {
		t.Errorf("TURN idle timeout %v after raising max_lifetime to 1h, want %v", got, want)
	}
}

// TestReloadNamesRestartSettingsUntilRestart: a reload that turns a part
// off or changes a setting only a restart applies applies the rest and
// names each such setting once as taking effect on restart, at this
// reload and every one after it until the restart, since the running
// parts still have the old one. Before, log.format, public_ip_stun,
// signal.web and signal.ice_host went unnamed, turn's relay, realm and
// tls.listen were named at the first reload only, and turn.enabled twice.
func TestReloadNamesRestartSettingsUntilRestart(t *testing.T) {
	cfg := testConfig(t)
	d, logs := startDaemon(t, cfg)
	level := &slog.LevelVar{}
	next := cfg
	next.TURN.Enabled = false
	next.Signal.Enabled = false
	next.STUN.Sockets = cfg.STUN.Sockets + 1
	next.TLS.Listen = "127.0.0.1:1" // never listened on: a restart would
	next.Log.Format = "json"
	next.PublicIPSTUN = []string{"192.0.2.1:3478"}
	next.Signal.Web = false
	next.Signal.ICEHost = "turn.example.com"
	next.Signal.Listen = "127.0.0.1:1"
	next.TURN.Realm = "elsewhere"
	next.TURN.Relay.Ports = "50000-50100"
	next.TURN.TLS.Listen = "127.0.0.1:2"
	restart := []string{"turn.enabled", "signal.enabled", "stun.sockets", "tls.listen", "log.format", "public_ip_stun",
		"signal.web", "signal.ice_host", "signal.listen", "turn.realm", "turn.relay.ports", "turn.tls.listen"}
	// Applied live, so never named.
	next.Log.Level = "warn"
	next.TURN.CredentialTTL = time.Hour
	next.Signal.MaxConns = cfg.Signal.MaxConns + 1
	for i := range 3 {
		before := len(logs.String())
		if err := d.reload(next, level); err != nil {
			t.Fatalf("reload %d: %v", i, err)
		}
		out := logs.String()[before:]
		for _, key := range restart {
			if n := strings.Count(out, "key="+key+"\n"); n != 1 {
				t.Errorf("reload %d named %s %d times, want once as taking effect on restart:\n%s", i, key, n, out)
			}
		}
		if got, want := strings.Count(out, "restart"), len(restart); got != want {
			t.Errorf("reload %d mentions a restart %d times, want %d (one per changed setting):\n%s", i, got, want, out)
		}
		// A different config each time, as repeated edits would give;
		// only the start counts.
		next.Signal.MaxConns++
	}
	if level.Level() != slog.LevelWarn {
		t.Errorf("log level %v after reload, want warn: the rest was not applied", level.Level())
	}
}

// TestEveryOptionIsAppliedOrNamedAtReload changes each option of the
// config alone and checks that reload either applies it (liveSettings,
// signaling's own) or names exactly that option as taking a restart: an
// option added later is named until someone makes it live, never
// ignored in silence.
func TestEveryOptionIsAppliedOrNamedAtReload(t *testing.T) {
	base := DefaultConfig()
	options := leafOptions("", reflect.TypeFor[Config]())
	if len(options) < 80 {
		t.Fatalf("found %d options; the walk no longer sees the config", len(options))
	}
	live := 0
	for _, key := range options {
		changed := base
		changeOption(t, reflect.ValueOf(&changed).Elem(), key)
		// A certificate where there was none also turns TLS on, which
		// takes a restart: those are named as "(on or off)".
		got := slices.DeleteFunc(restartOnlyChanges(base, changed), func(k string) bool { return strings.HasSuffix(k, " (on or off)") })
		applied := appliedByReload(key)
		switch {
		case applied && len(got) == 0:
			live++
		case !applied && slices.Equal(got, []string{key}):
		default:
			t.Errorf("changing %s alone: reload names %q as taking a restart, want [%s], or nothing for an option it applies", key, got, key)
		}
	}
	// With the tls section's certificate in force, a part that gains or
	// loses a certificate of its own keeps TLS on, and the reload says a
	// restart is needed: it has no files to re-read, or keeps its old ones.
	shared := base
	shared.TLS.Cert, shared.TLS.Key = "/etc/icebox/cert.pem", "/etc/icebox/key.pem"
	own := shared
	own.TURN.TLS.Cert, own.TURN.TLS.Key = "/etc/icebox/turn.pem", "/etc/icebox/turn-key.pem"
	own.Signal.TLS.Cert, own.Signal.TLS.Key = "/etc/icebox/signal.pem", "/etc/icebox/signal-key.pem"
	want := []string{"signal.tls.cert (its own or the tls section's)", "turn.tls.cert (its own or the tls section's)"}
	for _, c := range []struct{ from, to Config }{{shared, own}, {own, shared}} {
		got := restartOnlyChanges(c.from, c.to)
		slices.Sort(got)
		if !slices.Equal(got, want) {
			t.Errorf("between the shared certificate and the parts' own: reload names %q, want %q", got, want)
		}
	}
	for _, l := range liveSettings {
		if !slices.ContainsFunc(options, func(key string) bool { return key == l || strings.HasPrefix(key, l+".") }) {
			t.Errorf("liveSettings names %s, which is no option", l)
		}
	}
	t.Logf("%d options, %d applied by a reload", len(options), live)
}

// leafOptions lists the dotted keys of every option under type t.
func leafOptions(section string, t reflect.Type) []string {
	if t.Kind() != reflect.Struct {
		return []string{section}
	}
	var keys []string
	for f := range t.Fields() {
		name, opts, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		switch {
		case !f.IsExported() || name == "-":
		case opts == "inline":
			keys = append(keys, leafOptions(section, f.Type)...)
		case name != "":
			keys = append(keys, leafOptions(strings.TrimPrefix(section+"."+name, "."), f.Type)...)
		}
	}
	return keys
}

// fieldValue is the field of struct v whose yaml key is name, looked for
// in inline fields too.
func fieldValue(v reflect.Value, name string) (reflect.Value, bool) {
	for i := range v.NumField() {
		tag, opts, _ := strings.Cut(v.Type().Field(i).Tag.Get("yaml"), ",")
		if tag == name {
			return v.Field(i), true
		}
		if opts == "inline" {
			if f, ok := fieldValue(v.Field(i), name); ok {
				return f, true
			}
		}
	}
	return reflect.Value{}, false
}

// changeOption gives the option key in v (a Config) another value.
func changeOption(t *testing.T, v reflect.Value, key string) {
	t.Helper()
	for _, name := range strings.Split(key, ".") {
		var ok bool
		if v, ok = fieldValue(v, name); !ok {
			t.Fatalf("%s: no field for %q", key, name)
		}
	}
	switch v.Kind() {
	case reflect.String:
		v.SetString(v.String() + "x")
	case reflect.Bool:
		v.SetBool(!v.Bool())
	case reflect.Int, reflect.Int64:
		v.SetInt(v.Int() + 1)
	case reflect.Float64:
		v.SetFloat(v.Float() + 1)
	case reflect.Slice:
		v.Set(reflect.Append(v, reflect.Zero(v.Type().Elem())))
	default:
		t.Fatalf("%s: cannot change a %v", key, v.Type())
	}
}
