package main

import (
	"log/slog"
	"strings"
	"testing"

	"icebox/internal/testenv"
)

// TestWarnsForNonPublicAddress: a documentation-range address is neither
// public nor private (RFC 1918); start-up must still warn, naming the range.
func TestWarnsForNonPublicAddress(t *testing.T) {
	for addr, want := range map[string]string{
		"192.0.2.2": "documentation TEST-NET-1 (RFC 5737)",
		"10.0.0.7":  "private (RFC 1918)",
		"1.2.3.4":   "",
	} {
		cfg := testConfig(t)
		cfg.PublicIP = addr // announced only: relays stay on 127.0.0.1
		_, logs := startDaemon(t, cfg)
		warned := strings.Contains(logs.String(), "clients are told a non-public address")
		if want == "" && warned || want != "" && (!warned || !strings.Contains(logs.String(), want)) {
			t.Errorf("public_ip %s: want a warning naming %q, log:\n%s", addr, want, logs)
		}
	}
}

// TestWarnsThatCredentialsAreOpen: with TURN and signaling on, no join
// tokens and signaling reachable beyond loopback, start-up says that
// anyone reaching signaling gets TURN credentials, and nothing otherwise.
func TestWarnsThatCredentialsAreOpen(t *testing.T) {
	for _, tc := range []struct {
		mutate func(*Config)
		warn   bool
	}{
		{func(c *Config) {}, true}, // the defaults: :8080
		{func(c *Config) { c.Signal.Listen = "203.0.113.1:443" }, true},
		{func(c *Config) { c.Signal.RequireToken = true }, false},
		{func(c *Config) { c.TURN.Enabled = false }, false},
		{func(c *Config) { c.Signal.Enabled = false }, false},
		{func(c *Config) { c.Signal.Listen = "127.0.0.1:8080" }, false},
		{func(c *Config) { c.Signal.Listen = "[::1]:8080" }, false},
		{func(c *Config) { c.Signal.Listen = "localhost:8080" }, false},
		{func(c *Config) { c.Signal.Listen, c.TLS.Listen = "127.0.0.1:8080", ":443" }, true}, // signaling on the shared port
		{func(c *Config) { c.Signal.Listen, c.TLS.Listen = "127.0.0.1:8080", "127.0.0.1:8443" }, false},
	} {
		cfg := DefaultConfig()
		tc.mutate(&cfg)
		logs := &testenv.LogBuffer{}
		warnOpenCredentials(slog.New(slog.NewTextHandler(logs, nil)), cfg)
		if got := strings.Contains(logs.String(), "gets TURN credentials"); got != tc.warn {
			t.Errorf("signal.listen %q, tls.listen %q, require_token %v, turn %v, signal %v: warned %v, want %v",
				cfg.Signal.Listen, cfg.TLS.Listen, cfg.Signal.RequireToken, cfg.TURN.Enabled, cfg.Signal.Enabled, got, tc.warn)
		}
	}
}
