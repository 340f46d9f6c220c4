package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"

	"icebox/internal/cfgerr"
	"icebox/internal/cluster"
	"icebox/signal"
	"icebox/stunsrv"
	"icebox/turnsrv"
)

// Config is the whole config file: one section per part of icebox, each
// the part's own Config, so a part's options live next to its code.
type Config struct {
	// PublicIP is the IPv4 address clients reach this box at; relay
	// addresses and ICE URLs carry it. "auto" finds it at start: the host's
	// public address, else what the public_ip_stun servers see. Default "":
	// the relay bind address, else the host's first public, then private,
	// interface address.
	PublicIP string `yaml:"public_ip"`
	// PublicIPSTUN lists STUN servers (host:port) that public_ip: auto may
	// ask. Default none: icebox asks nobody the operator did not name.
	PublicIPSTUN []string `yaml:"public_ip_stun"`
	// StateDir keeps what icebox generates itself (the TURN secret).
	// Default "": $STATE_DIRECTORY under systemd, else /var/lib/icebox if
	// writable, else ~/.local/state/icebox.
	StateDir string `yaml:"state_dir"`

	Log     LogConfig      `yaml:"log"`
	STUN    stunsrv.Config `yaml:"stun"`
	TURN    turnsrv.Config `yaml:"turn"`
	Signal  SignalConfig   `yaml:"signal"`
	Cluster cluster.Config `yaml:"cluster"`
	Admin   AdminConfig    `yaml:"admin"`
	TLS     TLSConfig      `yaml:"tls"`

	// secretCredential names the systemd credential that turn.secret_file
	// was filled in from, for logs; "" when the config set it.
	secretCredential string
}

// LogConfig is the log section.
type LogConfig struct {
	// Level is debug, info, warn or error. Default info.
	Level string `yaml:"level"`
	// Format is text or json. Default text.
	Format string `yaml:"format"`
}

// SignalConfig is the signal section: signaling's own settings and
// ice_host, which only main reads (it builds the ICE URLs).
type SignalConfig struct {
	signal.Config `yaml:",inline"`
	// ICEHost is the DNS name put in ICE URLs instead of the public IP:
	// turns: needs the certificate's name. Default "".
	ICEHost string `yaml:"ice_host"`
}

// DefaultConfig is what icebox runs with when no config file is given.
func DefaultConfig() Config {
	return Config{
		Log:     LogConfig{Level: "info", Format: "text"},
		STUN:    stunsrv.DefaultConfig(),
		TURN:    turnsrv.DefaultConfig(),
		Signal:  SignalConfig{Config: signal.DefaultConfig()},
		Cluster: cluster.DefaultConfig(),
		Admin:   defaultAdminConfig(),
		TLS:     defaultTLSConfig(),
	}
}

// Validate checks every section and returns all mistakes at once.
func (c *Config) Validate() error {
	var errs []error
	if c.PublicIP != "" && c.PublicIP != publicIPAuto {
		if ip, err := netip.ParseAddr(c.PublicIP); err != nil || ip.IsUnspecified() || !ip.Unmap().Is4() {
			errs = append(errs, cfgerr.New("public_ip", fmt.Sprintf("%q is not an IPv4 address clients can reach", c.PublicIP), `public_ip: 203.0.113.10 (the VM's public address), or "auto"`))
		}
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
	if h := c.Signal.ICEHost; h != "" && !validHostname(h) {
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
// passes as a credential are resolved here (applyCredentials).
func LoadConfig(path string) (Config, error) {
	cfg := DefaultConfig()
	var err error
	if path == "" {
		err = cfg.Validate()
	} else {
		var data []byte
		if data, err = os.ReadFile(path); err != nil {
			return cfg, fmt.Errorf("config: %w", err)
		}
		cfg, err = parseConfig(path, data)
	}
	if err != nil {
		return cfg, err
	}
	if err := applyCredentials(&cfg, os.Getenv); err != nil {
		name := path
		if name == "" {
			name = "built-in defaults"
		}
		return cfg, fmt.Errorf("%s: %w", name, err)
	}
	return cfg, nil
}

// parseConfig is LoadConfig for a file already read; path only names it
// in errors.
func parseConfig(path string, data []byte) (Config, error) {
	cfg := DefaultConfig()
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err != nil {
		return cfg, fmt.Errorf("%s", locateYAMLError(path, err))
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	var errs []error
	// io.EOF: an empty file, which means the defaults.
	if err := dec.Decode(&cfg); err != nil && !errors.Is(err, io.EOF) {
		var te *yaml.TypeError
		if !errors.As(err, &te) {
			return cfg, explainDecodeError(path, &root, err)
		}
		// yaml.v3 decodes the rest of the file around values of the wrong
		// type (those keep their defaults), so the remaining options can
		// still be checked: every mistake is reported in one go.
		errs = append(errs, explainDecodeError(path, &root, err))
	}
	if err := cfg.Validate(); err != nil {
		errs = append(errs, locate(path, &root, err))
	}
	return cfg, errors.Join(errs...)
}

var (
	lineRe    = regexp.MustCompile(`^(?:yaml: )?line (\d+): (.*)$`)
	unknownRe = regexp.MustCompile(`^field (\S+) not found in type (\S+)$`)
	valueRe   = regexp.MustCompile("^cannot unmarshal !!\\w+ (.*) into ")
)

func locateYAMLError(path string, err error) string {
	if m := lineRe.FindStringSubmatch(err.Error()); m != nil {
		return fmt.Sprintf("%s:%s: %s (fix: check indentation and quoting)", path, m[1], m[2])
	}
	return fmt.Sprintf("%s: %v", path, err)
}

// explainDecodeError turns yaml.v3's "line 4: field lisen not found in type
// stunsrv.Config" into "config.yaml:4: stun.lisen: unknown option (fix: one of listen, tcp, ...)".
func explainDecodeError(path string, root *yaml.Node, err error) error {
	var te *yaml.TypeError
	if !errors.As(err, &te) {
		return fmt.Errorf("%s", locateYAMLError(path, err))
	}
	var out []error
	for _, msg := range te.Errors {
		m := lineRe.FindStringSubmatch(msg)
		if m == nil {
			out = append(out, fmt.Errorf("%s: %s", path, msg))
			continue
		}
		line, _ := strconv.Atoi(m[1])
		key := keyAtLine(root, line)
		if u := unknownRe.FindStringSubmatch(m[2]); u != nil {
			parent := key[:max(0, strings.LastIndex(key, "."))]
			known := optionsAt(parent)
			fix := "remove it"
			if len(known) > 0 {
				fix = "options here are " + strings.Join(known, ", ")
			}
			out = append(out, fmt.Errorf("%s:%d: %s: unknown option (fix: %s)", path, line, key, fix))
			continue
		}
		problem := m[2]
		if v := valueRe.FindStringSubmatch(problem); v != nil {
			value := v[1]
			if secretKey(key) {
				value = "this value (not shown: it may be a secret)"
			}
			problem = "cannot use " + value + " here"
		}
		out = append(out, fmt.Errorf("%s:%d: %s: %s (fix: %s)", path, line, key, problem, typeHint(key)))
	}
	return errors.Join(out...)
}

// locate adds file:line to every cfgerr.Error in err.
func locate(path string, root *yaml.Node, err error) error {
	var all []error
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		all = flatten(j.Unwrap())
	} else {
		all = []error{err}
	}
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

func flatten(errs []error) []error {
	var out []error
	for _, e := range errs {
		if j, ok := e.(interface{ Unwrap() []error }); ok {
			out = append(out, flatten(j.Unwrap())...)
		} else if e != nil {
			out = append(out, e)
		}
	}
	return out
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

// keyAtLine names the option written on a line, as a dotted path.
func keyAtLine(root *yaml.Node, line int) string {
	var walk func(n *yaml.Node, prefix string) string
	walk = func(n *yaml.Node, prefix string) string {
		switch n.Kind {
		case yaml.DocumentNode:
			for _, c := range n.Content {
				if k := walk(c, prefix); k != "" {
					return k
				}
			}
		case yaml.MappingNode:
			for j := 0; j+1 < len(n.Content); j += 2 {
				k, v := n.Content[j], n.Content[j+1]
				p := k.Value
				if prefix != "" {
					p = prefix + "." + k.Value
				}
				if k.Line == line {
					return p
				}
				if r := walk(v, p); r != "" {
					return r
				}
			}
		case yaml.SequenceNode:
			for i, c := range n.Content {
				p := fmt.Sprintf("%s[%d]", prefix, i)
				if c.Line == line && c.Kind == yaml.ScalarNode {
					return p
				}
				if r := walk(c, p); r != "" {
					return r
				}
			}
		}
		return ""
	}
	return walk(root, "")
}

// optionsAt lists the yaml keys of the Config struct at a dotted path.
func optionsAt(key string) []string {
	t := reflect.TypeOf(Config{})
	for _, part := range splitKey(key) {
		if _, err := strconv.Atoi(part); err == nil {
			continue
		}
		f, ok := fieldByTag(t, part)
		if !ok {
			return nil
		}
		t = f.Type
		for t.Kind() == reflect.Slice || t.Kind() == reflect.Pointer {
			t = t.Elem()
		}
	}
	if t.Kind() != reflect.Struct {
		return nil
	}
	return yamlKeys(t)
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

// typeHint says what a value of the option's type looks like.
func typeHint(key string) string {
	t := reflect.TypeOf(Config{})
	parts := splitKey(key)
	for _, part := range parts {
		if _, err := strconv.Atoi(part); err == nil {
			if t.Kind() == reflect.Slice {
				t = t.Elem()
			}
			continue
		}
		f, ok := fieldByTag(t, part)
		if !ok {
			return "see config.yaml for this option's form"
		}
		t = f.Type
	}
	switch {
	case t.String() == "time.Duration":
		return `a duration such as "30s", "10m" or "12h"`
	case t.Kind() == reflect.Bool:
		return "true or false"
	case t.Kind() >= reflect.Int && t.Kind() <= reflect.Uint64:
		return "a whole number"
	case t.Kind() == reflect.Slice:
		return "a list, e.g. [\"a\", \"b\"] or one item per line starting with \"- \""
	case t.Kind() == reflect.String:
		return "a string; quote it"
	case t.Kind() == reflect.Struct:
		return "a section of options, indented below the key"
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

// validHostname is whether h is a DNS name (a trailing dot allowed).
func validHostname(h string) bool {
	if len(h) > 253 || strings.HasPrefix(h, ".") || strings.HasSuffix(h, "..") {
		return false
	}
	for _, label := range strings.Split(strings.TrimSuffix(h, "."), ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for _, r := range label {
			if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-') {
				return false
			}
		}
	}
	return true
}
