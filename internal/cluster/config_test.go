package cluster

import (
	"strings"
	"testing"
	"time"
)

func TestConfigOffNeedsNothing(t *testing.T) {
	c := DefaultConfig()
	if err := c.Validate(); err != nil {
		t.Fatalf("the default (off) config is refused: %v", err)
	}
}

func TestConfigRefusesWhatCannotWork(t *testing.T) {
	ok := func() Config {
		c := DefaultConfig()
		c.Enabled = true
		c.URLs = []string{"nats://127.0.0.1:4222", "tls://nats.example.net:4222"}
		c.Secret = strings.Repeat("s", minSecret)
		return c
	}
	good := ok()
	if err := good.Validate(); err != nil {
		t.Fatalf("a good config is refused: %v", err)
	}
	for _, tc := range []struct {
		key    string
		change func(*Config)
	}{
		{"urls", func(c *Config) { c.URLs = nil }},
		{"urls[0]", func(c *Config) { c.URLs = []string{"127.0.0.1:4222"} }},
		{"secret", func(c *Config) { c.Secret = "hunter2" }},
		{"subject", func(c *Config) { c.Subject = "icebox.>" }},
		{"node", func(c *Config) { c.Node = "a.b" }},
		{"node", func(c *Config) { c.Node = strings.Repeat("n", 256) }},
		{"urls[0]", func(c *Config) { c.URLs = []string{"at://127.0.0.1:4222"} }},
		{"heartbeat", func(c *Config) { c.Heartbeat = time.Millisecond }},
		{"claim_timeout", func(c *Config) { c.ClaimTimeout = time.Microsecond }},
		{"token", func(c *Config) { c.Token, c.User = "t", "u" }},
		{"tls", func(c *Config) { c.TLS.Cert = "c.pem" }},
		{"node_timeout", func(c *Config) { c.NodeTimeout = c.Heartbeat }},
		{"claim_timeout", func(c *Config) { c.ClaimTimeout = 0 }},
	} {
		c := ok()
		tc.change(&c)
		err := c.Validate()
		if err == nil || !strings.Contains(err.Error(), tc.key+": ") || !strings.Contains(err.Error(), "fix:") {
			t.Errorf("%s: got %v, want an error for %s with a fix", tc.key, err, tc.key)
		}
		if err != nil && strings.Contains(err.Error(), c.Secret) && c.Secret != "" {
			t.Errorf("%s: the error echoes the secret", tc.key)
		}
	}
}
