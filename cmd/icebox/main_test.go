package main

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	"icebox/internal/testenv"
)

// startDaemon runs icebox in-process on the given config.
func startDaemon(t *testing.T, cfg Config) (*daemon, *testenv.LogBuffer) {
	t.Helper()
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	logs := &testenv.LogBuffer{}
	log := slog.New(slog.NewTextHandler(logs, nil))
	d, err := start(cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.close(context.Background()) })
	return d, logs
}

func TestCoturnStunclientGetsAnAnswer(t *testing.T) {
	stunclient := testenv.Tool(t, "turnutils_stunclient", "coturn")
	port := testenv.FreePort(t)
	cfg := testConfig(t)
	cfg.STUN.Listen = []string{fmt.Sprintf("127.0.0.1:%d", port)}
	startDaemon(t, cfg)
	for _, args := range [][]string{
		{"-p", fmt.Sprint(port), "127.0.0.1"},
		{"-p", fmt.Sprint(port), "-L", "127.0.0.5", "127.0.0.1"},
	} {
		out, err := exec.Command(stunclient, args...).CombinedOutput()
		if err != nil {
			t.Fatalf("turnutils_stunclient %v: %v\n%s", args, err, out)
		}
		if !strings.Contains(string(out), "reflexive addr: "+args[len(args)-2]) && !strings.Contains(string(out), "reflexive addr: 127.0.0.1:") {
			t.Errorf("turnutils_stunclient %v did not get a mapped address:\n%s", args, out)
		}
	}
}

func TestStartupSummaryAndHelp(t *testing.T) {
	port := testenv.FreePort(t)
	cfg := testConfig(t)
	cfg.STUN.Listen = []string{fmt.Sprintf("127.0.0.1:%d", port)}
	_, logs := startDaemon(t, cfg)
	if want := fmt.Sprintf("udp 127.0.0.1:%d", port); !strings.Contains(logs.String(), "icebox started") || !strings.Contains(logs.String(), want) {
		t.Errorf("start-up summary %q lacks %q", logs, want)
	}

	var out, errOut bytes.Buffer
	if code := run([]string{"-h"}, &out, &errOut); code != 0 || !strings.Contains(errOut.String(), "-config FILE") {
		t.Errorf("-h: code %d, output %q", code, errOut.String())
	}
	errOut.Reset()
	if code := run([]string{"-config", writeConfig(t, "stun:\n  lisen: []\n")}, &out, &errOut); code != exitConfig || !strings.Contains(errOut.String(), ":2: stun.lisen: unknown option") {
		t.Errorf("bad config: code %d, output %q", code, errOut.String())
	}
	out.Reset()
	if code := run([]string{"version"}, &out, &errOut); code != 0 || !strings.HasPrefix(out.String(), "icebox ") || !strings.Contains(out.String(), "go1.") {
		t.Errorf("version: code %d, output %q", code, out.String())
	}
	errOut.Reset()
	if code := run([]string{"frobnicate"}, &out, &errOut); code != 2 || !strings.Contains(errOut.String(), `unknown command "frobnicate"`) {
		t.Errorf("unknown command: code %d, output %q", code, errOut.String())
	}
}

// TestReadmeNamesGoVersion: README's quick start names the Go version
// go.mod requires, exactly, so `go run` works on what it says.
func TestReadmeNamesGoVersion(t *testing.T) {
	mod, err := os.ReadFile("../../go.mod")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^go (\S+)$`).FindSubmatch(mod)
	if m == nil {
		t.Fatal("go.mod has no go line")
	}
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	if want := "Go " + string(m[1]) + " or newer"; !strings.Contains(string(readme), want) {
		t.Errorf("README does not say %q", want)
	}
}

// TestShortCredentialTTLIsWarnedAbout: a turn.credential_ttl Validate
// lets through but that calls may outlive (under 10m, as icebox
// credentials -ttl warns) is said at start-up; the default is not.
func TestShortCredentialTTLIsWarnedAbout(t *testing.T) {
	const warning = "turn.credential_ttl is short"
	for ttl, warned := range map[time.Duration]bool{5 * time.Minute: true, DefaultConfig().TURN.CredentialTTL: false} {
		cfg := testConfig(t)
		cfg.TURN.CredentialTTL = ttl
		_, logs := startDaemon(t, cfg)
		if got := strings.Contains(logs.String(), warning); got != warned {
			t.Errorf("credential_ttl %v: warned %v, want %v; log:\n%s", ttl, got, warned, logs)
		}
	}
}

// TestShortCredentialTTLIsWarnedAboutOnReload: a SIGHUP that shortens
// turn.credential_ttl says so as start-up does.
func TestShortCredentialTTLIsWarnedAboutOnReload(t *testing.T) {
	const warning = "turn.credential_ttl is short"
	cfg := testConfig(t)
	d, logs := startDaemon(t, cfg)
	if strings.Contains(logs.String(), warning) {
		t.Fatalf("warned at start with credential_ttl %v", cfg.TURN.CredentialTTL)
	}
	next := cfg
	next.TURN.CredentialTTL = 5 * time.Minute
	if err := d.reload(next, new(slog.LevelVar)); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(logs.String(), warning) {
		t.Errorf("reload to credential_ttl 5m: no warning; log:\n%s", logs)
	}
}
