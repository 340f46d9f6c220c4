package main

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"gopkg.in/yaml.v3"

	"icebox/internal/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// unitForTest is systemd/icebox.service with ExecStart pointing at a real
// binary, since verify checks that the command exists.
func unitForTest(t *testing.T) string {
	unit, err := os.ReadFile("../../systemd/icebox.service")
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "icebox.service")
	body := strings.ReplaceAll(string(unit), "/usr/local/bin/icebox", testenv.IceboxBinary(t))
	if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestSystemdUnitIsHardened(t *testing.T) {
	analyze := testenv.Tool(t, "systemd-analyze", "systemd")
	unit := unitForTest(t)
	out, err := exec.Command(analyze, "security", "--offline=true", "--no-pager", unit).CombinedOutput()
	if err != nil {
		t.Fatalf("systemd-analyze security: %v\n%s", err, out)
	}
	m := regexp.MustCompile(`Overall exposure level for icebox.service: ([0-9.]+)`).FindSubmatch(out)
	if m == nil {
		t.Fatalf("no exposure level in:\n%s", out)
	}
	score, _ := strconv.ParseFloat(string(m[1]), 64)
	t.Logf("systemd-analyze security: exposure %.1f", score)
	if score > 2.0 {
		t.Errorf("exposure %.1f, want 2.0 or lower:\n%s", score, out)
	}
	if out, err := exec.Command(analyze, "verify", unit).CombinedOutput(); err != nil {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
}

// The unit must keep what the issue and the daemon rely on.
func TestSystemdUnitSettings(t *testing.T) {
	unit, err := os.ReadFile("../../systemd/icebox.service")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"Type=notify", "WatchdogSec=", "DynamicUser=yes", "StateDirectory=icebox",
		"ConfigurationDirectory=icebox", "AmbientCapabilities=CAP_NET_BIND_SERVICE\n",
		"CapabilityBoundingSet=CAP_NET_BIND_SERVICE\n", "NoNewPrivileges=yes", "ProtectSystem=strict",
		"RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX AF_NETLINK\n", "SystemCallFilter=@system-service",
		"MemoryDenyWriteExecute=yes", "Restart=on-failure", "LimitNOFILE=", "ExecReload=",
		// No config file needed: icebox finds /etc/icebox/config.yaml itself.
		"ExecStart=/usr/local/bin/icebox\n",
		// Start-up errors restarting cannot fix stop the unit.
		fmt.Sprintf("RestartPreventExitStatus=%d\n", exitConfig),
		// Secrets the DynamicUser could not read otherwise.
		"LoadCredential=" + turnSecretCredential + "\n",
	} {
		if !strings.Contains(string(unit), want) {
			t.Errorf("unit lacks %q", strings.TrimSpace(want))
		}
	}
}

// TestUnreadableSecretStopsTheUnit: a secret_file the daemon may not read
// (the unit's DynamicUser and a root-only file) ends start-up with exit
// 78, which the unit's RestartPreventExitStatus= keeps from looping, and
// a message that says how to pass the secret instead.
func TestUnreadableSecretStopsTheUnit(t *testing.T) {
	// A directory anyone may enter, as /etc/icebox is.
	dir, err := os.MkdirTemp("", "icebox-unit")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	secret := filepath.Join(dir, "turn-secret")
	if err := os.WriteFile(secret, []byte("a-root-only-secret-0123456789\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := testConfig(t)
	cfg.TURN.SecretFile = secret
	cfg.StateDir = filepath.Join(dir, "state")
	body, err := yaml.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	config := filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(config, body, 0o644); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "icebox")
	exe, err := os.ReadFile(testenv.IceboxBinary(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, exe, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-config", config)
	if os.Geteuid() == 0 {
		// Root reads any file: run as nobody, as DynamicUser would.
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	} else if err := os.Chmod(secret, 0); err != nil {
		t.Fatal(err)
	}
	out, err := cmd.CombinedOutput()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != exitConfig {
		t.Fatalf("icebox exited with %v, want status %d:\n%s", err, exitConfig, out)
	}
	for _, want := range []string{"may not read " + secret, "LoadCredential="} {
		if !strings.Contains(string(out), want) {
			t.Errorf("start-up error lacks %q:\n%s", want, out)
		}
	}
}
