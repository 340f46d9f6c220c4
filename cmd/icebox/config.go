package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"icebox/internal/cfgerr"
	"icebox/internal/cluster"
	"icebox/internal/dnsname"
	"icebox/internal/publicip"
	"icebox/signal"
	"icebox/stunsrv"
	"icebox/turnsrv"
)

//go:generate go test -run ^TestConfigYAMLIsGenerated$ -update .

// Config is the whole config file: one section per part of icebox, each
// the part's own Config, so a part's options live next to its code.
type Config struct {
	// The IPv4 address clients reach this box at; relay addresses and ICE
	// URLs carry it. Set it on a VM behind 1:1 NAT (most clouds) to the
	// public address, or to "auto": the host's public address if it has
	// one, else what the public_ip_stun servers see. Default "": the
	// relay bind address (turn.relay.address) if it is not 0.0.0.0, else
	// the host's first public, then first private, IPv4 address, else
	// 127.0.0.1.
	PublicIP string `yaml:"public_ip"`
	// STUN servers (host:port) that public_ip: auto may ask for this box's
	// public address when no interface has one. Default none: icebox asks
	// nobody the operator did not name.
	PublicIPSTUN []string `yaml:"public_ip_stun"`
	// Where icebox keeps what it generates itself (the TURN secret, when
	// none is configured; ACME certificates). Default "": $STATE_DIRECTORY
	// under systemd, else /var/lib/icebox if writable, else
	// ~/.local/state/icebox.
	StateDir string `yaml:"state_dir"`

	// What icebox logs, and in which form.
	Log LogConfig `yaml:"log"`
	// The STUN responder: Binding requests on UDP and TCP. The TURN relay
	// shares its sockets.
	STUN stunsrv.Config `yaml:"stun"`
	// The TURN relay (RFC 8656) with time-limited credentials (TURN REST
	// API).
	TURN turnsrv.Config `yaml:"turn"`
	// The WebSocket signaling relay (/connect) for the talk's app and the
	// web pages, plus /healthz. See README.md for the protocol.
	Signal SignalConfig `yaml:"signal"`
	// Several icebox nodes as one service (README, "Many nodes"): pairings
	// span nodes over NATS (core publish/subscribe, an existing NATS server
	// or cluster; icebox does not embed one). Off by default: one node
	// keeps its pairings in process, opens no port and talks to nobody.
	// Changes take effect after a restart: a reload logs each changed
	// option with "restart needed" and keeps the running ones.
	Cluster cluster.Config `yaml:"cluster"`
	// The operator's own endpoints: Prometheus /metrics, /healthz, /readyz
	// and /debug/pprof/.
	Admin AdminConfig `yaml:"admin"`
	// The certificate every TLS listener shares (signaling, TURN over TLS,
	// tls.listen) unless it names files of its own, and one TLS port for
	// networks that pass nothing but 443.
	TLS TLSConfig `yaml:"tls"`

	// secretCredential names the systemd credential that turn.secret_file
	// was filled in from, for logs; "" when the config set it.
	secretCredential string
}

// LogConfig is the log section.
type LogConfig struct {
	// debug, info, warn or error. debug logs every refused request; SDPs
	// and candidates (which carry addresses) appear at debug only.
	// Default info.
	Level string `yaml:"level"`
	// text or json. Under systemd, timestamps are left to journald.
	// Default text.
	Format string `yaml:"format"`
}

// SignalConfig is the signal section: signaling's own settings, and
// ice_host and web, which only main reads (it builds the ICE URLs and
// mounts the pages).
type SignalConfig struct {
	signal.Config `yaml:",inline"`
	// A DNS name to put in ICE URLs instead of public_ip: needed for
	// turns: (the certificate names a host), nicer in apps. Default "":
	// the first tls.acme.domains name with ACME, else public_ip.
	ICEHost string `yaml:"ice_host"`
	// Serve the call page at / and the diagnostics page at /check on the
	// same listener, so the first run shows something; turn it off where
	// only apps connect. Default true.
	Web bool `yaml:"web"`
}

// DefaultConfig is what icebox runs with when no config file is given.
func DefaultConfig() Config {
	return Config{
		Log:     LogConfig{Level: "info", Format: "text"},
		STUN:    stunsrv.DefaultConfig(),
		TURN:    turnsrv.DefaultConfig(),
		Signal:  SignalConfig{Config: signal.DefaultConfig(), Web: true},
		Cluster: cluster.DefaultConfig(),
		Admin:   defaultAdminConfig(),
		TLS:     defaultTLSConfig(),
	}
}

// Validate checks every section and returns all mistakes at once.
func (c *Config) Validate() error {
	var errs []error
	if err := publicip.Check(c.PublicIP); err != nil {
		errs = append(errs, cfgerr.New("public_ip", err.Error(), `public_ip: 203.0.113.10 (the VM's public address), or "auto"`))
	}
	for i, s := range c.PublicIPSTUN {
		if _, _, err := net.SplitHostPort(s); err != nil {
			errs = append(errs, cfgerr.New(fmt.Sprintf("public_ip_stun[%d]", i), err.Error(), `host:port, e.g. "stun.example.net:3478"`))
		}
	}
	if !slices.Contains([]string{"debug", "info", "warn", "error"}, c.Log.Level) {
		errs = append(errs, cfgerr.New("log.level", fmt.Sprintf("unknown level %q", c.Log.Level), "one of debug, info, warn, error"))
	}
	if !slices.Contains([]string{"text", "json"}, c.Log.Format) {
		errs = append(errs, cfgerr.New("log.format", fmt.Sprintf("unknown format %q", c.Log.Format), "text or json"))
	}
	errs = append(errs, cfgerr.In("stun", c.STUN.Validate()))
	errs = append(errs, cfgerr.In("turn", c.TURN.Validate()))
	errs = append(errs, cfgerr.In("signal", c.Signal.Validate()))
	if h := c.Signal.ICEHost; h != "" && !dnsname.Valid(strings.TrimSuffix(h, ".")) {
		errs = append(errs, cfgerr.New("signal.ice_host", fmt.Sprintf("%q is not a DNS name", h), `write a bare name such as "turn.example.com", without scheme or port`))
	}
	errs = append(errs, cfgerr.In("cluster", c.Cluster.Validate()))
	if c.Cluster.Enabled && !c.Signal.Enabled {
		errs = append(errs, cfgerr.New("cluster.enabled", "the cluster links signaling pairings, and signaling is off", "signal: {enabled: true}, or cluster: {enabled: false}"))
	}
	errs = append(errs, cfgerr.In("admin", c.Admin.validate()))
	errs = append(errs, cfgerr.In("tls", c.TLS.validate()))
	return errors.Join(errs...)
}

// LoadConfig reads path over the defaults and validates the result. Every
// mistake comes back as "path:line: key: problem (fix: ...)".
// Paths in systemd's credentials directory and the TURN secret the unit
// passes as a credential are resolved here, before validation
// (resolveAndValidate).
func LoadConfig(path string) (Config, error) {
	if path == "" {
		cfg := DefaultConfig()
		return cfg, resolveAndValidate(&cfg, os.Getenv)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return DefaultConfig(), fmt.Errorf("config: %w", err)
	}
	return parseConfig(path, data, os.Getenv)
}

// parseConfig is LoadConfig for a file already read; path only names it
// in errors, and getenv finds systemd's credentials directory.
//
// The file is parsed into a yaml.Node tree first and checked against the
// Config structs' yaml tags (checker), so unknown options and values of
// the wrong type are reported with the node's own line; only then is it
// decoded. yaml.v3 decodes around values of the wrong type (those keep
// their defaults), so Validate still sees the rest of the file: every
// mistake is reported in one go.
func parseConfig(path string, data []byte, getenv func(string) string) (Config, error) {
	cfg := DefaultConfig()
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err != nil {
		// A syntax error: yaml.v3's message names the line.
		return cfg, fmt.Errorf("%s: %s (fix: check indentation and quoting)", path, strings.TrimPrefix(err.Error(), "yaml: "))
	}
	doc := &root
	if doc.Kind == yaml.DocumentNode && len(doc.Content) > 0 {
		doc = doc.Content[0]
	}
	var errs []error
	if doc.Kind != 0 && !isNull(doc) { // an empty file means the defaults
		c := &checker{path: path, budget: maxCheckedNodes}
		errs = c.node(doc, reflect.TypeFor[Config](), "", 0)
		if err := decodeConfig(data, &cfg); err != nil && len(errs) == 0 {
			// checker has already located every mistake yaml.v3 reports;
			// should it ever miss one, yaml.v3's own words still stop start-up.
			errs = append(errs, fmt.Errorf("%s: %w", path, err))
		}
	}
	if err := resolveAndValidate(&cfg, getenv); err != nil {
		errs = append(errs, locate(path, &root, err))
	}
	return cfg, errors.Join(errs...)
}

// decodeConfig decodes data over cfg. yaml.v3 panics on some mappings
// whose keys are lists (a merge key among them); checker reports those
// keys, and the panic must not take start-up or a reload down with it.
func decodeConfig(data []byte, cfg *Config) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("yaml.v3 cannot decode this file: %v", r)
		}
	}()
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(cfg); err != nil && !errors.Is(err, io.EOF) {
		return err
	}
	return nil
}

// Bounds of the check: the config is four deep and a few hundred nodes,
// and aliases and merge keys must not make a small file a long walk (what
// the check skips, yaml.v3's decoder still refuses).
const (
	maxConfigDepth  = 16
	maxCheckedNodes = 100_000
)

// checker walks a parsed config file against the Config structs.
type checker struct {
	path   string // the file, for errors
	budget int    // nodes left to visit
}

// node reports every option under n that the Config structs do not have
// and every value yaml.v3 cannot decode into its field's type, as
// "path:line: key: problem (fix: ...)". key is n's dotted path.
func (c *checker) node(n *yaml.Node, t reflect.Type, key string, depth int) []error {
	c.budget--
	if c.budget < 0 || depth > maxConfigDepth {
		return nil
	}
	line := n.Line // where the value is used, even through an alias
	if n.Kind == yaml.AliasNode {
		if n.Alias == nil {
			return nil
		}
		n = n.Alias
	}
	if isNull(n) {
		return nil // null leaves the default, as yaml.v3 does
	}
	wrong := func() []error {
		fix := typeHint(t)
		if key == "" {
			fix = "options as in config.yaml, one \"key: value\" per line"
		}
		return []error{fmt.Errorf("%s:%d: %s: cannot use %s here (fix: %s)", c.path, line, describeKey(key), describeValue(n, key), fix)}
	}
	switch {
	case t == reflect.TypeFor[time.Duration]() || t.Kind() != reflect.Struct && t.Kind() != reflect.Slice:
		if n.Kind != yaml.ScalarNode || n.Decode(reflect.New(t).Interface()) != nil {
			return wrong()
		}
		return nil
	case t.Kind() == reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			return wrong()
		}
		var errs []error
		for i, item := range n.Content {
			errs = append(errs, c.node(item, t.Elem(), fmt.Sprintf("%s[%d]", key, i), depth+1)...)
		}
		return errs
	}
	if n.Kind != yaml.MappingNode {
		return wrong()
	}
	var errs []error
	seen := map[string]int{}
	for j := 0; j+1 < len(n.Content); j += 2 {
		k, v := n.Content[j], n.Content[j+1]
		if k.ShortTag() == "!!merge" { // "<<: *defaults" merges a mapping in
			errs = append(errs, c.merge(v, t, key, depth+1)...)
			continue
		}
		if k.Kind != yaml.ScalarNode {
			errs = append(errs, fmt.Errorf("%s:%d: %s: %s as an option name (fix: options here are %s)", c.path, k.Line, describeKey(key), describeValue(k, ""), strings.Join(yamlKeys(t), ", ")))
			continue
		}
		full := k.Value
		if key != "" {
			full = key + "." + k.Value
		}
		if first, ok := seen[k.Value]; ok {
			errs = append(errs, fmt.Errorf("%s:%d: %s: set twice, first on line %d (fix: keep one)", c.path, k.Line, full, first))
			continue
		}
		seen[k.Value] = k.Line
		f, ok := fieldByTag(t, k.Value)
		if !ok {
			errs = append(errs, fmt.Errorf("%s:%d: %s: unknown option (fix: options here are %s)", c.path, k.Line, describeKey(full), strings.Join(yamlKeys(t), ", ")))
			continue
		}
		errs = append(errs, c.node(v, f.Type, full, depth+1)...)
	}
	return errs
}

// merge checks what a merge key brings in: a mapping, an alias of one, or
// a list of them.
func (c *checker) merge(v *yaml.Node, t reflect.Type, key string, depth int) []error {
	if v.Kind == yaml.AliasNode && v.Alias != nil {
		v = v.Alias
	}
	if v.Kind != yaml.SequenceNode {
		return c.node(v, t, key, depth)
	}
	var errs []error
	for _, item := range v.Content {
		errs = append(errs, c.node(item, t, key, depth+1)...)
	}
	return errs
}

func isNull(n *yaml.Node) bool {
	return n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null"
}

// describeKey names an option in an error; "" is the file itself.
func describeKey(key string) string {
	if key == "" {
		return "the file"
	}
	return key
}

// describeValue quotes a misplaced value for an error, unless it may be a
// secret: a misplaced secret is still a secret.
func describeValue(n *yaml.Node, key string) string {
	switch {
	case secretKey(key):
		return "this value (not shown: it may be a secret)"
	case n.Kind == yaml.MappingNode:
		return "a section"
	case n.Kind == yaml.SequenceNode:
		return "a list"
	}
	v := n.Value
	if len(v) > 40 {
		v = v[:40] + "..."
	}
	return "`" + v + "`"
}

// locate adds file:line to every cfgerr.Error in err.
func locate(path string, root *yaml.Node, err error) error {
	all := cfgerr.Flatten(err)
	out := make([]error, 0, len(all))
	for _, e := range all {
		var ce *cfgerr.Error
		if errors.As(e, &ce) {
			if n := nodeAt(root, ce.Key); n != nil {
				out = append(out, fmt.Errorf("%s:%d: %w", path, n.Line, ce))
				continue
			}
			out = append(out, fmt.Errorf("%s: %w", path, ce))
			continue
		}
		out = append(out, fmt.Errorf("%s: %w", path, e))
	}
	return errors.Join(out...)
}

// nodeAt finds the value node for a key path like "stun.listen[1]", or
// the closest enclosing node present in the file.
func nodeAt(root *yaml.Node, key string) *yaml.Node {
	n := root
	if n.Kind == yaml.DocumentNode && len(n.Content) > 0 {
		n = n.Content[0]
	}
	found := n
	for _, part := range splitKey(key) {
		var next *yaml.Node
		if i, err := strconv.Atoi(part); err == nil && n.Kind == yaml.SequenceNode {
			if i < len(n.Content) {
				next = n.Content[i]
			}
		} else if n.Kind == yaml.MappingNode {
			for j := 0; j+1 < len(n.Content); j += 2 {
				if n.Content[j].Value == part {
					next = n.Content[j+1]
				}
			}
		}
		if next == nil {
			break
		}
		n, found = next, next
	}
	if found == root || found.Line == 0 {
		return nil
	}
	return found
}

func splitKey(key string) []string {
	key = strings.ReplaceAll(key, "[", ".")
	key = strings.ReplaceAll(key, "]", "")
	if key == "" {
		return nil
	}
	return strings.Split(key, ".")
}

// yamlKeys lists a struct's yaml keys, those of inline fields included.
func yamlKeys(t reflect.Type) []string {
	var keys []string
	for f := range t.Fields() {
		name, opts, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		switch {
		case opts == "inline":
			keys = append(keys, yamlKeys(f.Type)...)
		case name != "" && name != "-":
			keys = append(keys, name)
		}
	}
	return keys
}

func fieldByTag(t reflect.Type, tag string) (reflect.StructField, bool) {
	if t.Kind() != reflect.Struct {
		return reflect.StructField{}, false
	}
	for f := range t.Fields() {
		name, opts, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if name == tag {
			return f, true
		}
		if opts == "inline" {
			if inner, ok := fieldByTag(f.Type, tag); ok {
				return inner, true
			}
		}
	}
	return reflect.StructField{}, false
}

// secretKey is true for options whose values must not reach a log or a
// terminal: a misplaced secret is still a secret.
func secretKey(key string) bool {
	k := strings.ToLower(key)
	return strings.Contains(k, "secret") || strings.Contains(k, "key") || strings.Contains(k, "token")
}

// typeHint says what a value of type t looks like.
func typeHint(t reflect.Type) string {
	switch {
	case t == reflect.TypeFor[time.Duration]():
		return `a duration such as "30s", "10m" or "12h"`
	case t.Kind() == reflect.Bool:
		return "true or false"
	case t.Kind() >= reflect.Int && t.Kind() <= reflect.Uint64:
		return "a whole number"
	case t.Kind() == reflect.Float32 || t.Kind() == reflect.Float64:
		return "a number"
	case t.Kind() == reflect.Slice:
		return "a list, e.g. [\"a\", \"b\"] or one item per line starting with \"- \""
	case t.Kind() == reflect.String:
		return "a string; quote it"
	case t.Kind() == reflect.Struct:
		return "a section of options, indented below the key, as in config.yaml"
	}
	return "see config.yaml for this option's form"
}

// iceName is the DNS name ICE URLs carry instead of the public IP, if any:
// signal.ice_host, else the ACME certificate's first name, which turns:
// needs.
func (c *Config) iceName() string {
	if c.Signal.ICEHost == "" && c.TLS.ACME.On() {
		return c.TLS.ACME.Domains[0]
	}
	return c.Signal.ICEHost
}

// signalTLS reports whether signaling speaks TLS: with signal.tls's own
// files, else the tls section's certificate.
func (c *Config) signalTLS() bool { return c.Signal.TLS.On() || c.TLS.On() }

// turnTLS reports whether TURN over TLS has a certificate: turn.tls's own
// files, else the tls section's.
func (c *Config) turnTLS() bool { return c.TURN.TLS.Cert != "" || c.TLS.On() }

// publicIP is what the address clients are told depends on.
func (c *Config) publicIP() publicip.Config {
	return publicip.Config{PublicIP: c.PublicIP, STUNServers: c.PublicIPSTUN, RelayAddress: c.TURN.Relay.Address}
}
