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
	// Link this node's pairings with the other nodes' over NATS.
	// Default false.
	Enabled bool `yaml:"enabled"`
	// NATS servers, nats:// or tls://, e.g. "nats://nats1.example.net:4222";
	// required when enabled. Default none.
	URLs []string `yaml:"urls"`
	// This node's name, unique in the cluster. Default "": the host name.
	Node string `yaml:"node"`
	// The same random string (32+ characters) on every node: every message
	// between nodes carries an HMAC-SHA256 under it, and a message without
	// a valid one is dropped, so nothing crosses nodes unauthenticated,
	// nor twice, even on a NATS account shared with other software. Required when enabled;
	// e.g. `openssl rand -hex 32`. Default none.
	Secret string `yaml:"secret"`
	// Prefix of every NATS subject icebox uses, so that several icebox
	// clusters can share one NATS. Default icebox.
	Subject string `yaml:"subject"`
	// NATS authentication is at most one of token, user and password, or
	// creds. A token. Default none.
	Token string `yaml:"token"`
	// A NATS user name, with password. Default none.
	User string `yaml:"user"`
	// The NATS user's password. Default none.
	Password string `yaml:"password"`
	// A .creds file (JWT and NKey seed). Default none.
	Creds string `yaml:"creds"`
	// TLS to NATS (with tls:// URLs).
	TLS TLSConfig `yaml:"tls"`
	// How often this node tells the others it is alive. Default 1s.
	Heartbeat time.Duration `yaml:"heartbeat"`
	// A node silent this long is taken for dead and its members leave
	// every pairing (a killed node's members are gone within node_timeout
	// plus one heartbeat). Messages sent longer ago, or later, than this
	// by the receiving node's clock are dropped as replays: keep the
	// nodes' clocks in sync (NTP). Default 3s.
	NodeTimeout time.Duration `yaml:"node_timeout"`
	// How long a join waits for every live node to say who is in its
	// pairing; a node that does not answer in time gets the join refused
	// (4015). Also the longest a write to NATS may block (on a congested
	// link) before it is given up. Default 1s.
	ClaimTimeout time.Duration `yaml:"claim_timeout"`
}

// TLSConfig is the cluster.tls section.
type TLSConfig struct {
	// A PEM file of CAs to verify the NATS servers. Default "": the
	// system's roots.
	CA string `yaml:"ca"`
	// A client certificate (PEM) for NATS. Default none.
	Cert string `yaml:"cert"`
	// The client certificate's key (PEM). Default none.
	Key string `yaml:"key"`
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
		if err != nil || p.Host == "" || (p.Scheme != "nats" && p.Scheme != "tls") {
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
	if len(c.Node) > maxName {
		// Messages carry it behind a one-byte length.
		add("node", fmt.Sprintf("longer than %d bytes", maxName), `a short name, e.g. node: "node-1"`)
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
	if c.Heartbeat < 100*time.Millisecond || c.Heartbeat > time.Minute {
		add("heartbeat", fmt.Sprintf("%v is out of range", c.Heartbeat), "between 100ms and 1m, e.g. 1s")
	}
	if c.NodeTimeout < 2*c.Heartbeat {
		add("node_timeout", "a node could be taken for dead between two heartbeats", "at least twice heartbeat, e.g. 3s")
	}
	if c.ClaimTimeout < time.Millisecond || c.ClaimTimeout > 30*time.Second {
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
