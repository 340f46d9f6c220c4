package stunsrv

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"syscall"
	"testing"

	"github.com/pion/stun/v3"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// forgedSender sends UDP datagrams from 127.0.0.1 with a source port of 0,
// which no socket can send from but the kernel delivers, through a raw
// socket: an attacker's forged source. It skips the test without
// CAP_NET_RAW.
func forgedSender(t *testing.T) func(payload []byte, to netip.AddrPort) {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_RAW, syscall.IPPROTO_UDP)
	if errors.Is(err, syscall.EPERM) || errors.Is(err, syscall.EACCES) {
		t.Skipf("a raw socket needs CAP_NET_RAW: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Close(fd) })
	return func(payload []byte, to netip.AddrPort) {
		t.Helper()
		// The kernel writes the IP header (source 127.0.0.1, the route's);
		// the UDP header is ours: source port 0, no checksum (allowed
		// over IPv4).
		pkt := make([]byte, 8, 8+len(payload))
		binary.BigEndian.PutUint16(pkt[2:], to.Port())
		binary.BigEndian.PutUint16(pkt[4:], uint16(8+len(payload)))
		pkt = append(pkt, payload...)
		if err := syscall.Sendto(fd, pkt, 0, &syscall.SockaddrInet4{Addr: to.Addr().As4()}); err != nil {
			t.Fatal(err)
		}
	}
}

// TestForgedPortZeroCostsNoOtherClientItsAnswer: an attacker mixes Binding
// requests from a forged source with port 0 into many clients' requests.
// The kernel refuses to send anything to port 0, and sendmmsg stops at the
// first datagram it refuses: the answers queued behind the forged one in
// the batch were lost. Every client's request must be answered, and the
// forged ones dropped and counted. The server runs with passthrough on and
// its reader (pion's part, played here by the test) starts only once every
// request is queued on the socket, so that one recvmmsg reads the forged
// requests and the clients' together, as under load.
func TestForgedPortZeroCostsNoOtherClientItsAnswer(t *testing.T) {
	for _, listen := range []string{"127.0.0.1:0", "[::]:0"} {
		t.Run(listen, func(t *testing.T) {
			forge := forgedSender(t)
			s := startServer(t, func(c *Config, o *Options) {
				c.Listen = []string{listen}
				c.Sockets = 1
				c.TCP = false
				o.Passthrough = true
			})
			to := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), udpAddr(s).Port())
			// Each round starts with a forged request, so every batch of
			// 32 holds some with clients' requests behind them; the last
			// request is a client's, so that once it is answered every
			// forged one has been handled.
			cl := newBindingClients(t, 16)
			const rounds = 8
			for range rounds {
				forge(stun.MustBuild(stun.TransactionID, stun.BindingRequest, stun.Fingerprint).Raw, to)
				cl.sendRound(t, to)
			}

			pc := s.PacketConns()[0]
			done := make(chan error, 1)
			go func() {
				// Bindings are answered inside ReadFrom; it returns only
				// once the server closes, or with what is not a Binding.
				buf := make([]byte, 2048)
				n, from, err := pc.ReadFrom(buf)
				if err != nil {
					done <- nil
					return
				}
				done <- fmt.Errorf("the reader was handed %d bytes from %v", n, from)
			}()
			t.Cleanup(func() {
				s.Close()
				if err := <-done; err != nil {
					t.Error(err)
				}
			})

			cl.wantEveryAnswer(t, to)
			if got := testutil.ToFloat64(s.stats.udp[v4].dropped); got != rounds {
				t.Errorf("dropped = %v, want the %d forged requests", got, rounds)
			}
			if got, want := testutil.ToFloat64(s.stats.udp[v4].answered), len(cl.conns)*rounds; got != float64(want) {
				t.Errorf("answered = %v, want %d", got, want)
			}
			if got := testutil.ToFloat64(s.stats.writeErrors); got != 0 {
				t.Errorf("write errors = %v, want 0: nothing is sent to port 0", got)
			}
		})
	}
}
