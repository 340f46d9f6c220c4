package turnsrv

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"icebox/internal/cfgerr"
)

func TestDefaultConfigValid(t *testing.T) {
	cfg := DefaultConfig()
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
}

func TestValidate(t *testing.T) {
	for _, tc := range []struct {
		key string
		mut func(*Config)
	}{
		{"realm", func(c *Config) { c.Realm = "" }},
		{"realm", func(c *Config) { c.Realm = "a\nb" }},
		{"secrets[1]", func(c *Config) { c.Secrets = []string{"long-enough-secret-0123", "short"} }},
		{"secret_env", func(c *Config) { c.SecretEnv = "1BAD-NAME" }},
		{"credential_ttl", func(c *Config) { c.CredentialTTL = 0 }},
		{"max_ttl", func(c *Config) { c.MaxTTL = time.Hour }},
		{"tls.key", func(c *Config) { c.TLS.Cert = "cert.pem" }},
		{"tls.cert", func(c *Config) { c.TLS.Key = "key.pem" }},
		{"tls.listen", func(c *Config) { c.TLS.Cert, c.TLS.Key, c.TLS.Listen = "c", "k", "5349" }},
		{"relay.address", func(c *Config) { c.Relay.Address = "::1" }},
		{"relay.address", func(c *Config) { c.Relay.Address = "relay.example.com" }},
		{"relay.ports", func(c *Config) { c.Relay.Ports = "65535-49152" }},
		{"relay.ports", func(c *Config) { c.Relay.Ports = "0-100" }},
		{"relay.ports", func(c *Config) { c.Relay.Ports = "lots" }},
		{"peers.allow[0]", func(c *Config) { c.Peers.Allow = []string{"10.0.0.0/33"} }},
		{"peers.deny[1]", func(c *Config) { c.Peers.Deny = []string{"10.0.0.1", "nonsense"} }},
		{"quotas.per_user", func(c *Config) { c.Quotas.PerUser = -1 }},
		{"quotas.permissions", func(c *Config) { c.Quotas.Permissions = -1 }},
		{"quotas.channels", func(c *Config) { c.Quotas.Channels = -1 }},
		{"quotas.bytes_per_second", func(c *Config) { c.Quotas.BytesPerSecond = -1 }},
		{"quotas.bytes_per_second", func(c *Config) { c.Quotas.BytesPerSecond = minBytesPerSecond - 1 }},
		{"quotas.max_lifetime", func(c *Config) { c.Quotas.MaxLifetime = 2 * time.Hour }},
		{"quotas.max_lifetime", func(c *Config) { c.Quotas.MaxLifetime = time.Minute }},
		{"quotas.auth_failure_window", func(c *Config) { c.Quotas.AuthFailureWindow = 0 }},
	} {
		cfg := DefaultConfig()
		tc.mut(&cfg)
		err := cfg.Validate()
		var keys []string
		for _, e := range unjoin(err) {
			var ce *cfgerr.Error
			if !errors.As(e, &ce) {
				t.Errorf("%s: %v is not a *cfgerr.Error", tc.key, e)
				continue
			}
			keys = append(keys, ce.Key)
			if ce.Fix == "" {
				t.Errorf("%s: no fix offered", ce.Key)
			}
		}
		if !slices.Equal(keys, []string{tc.key}) {
			t.Errorf("want an error at %s, got %v", tc.key, err)
		}
	}
}

// A short secret is reported without being echoed.
func TestValidateHidesSecret(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Secrets = []string{"hunter2"}
	if err := cfg.Validate(); err == nil || strings.Contains(err.Error(), "hunter2") {
		t.Errorf("got %v", err)
	}
}

func unjoin(err error) []error {
	if err == nil {
		return nil
	}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	return []error{err}
}

// The YAML keys and duration syntax main's loader will use.
func TestYAML(t *testing.T) {
	cfg := DefaultConfig()
	src := `
realm: example.org
secrets: [first-secret-0123456789, second-secret-0123456789]
credential_ttl: 6h
max_ttl: 12h
tls: {listen: ":443", cert: /etc/icebox/cert.pem, key: /etc/icebox/key.pem}
relay: {address: 10.0.0.5, ports: "40000-40999"}
peers: {allow: [192.168.1.0/24], deny: [198.51.100.0/24]}
quotas: {per_user: 3, per_ip: 5, total: 50, max_lifetime: 30m, auth_failures: 4, auth_failure_window: 2m}
`
	if err := yaml.Unmarshal([]byte(src), &cfg); err != nil {
		t.Fatal(err)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	if !cfg.Enabled || cfg.CredentialTTL != 6*time.Hour || cfg.Quotas.MaxLifetime != 30*time.Minute ||
		cfg.Relay.Ports != "40000-40999" || cfg.TLS.Listen != ":443" || len(cfg.Secrets) != 2 || cfg.Quotas.AuthFailures != 4 {
		t.Errorf("decoded %+v", cfg)
	}
}
