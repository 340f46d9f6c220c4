package cluster

import (
	"errors"
	"fmt"
	"net/url"
	"reflect"
	"regexp"
	"strings"
	"time"

	"icebox/internal/cfgerr"
)

// Config is the cluster section. Off by default: one node keeps its rooms
// in process, opens no port and talks to nobody.
type Config struct {
	// Enabled links this node's pairings with the other nodes' over NATS.
	// Default false.
	Enabled bool `yaml:"enabled"`
	// URLs of the NATS servers, e.g. "nats://nats1.example.net:4222" or
	// "tls://...". Default none; required when enabled.
	URLs []string `yaml:"urls"`
	// Node names this node to the others; unique in the cluster. Default
	// "": the host name.
	Node string `yaml:"node"`
	// Secret is shared by every node: each message between nodes carries
	// an HMAC-SHA256 under it, and a message without a valid one is
	// dropped, so nothing crosses nodes unauthenticated even on a NATS
	// account shared with other software. 32+ characters. Default none;
	// required when enabled.
	Secret string `yaml:"secret"`
	// Subject prefixes every NATS subject icebox uses, so that several
	// icebox clusters can share one NATS. Default "icebox".
	Subject string `yaml:"subject"`
	// NATS authentication, at most one of: Token; User and Password;
	// Creds (a .creds file with a JWT and NKey seed). Default none.
	Token    string `yaml:"token"`
	User     string `yaml:"user"`
	Password string `yaml:"password"`
	Creds    string `yaml:"creds"`
	// TLS to NATS: CA verifies the servers (default "": the system's
	// roots, used only with tls:// URLs); Cert and Key give a client
	// certificate (default none).
	TLS TLSConfig `yaml:"tls"`
	// Heartbeat is how often this node tells the others it is alive.
	// Default 1s.
	Heartbeat time.Duration `yaml:"heartbeat"`
	// NodeTimeout: a node silent this long is taken for dead and its
	// members leave every pairing. Default 3s.
	NodeTimeout time.Duration `yaml:"node_timeout"`
	// ClaimTimeout bounds how long a join waits for the other nodes to
	// say who is in its pairing; a node that does not answer in time gets
	// the join refused (4015). Default 1s.
	ClaimTimeout time.Duration `yaml:"claim_timeout"`
}

// TLSConfig is the cluster.tls section.
type TLSConfig struct {
	CA   string `yaml:"ca"`
	Cert string `yaml:"cert"`
	Key  string `yaml:"key"`
}

// DefaultConfig is the cluster section when the config file has none.
func DefaultConfig() Config {
	return Config{
		Subject:      "icebox",
		Heartbeat:    time.Second,
		NodeTimeout:  3 * time.Second,
		ClaimTimeout: time.Second,
	}
}

// minSecret is the shortest shared secret accepted.
const minSecret = 32

var subjectRe = regexp.MustCompile(`^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$`)

// Validate returns every mistake, keyed by option.
func (c *Config) Validate() error {
	if !c.Enabled {
		return nil
	}
	var errs []error
	add := func(key, problem, fix string) { errs = append(errs, cfgerr.New(key, problem, fix)) }
	if len(c.URLs) == 0 {
		add("urls", "enabled without a NATS server", `urls: ["nats://nats.example.net:4222"]`)
	}
	for i, u := range c.URLs {
		p, err := url.Parse(u)
		if err != nil || p.Host == "" || !strings.Contains("nats tls", p.Scheme) || p.Scheme == "" {
			add(fmt.Sprintf("urls[%d]", i), "not a NATS URL", `"nats://host:4222" or "tls://host:4222"`)
		}
	}
	if len(c.Secret) < minSecret {
		// Never echo the secret, not even its length.
		add("secret", fmt.Sprintf("shorter than %d characters", minSecret), "the same random string on every node, e.g. the output of `openssl rand -hex 32`")
	}
	if !subjectRe.MatchString(c.Subject) {
		add("subject", fmt.Sprintf("%q is not a NATS subject prefix", c.Subject), `letters, digits, "-", "_" in dot-separated tokens, e.g. "icebox"`)
	}
	if strings.ContainsAny(c.Node, " .*>\t\n") {
		add("node", "a node name has no spaces, dots or wildcards", `node: "node-1"`)
	}
	auth := 0
	for _, set := range []bool{c.Token != "", c.User != "" || c.Password != "", c.Creds != ""} {
		if set {
			auth++
		}
	}
	if auth > 1 {
		add("token", "more than one NATS authentication given", "one of token, user and password, or creds")
	}
	if (c.TLS.Cert == "") != (c.TLS.Key == "") {
		add("tls", "cert and key go together", "set both tls.cert and tls.key, or neither")
	}
	if c.Heartbeat <= 0 || c.Heartbeat > time.Minute {
		add("heartbeat", fmt.Sprintf("%v is out of range", c.Heartbeat), "between 100ms and 1m, e.g. 1s")
	}
	if c.NodeTimeout < 2*c.Heartbeat {
		add("node_timeout", "a node could be taken for dead between two heartbeats", "at least twice heartbeat, e.g. 3s")
	}
	if c.ClaimTimeout <= 0 || c.ClaimTimeout > 30*time.Second {
		add("claim_timeout", fmt.Sprintf("%v is out of range", c.ClaimTimeout), "between 1ms and 30s, e.g. 1s")
	}
	return errors.Join(errs...)
}

// Changed lists the options, by their key in the cluster section (e.g.
// "node", "tls.ca"), whose values differ between c and next; nothing when
// both are off. It never returns values: some are secrets.
func (c Config) Changed(next Config) []string {
	if !c.Enabled && !next.Enabled {
		return nil
	}
	return changedKeys("", reflect.ValueOf(c), reflect.ValueOf(next))
}

func changedKeys(prefix string, a, b reflect.Value) []string {
	var keys []string
	for i := range a.NumField() {
		f := a.Type().Field(i)
		key := prefix + strings.Split(f.Tag.Get("yaml"), ",")[0]
		if f.Type.Kind() == reflect.Struct {
			keys = append(keys, changedKeys(key+".", a.Field(i), b.Field(i))...)
		} else if !reflect.DeepEqual(a.Field(i).Interface(), b.Field(i).Interface()) {
			keys = append(keys, key)
		}
	}
	return keys
}
