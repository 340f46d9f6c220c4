package main

import (
	"bytes"
	"flag"
	"strings"
	"testing"
)

// TestCheckCommand runs `icebox check` against running daemons: one set
// up right, one with TURN off and one telling clients a wrong public IP.
func TestCheckCommand(t *testing.T) {
	for _, tc := range []struct {
		name     string
		mutate   func(*Config)
		wantCode int
		want     []string
	}{
		{"healthy", func(*Config) {}, 0, []string{"PASS: 6 ok", "and back in"}},
		{"turn disabled", func(c *Config) { c.TURN.Enabled = false }, 1, []string{"FAIL", "turn.enabled is false"}},
		// The ICE URLs name loopback (ice_host) while relays are announced
		// at a TEST-NET address: the check must blame public_ip, and never
		// send a packet there.
		{"wrong public ip", func(c *Config) { c.PublicIP = "192.0.2.1"; c.Signal.ICEHost = "127.0.0.1" }, 1, []string{"FAIL", "public_ip is probably wrong"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testConfig(t)
			tc.mutate(&cfg)
			d, _ := startDaemon(t, cfg)
			var out, errOut bytes.Buffer
			code := run([]string{"check", "-timeout", "3s", "ws://" + d.signal.addr() + "/connect"}, &out, &errOut)
			t.Logf("icebox check:\n%s%s", out.String(), errOut.String())
			if code != tc.wantCode {
				t.Errorf("exit %d, want %d", code, tc.wantCode)
			}
			for _, w := range tc.want {
				if !strings.Contains(out.String(), w) {
					t.Errorf("report lacks %q", w)
				}
			}
		})
	}
}

// TestHelpListsCheckFlags: icebox -h shows every flag of check, with the
// default DefaultTimeout has, not only -insecure.
func TestHelpListsCheckFlags(t *testing.T) {
	var out, errOut bytes.Buffer
	if code := run([]string{"-h"}, &out, &errOut); code != 0 {
		t.Fatalf("-h: exit %d", code)
	}
	line := ""
	for _, l := range strings.Split(errOut.String(), "\n") {
		if strings.Contains(l, "icebox check ") {
			line = l
		}
	}
	fs, _, _ := checkFlags()
	fs.VisitAll(func(f *flag.Flag) {
		want := "[-" + f.Name
		if f.Name == "timeout" {
			want += " " + f.DefValue
		}
		if !strings.Contains(line, want) {
			t.Errorf("icebox -h's check line %q lacks %q", line, want)
		}
	})
}
