package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"

	"icebox/internal/testenv"
)

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
	buildDir  string
)

// buildIcebox compiles the daemon once per test run, for tests that need a
// real process (signals, systemd-analyze verify).
func buildIcebox(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		buildDir, buildErr = os.MkdirTemp("", "icebox-bin")
		if buildErr != nil {
			return
		}
		binPath = filepath.Join(buildDir, "icebox")
		out, err := exec.Command("go", "build", "-o", binPath, ".").CombinedOutput()
		if err != nil {
			buildErr = err
			binPath = string(out)
		}
	})
	if buildErr != nil {
		t.Fatalf("go build: %v\n%s", buildErr, binPath)
	}
	return binPath
}

func TestMain(m *testing.M) {
	code := m.Run()
	if buildDir != "" {
		os.RemoveAll(buildDir)
	}
	os.Exit(code)
}

// unitForTest is systemd/icebox.service with ExecStart pointing at a real
// binary, since verify checks that the command exists.
func unitForTest(t *testing.T) string {
	unit, err := os.ReadFile("../../systemd/icebox.service")
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "icebox.service")
	body := strings.ReplaceAll(string(unit), "/usr/local/bin/icebox", buildIcebox(t))
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
	} {
		if !strings.Contains(string(unit), want) {
			t.Errorf("unit lacks %q", strings.TrimSpace(want))
		}
	}
}
