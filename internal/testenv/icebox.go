package testenv

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"icebox/internal/stunclient"
)

// iceboxBuild is the daemon built once per test process (IceboxBinary).
var iceboxBuild struct {
	once sync.Once
	dir  string
	bin  string
	err  error
}

// IceboxBinary returns the icebox daemon, built from icebox/cmd/icebox
// once per test process, for tests that need a real process (signals,
// systemd, a server measured apart from its clients). The package's
// TestMain calls Main, which removes it.
func IceboxBinary(t testing.TB) string {
	t.Helper()
	b := &iceboxBuild
	b.once.Do(func() {
		if b.dir, b.err = os.MkdirTemp("", "icebox-bin"); b.err != nil {
			return
		}
		b.bin = filepath.Join(b.dir, "icebox")
		if out, err := exec.Command("go", "build", "-o", b.bin, "icebox/cmd/icebox").CombinedOutput(); err != nil {
			b.err = fmt.Errorf("go build icebox/cmd/icebox: %v\n%s", err, out)
		}
	})
	if b.err != nil {
		t.Fatal(b.err)
	}
	return b.bin
}

// Main runs a package's tests, from its TestMain, then removes the binary
// IceboxBinary built.
func Main(m *testing.M) {
	code := m.Run()
	if iceboxBuild.dir != "" {
		os.RemoveAll(iceboxBuild.dir)
	}
	os.Exit(code)
}

// BenchSecret is the TURN REST secret of bench/icebox.yaml and
// bench/coturn.args, as BenchConfig fills them in.
const BenchSecret = "bench-secret-0123456789abcdef"

// BenchConfig is bench/name, the settings bench/compare.sh runs a server
// with, with its placeholders filled in: @DIR@ (state and logs), @PORT@
// (UDP and TCP on 127.0.0.1) and @SECRET@ (BenchSecret).
func BenchConfig(t testing.TB, name, dir string, port int) string {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(repoRoot(t), "bench", name))
	if err != nil {
		t.Fatal(err)
	}
	return strings.NewReplacer("@DIR@", dir, "@PORT@", strconv.Itoa(port), "@SECRET@", BenchSecret).Replace(string(raw))
}

// repoRoot is the directory of go.mod, above the test's package directory.
func repoRoot(t testing.TB) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		up := filepath.Dir(dir)
		if up == dir {
			t.Fatal("no go.mod above the test's directory")
		}
		dir = up
	}
}

// StartBenchIcebox runs the icebox binary as bench/compare.sh does
// (bench/icebox.yaml: TURN with BenchSecret, loopback peers allowed, no
// quotas) on a free port of 127.0.0.1 and returns the port and the
// process once it answers a Binding. command makes the process:
// exec.Command, or one that pins it to a CPU.
func StartBenchIcebox(t testing.TB, command func(name string, args ...string) *exec.Cmd) (int, *os.Process) {
	t.Helper()
	dir, port := t.TempDir(), FreePort(t)
	cfg := filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(cfg, []byte(BenchConfig(t, "icebox.yaml", dir, port)), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := command(IceboxBinary(t), "-config", cfg)
	StartSTUNServer(t, cmd, port)
	return port, cmd.Process
}

// StartSTUNServer starts cmd, a STUN server on 127.0.0.1:port, and returns
// once it answers a Binding request (StartProcess).
func StartSTUNServer(t testing.TB, cmd *exec.Cmd, port int) {
	t.Helper()
	addr := netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, 0, 1}), uint16(port)).String()
	StartProcess(t, cmd, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_, err := stunclient.MappedAddress(ctx, addr)
		return err
	})
}
