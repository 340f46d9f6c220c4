package main

import (
	"bytes"
	"crypto/x509"
	"log/slog"
	"path/filepath"
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
// off or changes a socket setting applies the rest and names each such
// setting as taking effect on restart, at this reload and every one after
// it until the restart, since the running parts still have the old one.
func TestReloadNamesRestartSettingsUntilRestart(t *testing.T) {
	cfg := testConfig(t)
	d, logs := startDaemon(t, cfg)
	level := &slog.LevelVar{}
	next := cfg
	next.TURN.Enabled = false
	next.Signal.Enabled = false
	next.STUN.Sockets = cfg.STUN.Sockets + 1
	next.TLS.Listen = "127.0.0.1:1" // never listened on: a restart would
	next.Log.Level = "warn"
	for i := range 2 {
		before := len(logs.String())
		if err := d.reload(next, level); err != nil {
			t.Fatalf("reload %d: %v", i, err)
		}
		out := logs.String()[before:]
		for _, key := range []string{"turn.enabled", "signal.enabled", "stun.sockets", "tls.listen"} {
			if !strings.Contains(out, `takes effect on restart" key=`+key+"\n") {
				t.Errorf("reload %d did not name %s as taking effect on restart:\n%s", i, key, out)
			}
		}
		if strings.Contains(out, "key=stun.listen\n") {
			t.Errorf("reload %d named the unchanged stun.listen:\n%s", i, out)
		}
		cfg = next // as serve does after a reload that succeeded
	}
	if level.Level() != slog.LevelWarn {
		t.Errorf("log level %v after reload, want warn: the rest was not applied", level.Level())
	}
}
