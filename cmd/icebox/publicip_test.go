package main

import (
	"strings"
	"testing"
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
