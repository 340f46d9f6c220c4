package main

import (
	"bytes"
	"flag"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"icebox/internal/confdoc"
)

var update = flag.Bool("update", false, "rewrite ../../config.yaml from the Config structs (go generate)")

const configHeader = `icebox configuration, generated from the Config structs by go generate
./cmd/icebox (do not edit: change a field's comment or its Default* value).
Every option is shown with its default value, so this file and running
icebox with no config at all behave the same. Copy it to
/etc/icebox/config.yaml and change what you need; remove what you don't.
Durations are written like "30s", "10m", "12h".`

func configOptions(t *testing.T) []confdoc.Option {
	t.Helper()
	docs, err := confdoc.ParseModule("../..", "icebox")
	if err != nil {
		t.Fatal(err)
	}
	return confdoc.Options(DefaultConfig(), docs, map[string]string{"main": "icebox/cmd/icebox"})
}

// config.yaml is generated from the structs: their defaults and their
// comments. A hand edit, or a changed default or comment without go
// generate, fails here.
func TestConfigYAMLIsGenerated(t *testing.T) {
	want, err := confdoc.Render(configHeader, configOptions(t))
	if err != nil {
		t.Fatal(err)
	}
	if *update {
		if err := os.WriteFile("../../config.yaml", want, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	got, err := os.ReadFile("../../config.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("config.yaml is not what the Config structs generate: run go generate ./cmd/icebox\n%s", firstDifference(string(got), string(want)))
	}
}

func firstDifference(got, want string) string {
	g, w := strings.Split(got, "\n"), strings.Split(want, "\n")
	for i := range max(len(g), len(w)) {
		var gl, wl string
		if i < len(g) {
			gl = g[i]
		}
		if i < len(w) {
			wl = w[i]
		}
		if gl != wl {
			return "line " + strconv.Itoa(i+1) + ":\n have " + gl + "\n want " + wl
		}
	}
	return ""
}

// Every option's comment states its default, and the stated value is the
// code's: the one place a default is written in prose is checked against
// the one place it is written in code.
func TestConfigCommentsStateTheirDefaults(t *testing.T) {
	for _, o := range configOptions(t) {
		if o.Doc == "" {
			t.Errorf("%s has no comment", o.Path)
			continue
		}
		if err := o.CheckStatedDefault(); err != nil {
			t.Error(err)
		}
	}
}

// statedDefault is how README and docs/protocol.md state a default where
// they must (firewall ports, the admin address, protocol limits):
// "`turn.relay.ports`, default `49152-65535`" or "`signal.listen`
// (default `:8080`)".
var statedDefault = regexp.MustCompile("`([a-z_.]+)`,? \\(?default `([^`]*)`")

// looseDefault is a default stated in another form, which the check
// cannot read: "(default 2)".
var looseDefault = regexp.MustCompile("\\(default [^`]")

// The documents link to config.yaml for options; the defaults they state
// must be the code's, each in the checked form. atLeast is how many each
// states, so that a pattern that stops matching fails here.
func TestDocumentedDefaultsAreTheCodes(t *testing.T) {
	byPath := map[string]confdoc.Option{}
	for _, o := range configOptions(t) {
		byPath[o.Path] = o
	}
	for file, atLeast := range map[string]int{"../../README.md": 11, "../../docs/protocol.md": 3} {
		data, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		text := strings.Join(strings.Fields(string(data)), " ")
		for _, loose := range looseDefault.FindAllStringIndex(text, -1) {
			t.Errorf("%s: %q states a default the check cannot read: write `option.path` (default `value`)", file, text[max(0, loose[0]-60):loose[1]+10])
		}
		matches := statedDefault.FindAllStringSubmatch(text, -1)
		if len(matches) < atLeast {
			t.Errorf("found %d stated defaults in %s, want at least %d: the pattern no longer matches how it writes them, or a default went unchecked", len(matches), file, atLeast)
		}
		for _, m := range matches {
			o, ok := byPath[m[1]]
			if !ok {
				t.Errorf("%s states a default for %s, which is not an option (write its full path)", file, m[1])
				continue
			}
			if err := o.CheckStated(m[2]); err != nil {
				t.Errorf("%s: %v", file, err)
			}
		}
	}
}
