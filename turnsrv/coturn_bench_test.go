package turnsrv

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"icebox/internal/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// BenchmarkVersusCoturnRelay relays the same load through icebox and
// coturn, each its own process on 127.0.0.1 with the same REST secret, in
// the same run: on a shared machine only the ratio between the two means
// anything. Servers and clients are pinned to different CPUs (pinned).
//
//	go test -run '^$' -bench VersusCoturnRelay -benchtime=1x ./turnsrv
//
// coturn's turnutils_uclient is the client for both: relayClients clients
// each send relayMessages messages through their own allocation to one
// shared turnutils_peer, which echoes them back. Per server and transport it
// reports:
//
//   - server-cpu-ns/msg: the server process's CPU time (user and system,
//     all threads, from /proc) per message echoed back, that is per two
//     datagrams in and two out. This is the figure to compare.
//   - lost-%: messages the clients were to send that never came back.
//   - rtt-ms: uclient's average round trip, in whole milliseconds per
//     sample, so mostly 0 on loopback until a server falls behind.
//
// ns/op is suppressed: a run's wall time is uclient's own timers (each
// client starts 1-6 s after connecting, at random, and uclient waits 10 s
// after any loss), not the servers' speed.
//
// udp and tcp relay ChannelData; udp-send relays Send and Data indications.
// uclient picks channel numbers anywhere in RFC 5766's 0x4000-0x7FFF: a
// server that binds them all but relays only RFC 8656's 0x4000-0x4FFF
// loses about three clients in four.
func BenchmarkVersusCoturnRelay(b *testing.B) {
	if runtime.GOOS != "linux" {
		b.Skip("reads server CPU time from /proc")
	}
	// Unpinned, the figures compare something else (README: "One core or
	// two"), so no taskset or one CPU skips rather than runs unpinned.
	testenv.Tool(b, "taskset", "util-linux")
	if runtime.NumCPU() < 2 {
		b.Skip("needs two CPUs: the servers on one, the clients on the other")
	}
	uclient := testenv.Tool(b, "turnutils_uclient", "coturn")
	peerBin := testenv.Tool(b, "turnutils_peer", "coturn")
	servers := []relayServer{startIceboxRelay(b), startCoturnRelay(b)}
	peerPort := startEchoPeer(b, peerBin)
	variants := []struct {
		name string
		args []string
	}{
		{"udp", nil},
		{"udp-send", []string{"-s"}},
		{"tcp", []string{"-t"}},
	}
	// Alternate the servers, twice over, so that a burst of noise on the
	// machine hits both rather than one.
	for range 2 {
		for _, v := range variants {
			for _, srv := range servers {
				b.Run(srv.name+"/"+v.name, func(b *testing.B) {
					relayThrough(b, uclient, srv, peerPort, v.args)
				})
			}
		}
	}
}

const (
	// Each client sends one message per millisecond (-z 1): ten make
	// 10,000 messages a second, 40,000 datagrams through the server, a
	// load both servers carry on a small machine, so the CPU figures
	// compare like with like rather than who drops more.
	relayClients  = 10
	relayMessages = 3000
	relayLength   = 170 // bytes, a typical audio packet
)

// As bench/compare.sh does: each server on CPU 1, uclient and the echoing
// peer on CPU 0, so that the servers are measured at the same load, not
// sharing a core with their clients. A Go server pinned to one CPU runs
// with GOMAXPROCS=1, as one pinned by systemd's CPUAffinity would.
const (
	serverCPU = "1"
	loadCPU   = "0"
)

// pinned is exec.CommandContext under taskset on cpu; taskset execs the
// program, so the pid is the program's.
func pinned(ctx context.Context, cpu, name string, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, "taskset", append([]string{"-c", cpu, name}, args...)...)
}

// relayServer is a TURN server process: its port on 127.0.0.1 (UDP and
// TCP) and its pid, whose CPU time is read from /proc.
type relayServer struct {
	name string
	port int
	pid  int
}

func relayThrough(b *testing.B, uclient string, srv relayServer, peerPort int, extra []string) {
	args := []string{"-W", testenv.BenchSecret, "-u", "bench", "-c",
		"-m", strconv.Itoa(relayClients), "-n", strconv.Itoa(relayMessages),
		"-l", strconv.Itoa(relayLength), "-z", "1",
		"-e", "127.0.0.1", "-r", strconv.Itoa(peerPort),
		"-p", strconv.Itoa(srv.port)}
	args = append(append(args, extra...), "127.0.0.1")
	var want, sent, recv int
	var rttSum float64
	var cpu time.Duration
	for b.Loop() {
		before := cpuTime(b, srv.pid)
		r := runUclient(b, uclient, args)
		cpu += cpuTime(b, srv.pid) - before
		want += relayClients * relayMessages
		sent += r.sent
		recv += r.recv
		rttSum += r.rtt * float64(r.recv)
	}
	// Loss counts against every message the clients were to send: a
	// client whose TCP connection the server closes stops sending, and
	// uclient then counts fewer sent.
	if recv < want {
		b.Logf("%s: %d of %d messages came back (uclient sent %d)", srv.name, recv, want, sent)
	}
	b.ReportMetric(0, "ns/op")
	if recv > 0 {
		b.ReportMetric(float64(cpu.Nanoseconds())/float64(recv), "server-cpu-ns/msg")
		b.ReportMetric(rttSum/float64(recv), "rtt-ms")
	}
	b.ReportMetric(100*float64(want-recv)/float64(want), "lost-%")
}

type uclientResult struct {
	sent, recv int
	rtt        float64 // average round trip in ms
}

var (
	uclientTotals = regexp.MustCompile(`start_mclient: tot_send_msgs=(\d+), tot_recv_msgs=(\d+)`)
	uclientRTT    = regexp.MustCompile(`Average round trip delay ([0-9.]+) ms`)
)

func runUclient(b *testing.B, uclient string, args []string) uclientResult {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, err := pinned(ctx, loadCPU, uclient, args...).CombinedOutput()
	totals := uclientTotals.FindSubmatch(out)
	rtt := uclientRTT.FindSubmatch(out)
	if err != nil || totals == nil || rtt == nil {
		b.Fatalf("turnutils_uclient %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	var r uclientResult
	r.sent, _ = strconv.Atoi(string(totals[1]))
	r.recv, _ = strconv.Atoi(string(totals[2]))
	r.recv = min(r.recv, r.sent) // as uclient counts its loss
	r.rtt, _ = strconv.ParseFloat(string(rtt[1]), 64)
	return r
}

// cpuTime is the CPU time a process has used so far, user and system, over
// all its threads.
func cpuTime(b *testing.B, pid int) time.Duration {
	b.Helper()
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		b.Fatal(err)
	}
	// The command name, field 2, is in parentheses and may hold spaces;
	// from the state, field 3, on they are plain: utime is 14, stime 15.
	f := strings.Fields(string(raw[bytes.LastIndexByte(raw, ')')+1:]))
	if len(f) < 13 {
		b.Fatalf("/proc/%d/stat: %q", pid, raw)
	}
	utime, err1 := strconv.ParseInt(f[11], 10, 64)
	stime, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		b.Fatalf("/proc/%d/stat: %q", pid, raw)
	}
	// In clock ticks of USER_HZ, which Linux fixes at 100 for userspace.
	return time.Duration(utime+stime) * (time.Second / 100)
}

// startIceboxRelay runs the icebox binary as its own process with TURN on,
// as coturn runs: a server inside the benchmark's process would share its
// CPUs with the clients and its CPU time with the benchmark's.
func startIceboxRelay(b *testing.B) relayServer {
	b.Helper()
	port, p := testenv.StartBenchIcebox(b, func(name string, args ...string) *exec.Cmd {
		return pinned(context.Background(), serverCPU, name, args...)
	})
	return relayServer{name: "icebox", port: port, pid: p.Pid}
}

// startCoturnRelay runs coturn's turnserver with the same secret and realm.
// coturn 4.6 refuses loopback peers (403) without --allow-loopback-peers,
// whatever --allowed-peer-ip says.
func startCoturnRelay(b *testing.B) relayServer {
	b.Helper()
	bin := testenv.Tool(b, "turnserver", "coturn")
	dir := b.TempDir()
	port := testenv.FreePort(b)
	args := strings.Split(strings.TrimSuffix(testenv.BenchConfig(b, "coturn.args", dir, port), "\n"), "\n")
	cmd := pinned(context.Background(), serverCPU, bin, args...)
	testenv.StartSTUNServer(b, cmd, port)
	return relayServer{name: "coturn", port: port, pid: cmd.Process.Pid}
}

// startEchoPeer runs turnutils_peer on 127.0.0.1 and returns its port once
// it echoes.
func startEchoPeer(b *testing.B, bin string) int {
	b.Helper()
	port := testenv.FreePort(b)
	c, err := net.DialUDP("udp4", nil, &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: port})
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	ping, buf := []byte("icebox"), make([]byte, 64)
	testenv.StartProcess(b, pinned(context.Background(), loadCPU, bin, "-L", "127.0.0.1", "-p", strconv.Itoa(port)), func() error {
		c.SetReadDeadline(time.Now().Add(time.Second))
		if _, err := c.Write(ping); err != nil {
			return err
		}
		n, err := c.Read(buf)
		if err == nil && !bytes.Equal(buf[:n], ping) {
			err = fmt.Errorf("echoed %q", buf[:n])
		}
		return err
	})
	return port
}
