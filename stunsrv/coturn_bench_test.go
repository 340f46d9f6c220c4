package stunsrv

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/pion/stun/v3"

	"icebox/internal/testenv"
)

// startCoturn runs coturn as a plain STUN server on 127.0.0.1, for
// side-by-side benchmarks: on a shared machine only the ratio between the
// two, measured in the same run, means anything.
func startCoturn(b *testing.B) netip.AddrPort {
	b.Helper()
	bin := testenv.Tool(b, "turnserver", "coturn")
	port := testenv.FreePort(b)
	cmd := exec.Command(bin, "--stun-only", "--no-cli", "--no-tls", "--no-dtls",
		"--listening-ip", "127.0.0.1", "--listening-port", fmt.Sprint(port),
		"--log-file", filepath.Join(b.TempDir(), "coturn.log"), "--simple-log",
		"--pidfile", filepath.Join(b.TempDir(), "coturn.pid"))
	return startAndWait(b, cmd, port)
}

// startAndWait starts a STUN server process and returns its address once
// it answers.
func startAndWait(b *testing.B, cmd *exec.Cmd, port int) netip.AddrPort {
	testenv.StartSTUNServer(b, cmd, port)
	return netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(port))
}

// startIcebox runs the icebox binary as its own process, STUN only, as
// coturn runs: a server inside the benchmark's process would share its
// CPUs with the clients and lose for that reason alone.
func startIcebox(b *testing.B) netip.AddrPort {
	b.Helper()
	dir := b.TempDir()
	bin := testenv.IceboxBinary(b)
	port := testenv.FreePort(b)
	cfgFile := filepath.Join(dir, "config.yaml")
	cfg := fmt.Sprintf("stun:\n  listen: [\"127.0.0.1:%d\"]\n  tcp: false\nturn:\n  enabled: false\nsignal:\n  enabled: false\nadmin:\n  listen: \"\"\nstate_dir: %q\nlog:\n  level: warn\n", port, dir)
	if err := os.WriteFile(cfgFile, []byte(cfg), 0o600); err != nil {
		b.Fatal(err)
	}
	return startAndWait(b, exec.Command(bin, "-config", cfgFile), port)
}

func TestMain(m *testing.M) { testenv.Main(m) }

// BenchmarkVersusCoturn times a Binding round trip against icebox and
// coturn in the same run, one client and several in parallel:
//
//	go test -run '^$' -bench VersusCoturn -benchmem ./stunsrv
func BenchmarkVersusCoturn(b *testing.B) {
	servers := []struct {
		name string
		addr netip.AddrPort
	}{{"icebox", startIcebox(b)}, {"coturn", startCoturn(b)}}
	for _, srv := range servers {
		b.Run(srv.name+"/serial", func(b *testing.B) { roundTrips(b, srv.addr, false) })
	}
	for _, srv := range servers {
		b.Run(srv.name+"/parallel", func(b *testing.B) { roundTrips(b, srv.addr, true) })
	}
}

func roundTrips(b *testing.B, to netip.AddrPort, parallel bool) {
	client := func(loop func(func() bool)) {
		c, err := net.DialUDP("udp4", nil, net.UDPAddrFromAddrPort(to))
		if err != nil {
			b.Error(err)
			return
		}
		defer c.Close()
		req := stun.MustBuild(stun.TransactionID, stun.BindingRequest).Raw
		buf := make([]byte, 1500)
		loop(func() bool {
			c.SetReadDeadline(time.Now().Add(time.Second))
			c.Write(req)
			// A lost datagram costs a timeout, not a failed benchmark.
			_, err := c.Read(buf)
			return err == nil
		})
	}
	b.ReportAllocs()
	if !parallel {
		client(func(one func() bool) {
			for b.Loop() {
				one()
			}
		})
		return
	}
	b.SetParallelism(4)
	b.RunParallel(func(pb *testing.PB) {
		client(func(one func() bool) {
			for pb.Next() {
				one()
			}
		})
	})
}
