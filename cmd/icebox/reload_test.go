package main

import (
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	"icebox/internal/testenv"
)

// TestReloadAllOrNothing: when one part cannot take the new config, no
// part takes it. Before, TURN kept new settings while signaling refused
// (here: signaling's new certificate is missing).
func TestReloadAllOrNothing(t *testing.T) {
	dir := t.TempDir()
	cert, key := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	testenv.WriteCert(t, cert, key, time.Now())
	cfg := testConfig(t)
	cfg.Signal.TLS.Cert, cfg.Signal.TLS.Key = cert, key
	d, _ := startDaemon(t, cfg)
	ttl := func() time.Duration {
		_, _, exp := d.turn.MintCredential("probe", 0)
		return time.Until(exp).Round(time.Hour)
	}
	if got := ttl(); got != cfg.TURN.CredentialTTL {
		t.Fatalf("credential ttl %v, want %v", got, cfg.TURN.CredentialTTL)
	}
	level := &slog.LevelVar{}

	next := cfg
	next.TURN.CredentialTTL = time.Hour
	next.Signal.TLS.Cert = filepath.Join(dir, "missing.pem")
	if err := d.reload(cfg, next, level); err == nil {
		t.Fatal("reload with a missing signaling certificate succeeded")
	}
	if got := ttl(); got != cfg.TURN.CredentialTTL {
		t.Errorf("after a refused reload TURN mints for %v, want the old %v", got, cfg.TURN.CredentialTTL)
	}

	// And the other way round: TURN refuses, signaling keeps its settings.
	next = cfg
	next.TURN.SecretFile = filepath.Join(dir, "no-such-secret-file")
	next.Signal.MaxErrors = cfg.Signal.MaxErrors + 1
	if err := d.reload(cfg, next, level); err == nil {
		t.Fatal("reload with a missing secret file succeeded")
	}
	// Both take a good config.
	next = cfg
	next.TURN.CredentialTTL = time.Hour
	if err := d.reload(cfg, next, level); err != nil {
		t.Fatal(err)
	}
	if got := ttl(); got != time.Hour {
		t.Errorf("after a good reload TURN mints for %v, want 1h", got)
	}
}
