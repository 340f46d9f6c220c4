package main

import (
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

// The documented example must be exactly the built-in defaults, so that
// the file a user copies and icebox without a file behave alike.
func TestExampleConfigIsTheDefaults(t *testing.T) {
	cfg, err := LoadConfig("../../config.yaml")
	if err != nil {
		t.Fatal(err)
	}
	// Compared as YAML, where an empty list and a missing one are alike.
	got, _ := yaml.Marshal(cfg)
	want, _ := yaml.Marshal(DefaultConfig())
	if string(got) != string(want) {
		t.Errorf("config.yaml differs from DefaultConfig():\n got %s\nwant %s", got, want)
	}
}

// Every option in the Config structs must appear in config.yaml, as a key
// of its own (config.yaml is generated; this checks the generator).
func TestExampleConfigDocumentsEveryOption(t *testing.T) {
	data, err := os.ReadFile("../../config.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err != nil {
		t.Fatal(err)
	}
	var missing []string
	for _, o := range configOptions(t) {
		if !hasKey(&root, o.Path) {
			missing = append(missing, o.Path)
		}
	}
	if len(missing) > 0 {
		t.Errorf("config.yaml does not document: %s", strings.Join(missing, ", "))
	}
}

// hasKey reports whether the dotted path is written out in the file.
func hasKey(root *yaml.Node, path string) bool {
	n := root.Content[0]
	for _, part := range strings.Split(path, ".") {
		var next *yaml.Node
		for j := 0; j+1 < len(n.Content) && n.Kind == yaml.MappingNode; j += 2 {
			if n.Content[j].Value == part {
				next = n.Content[j+1]
			}
		}
		if next == nil {
			return false
		}
		n = next
	}
	return true
}

func writeConfig(t *testing.T, body string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "icebox.yaml")
	if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestConfigErrorsNameFileLineAndFix(t *testing.T) {
	for _, tc := range []struct {
		name, body string
		want       []string
	}{
		{"unknown top-level key", "public_ip: 203.0.113.1\nstnu:\n  listen: [\":3478\"]\n",
			[]string{":2: stnu: unknown option", "stun"}},
		{"unknown nested key", "stun:\n  tcp: true\n  lisen: [\":3478\"]\n",
			[]string{":3: stun.lisen: unknown option", "listen, tcp"}},
		{"wrong type", "stun:\n  sockets: many\n",
			[]string{":2: stun.sockets:", "a whole number"}},
		{"bad duration", "stun:\n  tcp_idle_timeout: 30\n",
			[]string{":2: stun.tcp_idle_timeout:", `"30s"`}},
		{"bad listen address", "stun:\n  listen:\n    - \":3478\"\n    - \"localhost:http\"\n",
			[]string{":4: stun.listen[1]:", "host:port"}},
		{"bad log level", "log:\n  level: loud\n",
			[]string{":2: log.level: unknown level \"loud\"", "debug, info, warn, error"}},
		{"bad public ip", "public_ip: my.host\n",
			[]string{":1: public_ip:", "203.0.113.10"}},
		{"broken yaml", "stun:\n  listen: [\":3478\"\n",
			[]string{"icebox.yaml:"}},
		{"empty listen", "stun:\n  listen: []\n",
			[]string{":2: stun.listen: no address"}},
		{"port without certificate", "tls:\n  listen: \":443\"\n",
			[]string{":2: tls.listen: has no certificate", "acme.domains"}},
		{"acme without port", "tls:\n  acme:\n    domains: [turn.example.com]\n",
			[]string{":3: tls.acme.domains: ACME needs listen", `listen: ":443"`}},
		{"cert without key", "tls:\n  listen: \":443\"\n  cert: /etc/x.pem\n",
			[]string{":3: tls.cert: is set without key", "or neither"}},
		{"files and acme", "tls:\n  listen: \":443\"\n  cert: /c\n  key: /k\n  acme:\n    domains: [a.example.com]\n",
			[]string{":6: tls.acme.domains: certificate files and ACME are both set"}},
		{"bad domain", "tls:\n  listen: \":443\"\n  acme:\n    domains: [\"https://a.example.com\"]\n",
			[]string{":4: tls.acme.domains[0]:", "bare name"}},
		{"wildcard domain", "tls:\n  listen: \":443\"\n  acme:\n    domains: [\"*.example.com\"]\n",
			[]string{":4: tls.acme.domains[0]:", "wildcard", "tls.cert and tls.key"}},
		{"plain http directory", "tls:\n  listen: \":443\"\n  acme:\n    domains: [a.example.com]\n    directory: http://ca.example/dir\n",
			[]string{":5: tls.acme.directory:", "https://"}},
		{"credential ttl too short", "turn:\n  credential_ttl: 30s\n",
			[]string{":2: turn.credential_ttl: 30s is too short", "fix: use 1m0s or more"}},
		{"missing ca root", "tls:\n  listen: \":443\"\n  acme:\n    domains: [a.example.com]\n    ca_root: /nonexistent/root.pem\n",
			[]string{":5: tls.acme.ca_root:", "PEM file"}},
		{"unknown option", "tls:\n  acme:\n    domain: [a.example.com]\n",
			[]string{":3: tls.acme.domain: unknown option", "domains, email, directory, ca_root"}},
		{"bad port", "tls:\n  listen: \"443\"\n  cert: /c\n  key: /k\n",
			[]string{":2: tls.listen:", `":443"`}},
		// Values of the wrong type do not hide the other mistakes: start-up
		// and a reload list them all at once.
		{"every mistake at once", "stun:\n  sockets: many\n  tcp_idle_timeout: 30\nturn:\n  max_ttl: forever\n  realm: \"\"\nlog:\n  level: loud\n",
			[]string{":2: stun.sockets:", ":3: stun.tcp_idle_timeout:", ":5: turn.max_ttl:", ":6: turn.realm: is empty", ":8: log.level: unknown level"}},
		{"option set twice", "log:\n  level: info\n  level: debug\n",
			[]string{":3: log.level: set twice, first on line 2", "keep one"}},
		{"section given a value", "turn:\n  quotas: 5\n",
			[]string{":2: turn.quotas: cannot use `5` here", "a section of options"}},
		{"value given a section", "turn:\n  realm:\n    name: x\n",
			[]string{":3: turn.realm: cannot use a section here", "a string"}},
		{"list given a value", "stun:\n  listen: \":3478\"\n",
			[]string{":2: stun.listen: cannot use `:3478` here", "a list"}},
		{"wrong type in a list", "turn:\n  peers:\n    allow:\n      - 10.0.0.0/8\n      - [a]\n",
			[]string{":5: turn.peers.allow[1]: cannot use a list here", "a string"}},
		{"not a mapping", "- a\n- b\n",
			[]string{":1: the file: cannot use a list here", "key: value"}},
		{"wrong type through a merge key", "stun:\n  <<: {tcp: maybe}\n",
			[]string{":2: stun.tcp: cannot use `maybe` here", "true or false"}},
		{"wrong type through an alias", "stun:\n  tcp: &b maybe\nturn:\n  enabled: *b\n",
			[]string{":2: stun.tcp: cannot use `maybe` here", ":4: turn.enabled: cannot use `maybe` here"}},
		{"unknown option through an alias", "stun: &s\n  tcp: true\nturn: *s\n",
			[]string{":2: turn.tcp: unknown option", "realm"}},
		// yaml.v3 panics decoding this (a list as a key beside a merge
		// key); found by FuzzParseConfig.
		{"list as a key", "stun: {<<, [1]: 0}\n",
			[]string{":1: stun: a list as an option name", "listen, tcp"}},
		{"cluster without secret", "cluster:\n  enabled: true\n  urls: [\"nats://127.0.0.1:4222\"]\n  secret: short\n",
			[]string{":4: cluster.secret: shorter than 32", "openssl rand -hex 32"}},
		{"cluster without NATS", "cluster:\n  enabled: true\n  secret: 0123456789abcdef0123456789abcdef\n",
			[]string{":2: cluster.urls: enabled without a NATS server", "nats://"}},
		{"cluster bad URL", "cluster:\n  enabled: true\n  urls:\n    - \"http://x:1\"\n  secret: 0123456789abcdef0123456789abcdef\n",
			[]string{":4: cluster.urls[0]: not a NATS URL", "tls://"}},
		{"cluster node timeout", "cluster:\n  enabled: true\n  urls: [\"nats://a:4222\"]\n  secret: 0123456789abcdef0123456789abcdef\n  node_timeout: 1s\n",
			[]string{":5: cluster.node_timeout:", "twice heartbeat"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := writeConfig(t, tc.body)
			_, err := LoadConfig(path)
			if err == nil {
				t.Fatal("config accepted")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q\nlacks %q", err, w)
				}
			}
			if !strings.HasPrefix(err.Error(), path) {
				t.Errorf("error %q does not start with the file name", err)
			}
		})
	}
}

// A secret written in the wrong form must not be echoed in the error.
func TestConfigErrorsDoNotEchoSecrets(t *testing.T) {
	for _, body := range []string{
		"turn:\n  secrets: hunter2-hunter2-hunter2\n",
		"turn:\n  secrets:\n    - [hunter2-hunter2-hunter2]\n",
		"signal:\n  ice_servers_keys: hunter2-hunter2-hunter2\n",
		"turn:\n  tls:\n    key: [hunter2-hunter2-hunter2]\n",
		"cluster:\n  enabled: true\n  urls: [\"nats://a:1\"]\n  secret: hunter2-hunter2\n",
		"cluster:\n  enabled: true\n  urls: [\"nats://a:1\"]\n  secret: [hunter2-hunter2-hunter2]\n",
	} {
		_, err := LoadConfig(writeConfig(t, body))
		if err == nil {
			t.Fatalf("accepted %q", body)
		}
		if strings.Contains(err.Error(), "hunter2") {
			t.Errorf("error echoes the secret: %v", err)
		}
	}
}

// Aliases and merge keys cannot make a small file a long check: every
// level merges the one below ten times, 10^12 mappings if expanded.
func TestConfigAliasBombIsRefusedQuickly(t *testing.T) {
	var b strings.Builder
	b.WriteString("a0: &a0 {tcp: true}\n")
	for i := 1; i <= 12; i++ {
		fmt.Fprintf(&b, "a%d: &a%d {<<: [", i, i)
		for j := range 10 {
			if j > 0 {
				b.WriteString(", ")
			}
			fmt.Fprintf(&b, "*a%d", i-1)
		}
		b.WriteString("]}\n")
	}
	b.WriteString("stun: *a12\n")
	_, err := LoadConfig(writeConfig(t, b.String()))
	if err == nil || !strings.Contains(err.Error(), ":1: a0: unknown option") {
		t.Errorf("want the unknown top-level keys reported, got %v", err)
	}
}

func TestSeveralMistakesAreReportedTogether(t *testing.T) {
	_, err := LoadConfig(writeConfig(t, "log:\n  level: loud\n  format: xml\n"))
	if err == nil || !strings.Contains(err.Error(), ":2: log.level") || !strings.Contains(err.Error(), ":3: log.format") {
		t.Errorf("want both mistakes with their lines, got %v", err)
	}
}

func TestEmptyConfigFileMeansDefaults(t *testing.T) {
	cfg, err := LoadConfig(writeConfig(t, "# nothing here\n"))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(cfg, DefaultConfig()) {
		t.Errorf("got %+v", cfg)
	}
}

// FuzzParseConfig: no input crashes the loader, every refusal names the
// file, and whatever it accepts is valid.
func FuzzParseConfig(f *testing.F) {
	example, err := os.ReadFile("../../config.yaml")
	if err != nil {
		f.Fatal(err)
	}
	f.Add(example)
	f.Add([]byte("stun:\n  listen: [\":3478\", \"[::1]:3479\"]\n  sockets: 2\n"))
	f.Add([]byte("turn:\n  secrets: [\"0123456789abcdef\"]\n  peers:\n    allow: [10.0.0.0/8]\n"))
	f.Add([]byte("stun:\n  lisen: []\n"))
	f.Add([]byte("- a\n- b\n"))
	f.Add([]byte("log: {level: [1, 2]}\n"))
	f.Add([]byte("signal:\n  init_timeout: 10\n  &a x: *a\n"))
	f.Add([]byte("a: &a {tcp: [x]}\nstun: {<<: [*a, *a], sockets: 2}\nturn: *a\n"))
	f.Add([]byte("log:\n  level: info\n  level: [debug]\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := parseConfig("fuzz.yaml", data)
		if err != nil {
			if !strings.HasPrefix(err.Error(), "fuzz.yaml") {
				t.Fatalf("error does not name the file: %v", err)
			}
			return
		}
		if err := cfg.Validate(); err != nil {
			t.Fatalf("accepted an invalid config: %v", err)
		}
	})
}

// TestICEHostStaysInTheSignalSection: ice_host left signal.Config (only
// main reads it) but not the file: signal.ice_host loads as before, next
// to the section's other options, and a bad one is reported there.
func TestICEHostStaysInTheSignalSection(t *testing.T) {
	cfg, err := LoadConfig(writeConfig(t, "signal:\n  listen: \"127.0.0.1:9000\"\n  ice_host: turn.example.com\n"))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Signal.ICEHost != "turn.example.com" || cfg.Signal.Listen != "127.0.0.1:9000" || cfg.iceName() != "turn.example.com" {
		t.Errorf("decoded ice_host %q, listen %q", cfg.Signal.ICEHost, cfg.Signal.Listen)
	}
	_, err = LoadConfig(writeConfig(t, "signal:\n  ice_host: https://turn.example.com\n"))
	if err == nil || !strings.Contains(err.Error(), "signal.ice_host") || !strings.Contains(err.Error(), "is not a DNS name") {
		t.Errorf("bad ice_host: %v", err)
	}
}
