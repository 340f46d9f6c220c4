package stunsrv

import (
	"bytes"
	"errors"
	"io"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pion/stun/v3"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"icebox/internal/stunwire"
	"icebox/internal/udpio"
)

// deadline bounds every blocking read in these tests, so a missing answer
// fails the test instead of hanging it; it never paces anything.
const deadline = 5 * time.Second

func startServer(t *testing.T, mutate func(*Config, *Options)) *Server {
	t.Helper()
	cfg := DefaultConfig()
	cfg.Listen = []string{"127.0.0.1:0"}
	cfg.Sockets = 2
	// TURNIdleTimeout is required with Passthrough; no test here waits for it.
	opts := Options{Registerer: prometheus.NewRegistry(), TURNIdleTimeout: time.Hour}
	if mutate != nil {
		mutate(&cfg, &opts)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	s, err := New(cfg, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func udpAddr(s *Server) netip.AddrPort { return s.udp[0].LocalAddr().(*net.UDPAddr).AddrPort() }

// bindWithPion does one Binding over network with pion's client and
// returns the mapped address and the client's own address.
func bindWithPion(t *testing.T, network, addr string) (mapped, local netip.AddrPort) {
	t.Helper()
	conn, err := net.DialTimeout(network, addr, deadline)
	if err != nil {
		t.Fatal(err)
	}
	c, err := stun.NewClient(conn, stun.WithRTO(deadline/4))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	mapped = doBinding(t, c)
	return mapped, addrPortOf(conn.LocalAddr())
}

func doBinding(t *testing.T, c *stun.Client) netip.AddrPort {
	t.Helper()
	var (
		xor  stun.XORMappedAddress
		berr error
	)
	err := c.Do(stun.MustBuild(stun.TransactionID, stun.BindingRequest, stun.Fingerprint), func(ev stun.Event) {
		if ev.Error != nil {
			berr = ev.Error
			return
		}
		if ev.Message.Type != stun.BindingSuccess {
			berr = errors.New("not a success response: " + ev.Message.Type.String())
			return
		}
		berr = xor.GetFrom(ev.Message)
	})
	if err != nil || berr != nil {
		t.Fatalf("binding: %v %v", err, berr)
	}
	return netip.AddrPortFrom(netip.MustParseAddr(xor.IP.String()).Unmap(), uint16(xor.Port))
}

func addrPortOf(a net.Addr) netip.AddrPort {
	switch a := a.(type) {
	case *net.UDPAddr:
		return netip.AddrPortFrom(a.AddrPort().Addr().Unmap(), a.AddrPort().Port())
	case *net.TCPAddr:
		return netip.AddrPortFrom(a.AddrPort().Addr().Unmap(), a.AddrPort().Port())
	}
	panic(a)
}

func TestBindingOverUDPAndTCP(t *testing.T) {
	for _, tc := range []struct{ name, listen, network string }{
		{"udp4", "127.0.0.1:0", "udp4"},
		{"tcp4", "127.0.0.1:0", "tcp4"},
		{"udp6", "[::1]:0", "udp6"},
		{"tcp6", "[::1]:0", "tcp6"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := startServer(t, func(c *Config, _ *Options) { c.Listen = []string{tc.listen} })
			addr := udpAddr(s).String()
			mapped, local := bindWithPion(t, tc.network, addr)
			if mapped != local {
				t.Errorf("mapped %v, want the client's own %v", mapped, local)
			}
			transport := tc.network[:3]
			family := "ipv4"
			if strings.HasSuffix(tc.network, "6") {
				family = "ipv6"
			}
			st := map[string]*[2]outcomeCounters{"udp": &s.stats.udp, "tcp": &s.stats.tcp}[transport]
			if got := testutil.ToFloat64(st[familyOf(local)].answered); got != 1 {
				t.Errorf("%s %s answered counter = %v, want 1", transport, family, got)
			}
		})
	}
}

func TestSeveralRequestsOnOneTCPConnection(t *testing.T) {
	s := startServer(t, nil)
	conn, err := net.DialTimeout("tcp4", udpAddr(s).String(), deadline)
	if err != nil {
		t.Fatal(err)
	}
	c, err := stun.NewClient(conn)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for range 5 {
		if got, want := doBinding(t, c), addrPortOf(conn.LocalAddr()); got != want {
			t.Fatalf("mapped %v, want %v", got, want)
		}
	}
	// Two requests in one write must both be answered, in order.
	r1 := stun.MustBuild(stun.TransactionID, stun.BindingRequest)
	r2 := stun.MustBuild(stun.TransactionID, stun.BindingRequest, stun.Fingerprint)
	raw, _ := net.DialTimeout("tcp4", udpAddr(s).String(), deadline)
	defer raw.Close()
	raw.SetDeadline(time.Now().Add(deadline))
	if _, err := raw.Write(append(append([]byte{}, r1.Raw...), r2.Raw...)); err != nil {
		t.Fatal(err)
	}
	for _, req := range []*stun.Message{r1, r2} {
		if got := readTCPMessage(t, raw); got.TransactionID != req.TransactionID {
			t.Fatalf("answer for %x, want %x", got.TransactionID, req.TransactionID)
		}
	}
	if got := testutil.ToFloat64(s.stats.tcp[v4].answered); got != 7 {
		t.Errorf("tcp answered = %v, want 7", got)
	}
}

func readTCPMessage(t *testing.T, c net.Conn) *stun.Message {
	t.Helper()
	hdr := make([]byte, stunwire.HeaderSize)
	if _, err := io.ReadFull(c, hdr); err != nil {
		t.Fatal(err)
	}
	body := make([]byte, int(hdr[2])<<8|int(hdr[3]))
	if _, err := io.ReadFull(c, body); err != nil {
		t.Fatal(err)
	}
	m := &stun.Message{Raw: append(hdr, body...)}
	if err := m.Decode(); err != nil {
		t.Fatal(err)
	}
	return m
}

// TestMalformedUDPIsDroppedAndCounted sends junk and then a valid request
// from one socket: the valid request's answer must be the first thing that
// comes back (junk and indications get none), and the junk must be counted.
func TestMalformedUDPIsDroppedAndCounted(t *testing.T) {
	s := startServer(t, nil)
	c, err := net.DialUDP("udp4", nil, net.UDPAddrFromAddrPort(udpAddr(s)))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	valid := stun.MustBuild(stun.TransactionID, stun.BindingRequest, stun.Fingerprint)
	junk := [][]byte{
		{}, {0}, []byte("hello"), valid.Raw[:19], valid.Raw[:len(valid.Raw)-4],
		append([]byte{0xFF}, valid.Raw[1:]...),
		func() []byte { b := append([]byte{}, valid.Raw...); b[len(b)-1] ^= 1; return b }(), // bad fingerprint
		make([]byte, 1400),
	}
	for _, j := range junk {
		if _, err := c.Write(j); err != nil {
			t.Fatal(err)
		}
	}
	indication := stun.MustBuild(stun.TransactionID, stun.NewType(stun.MethodBinding, stun.ClassIndication))
	allocate := stun.MustBuild(stun.TransactionID, stun.NewType(stun.MethodAllocate, stun.ClassRequest))
	c.Write(indication.Raw)
	c.Write(allocate.Raw) // TURN is off here: dropped, not answered
	c.Write(valid.Raw)

	c.SetReadDeadline(time.Now().Add(deadline))
	buf := make([]byte, 1500)
	n, err := c.Read(buf)
	if err != nil {
		t.Fatal(err)
	}
	resp := &stun.Message{Raw: buf[:n]}
	if err := resp.Decode(); err != nil || resp.TransactionID != valid.TransactionID {
		t.Fatalf("first answer %x (%v), want the answer to the valid request %x", resp.TransactionID, err, valid.TransactionID)
	}
	// The packets arrive on one socket and are handled in order, so the
	// counts are final once the answer is here. A zero-length datagram is
	// malformed too.
	if got := testutil.ToFloat64(s.stats.udp[v4].malformed); got != float64(len(junk)) {
		t.Errorf("malformed = %v, want %d", got, len(junk))
	}
	if got := testutil.ToFloat64(s.stats.udp[v4].dropped); got != 2 {
		t.Errorf("dropped = %v, want 2 (indication and allocate)", got)
	}
	// Still serving.
	if mapped, local := bindWithPion(t, "udp4", udpAddr(s).String()); mapped != local {
		t.Errorf("mapped %v, want %v", mapped, local)
	}
}

func TestMalformedTCPClosesOnlyThatConnection(t *testing.T) {
	s := startServer(t, nil)
	bad, err := net.DialTimeout("tcp4", udpAddr(s).String(), deadline)
	if err != nil {
		t.Fatal(err)
	}
	defer bad.Close()
	bad.Write([]byte("GET / HTTP/1.1\r\n\r\n"))
	bad.SetReadDeadline(time.Now().Add(deadline))
	if n, err := bad.Read(make([]byte, 100)); err == nil {
		t.Fatalf("got %d bytes back for garbage, want the connection closed", n)
	} else if errors.Is(err, deadlineErr(err)) {
		t.Fatal("server kept a garbage connection open")
	}
	if got := testutil.ToFloat64(s.stats.tcp[v4].malformed); got != 1 {
		t.Errorf("tcp malformed = %v, want 1", got)
	}
	// A truncated frame followed by the peer hanging up is not answered either.
	trunc, _ := net.DialTimeout("tcp4", udpAddr(s).String(), deadline)
	trunc.Write(stun.MustBuild(stun.TransactionID, stun.BindingRequest).Raw[:12])
	trunc.Close()

	if mapped, local := bindWithPion(t, "tcp4", udpAddr(s).String()); mapped != local {
		t.Errorf("mapped %v, want %v", mapped, local)
	}
}

// deadlineErr returns err itself when it is a timeout, so the caller can
// tell "closed by the server" from "nothing happened".
func deadlineErr(err error) error {
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return err
	}
	return errors.New("not a timeout")
}

func TestTCPConnectionCapAndIdleTimeout(t *testing.T) {
	s := startServer(t, func(c *Config, _ *Options) {
		c.MaxTCPConnections = 1
		c.TCPIdleTimeout = time.Minute
	})
	addr := udpAddr(s).String()
	first, err := net.DialTimeout("tcp4", addr, deadline)
	if err != nil {
		t.Fatal(err)
	}
	defer first.Close()
	c1, _ := stun.NewClient(first)
	defer c1.Close()
	doBinding(t, c1) // the first connection holds the only slot

	second, err := net.DialTimeout("tcp4", addr, deadline)
	if err != nil {
		t.Fatal(err)
	}
	defer second.Close()
	second.SetReadDeadline(time.Now().Add(deadline))
	if _, err := second.Read(make([]byte, 1)); !errors.Is(err, io.EOF) && !isReset(err) {
		t.Fatalf("second connection: %v, want it closed at once", err)
	}
	if got := testutil.ToFloat64(s.stats.tcpRefused[refuseTotal]); got != 1 {
		t.Errorf("refused = %v, want 1", got)
	}

	// A short idle timeout ends a silent connection on its next frame wait.
	s.SetTCPIdleTimeout(50 * time.Millisecond)
	doBinding(t, c1) // re-arms the read deadline with the new timeout
	first.SetReadDeadline(time.Now().Add(deadline))
	if _, err := first.Read(make([]byte, 1)); !errors.Is(err, io.EOF) && !isReset(err) {
		t.Fatalf("idle connection: %v, want closed by the server", err)
	}
}

func isReset(err error) bool {
	return err != nil && strings.Contains(err.Error(), "connection reset")
}

// TestWildcardReplyLeavesFromRequestedAddress binds to the wildcard and
// sends to 127.0.0.2 from 127.0.0.1: without IP_PKTINFO the kernel would
// answer from 127.0.0.1 and a NAT in between would drop it.
func TestWildcardReplyLeavesFromRequestedAddress(t *testing.T) {
	if !udpio.PktinfoSupported {
		t.Skip("no IP_PKTINFO on this OS")
	}
	for _, listen := range []string{"0.0.0.0:0", "[::]:0"} {
		t.Run(listen, func(t *testing.T) {
			s := startServer(t, func(c *Config, _ *Options) { c.Listen = []string{listen}; c.TCP = false })
			port := udpAddr(s).Port()
			c, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.MustParseAddrPort("127.0.0.1:0")))
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			for _, dst := range []string{"127.0.0.2", "127.0.0.3", "127.0.0.1"} {
				to := netip.AddrPortFrom(netip.MustParseAddr(dst), port)
				req := stun.MustBuild(stun.TransactionID, stun.BindingRequest)
				if _, err := c.WriteToUDPAddrPort(req.Raw, to); err != nil {
					t.Fatal(err)
				}
				c.SetReadDeadline(time.Now().Add(deadline))
				buf := make([]byte, 1500)
				n, from, err := c.ReadFromUDPAddrPort(buf)
				if err != nil {
					t.Fatal(err)
				}
				if from != to {
					t.Errorf("sent to %v, answer came from %v", to, from)
				}
				if classify(buf[:n]) != kindOtherSTUN {
					t.Errorf("answer is not a STUN response")
				}
			}
		})
	}
}

// TestIPv4WildcardOpensNoIPv6: listen "0.0.0.0:P" is every IPv4
// address and nothing else (Go binds a dual-stack socket for it unless
// told IPv4): its UDP and TCP sockets are IPv4 sockets. ":P" takes both
// families: the same port on ::1 is then the server's. Judged by the
// sockets' own family, not by whether [::1]:P is free, which another
// process on the machine could make false.
func TestIPv4WildcardOpensNoIPv6(t *testing.T) {
	if c, err := net.ListenPacket("udp6", "[::1]:0"); err != nil {
		t.Skipf("no IPv6 loopback: %v", err)
	} else {
		c.Close()
	}
	for _, tc := range []struct {
		listen string
		want   netip.Addr // the sockets' local address
	}{{"0.0.0.0:0", netip.IPv4Unspecified()}, {":0", netip.IPv6Unspecified()}} {
		s := startServer(t, func(c *Config, _ *Options) { c.Listen = []string{tc.listen}; c.Sockets = 1 })
		udp := udpAddr(s).Addr()
		tcp := s.tcp[0].Addr().(*net.TCPAddr).AddrPort().Addr()
		if udp != tc.want || tcp != tc.want {
			t.Errorf("listen %q: sockets on udp %v, tcp %v, want %v", tc.listen, udp, tcp, tc.want)
		}
		if tc.want.Is6() {
			port := strconv.Itoa(int(udpAddr(s).Port()))
			if u, err := net.ListenPacket("udp6", "[::1]:"+port); err == nil {
				u.Close()
				t.Errorf("listen %q: [::1]:%s is free for UDP, want it the server's", tc.listen, port)
			}
			if l, err := net.Listen("tcp6", "[::1]:"+port); err == nil {
				l.Close()
				t.Errorf("listen %q: [::1]:%s is free for TCP, want it the server's", tc.listen, port)
			}
		}
		s.Close()
	}
}

// TestPassthroughHandsTURNToTheReader checks the contract with the TURN
// server: Bindings are answered on the shared socket, everything else comes
// out of ReadFrom, and replies written to that address leave from the
// address the client used.
func TestPassthroughHandsTURNToTheReader(t *testing.T) {
	s := startServer(t, func(c *Config, o *Options) {
		c.Listen = []string{"0.0.0.0:0"}
		c.Sockets = 1
		o.Passthrough = true
	})
	pc := s.PacketConns()[0]
	to := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.2"), udpAddr(s).Port())
	c, _ := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.MustParseAddrPort("127.0.0.1:0")))
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(deadline))

	binding := stun.MustBuild(stun.TransactionID, stun.BindingRequest)
	allocate := stun.MustBuild(stun.TransactionID, stun.NewType(stun.MethodAllocate, stun.ClassRequest))
	c.WriteToUDPAddrPort(binding.Raw, to)
	c.WriteToUDPAddrPort(allocate.Raw, to)

	pc.SetReadDeadline(time.Now().Add(deadline))
	buf := make([]byte, 1600)
	n, from, err := pc.ReadFrom(buf)
	if err != nil {
		t.Fatal(err)
	}
	if string(buf[:n]) != string(allocate.Raw) {
		t.Fatalf("reader got %x, want the allocate request", buf[:n])
	}
	if got, want := addrPortOf(from), addrPortOf(c.LocalAddr()); got != want {
		t.Errorf("from %v, want %v", got, want)
	}
	// The Binding was answered before ReadFrom returned.
	n, src, err := c.ReadFromUDPAddrPort(buf)
	if err != nil {
		t.Fatal(err)
	}
	if m := (&stun.Message{Raw: buf[:n]}); m.Decode() != nil || m.TransactionID != binding.TransactionID {
		t.Fatal("binding not answered")
	}
	// pion's reply goes out from 127.0.0.2 too.
	if _, err := pc.WriteTo([]byte("turn reply"), from); err != nil {
		t.Fatal(err)
	}
	n, src2, err := c.ReadFromUDPAddrPort(buf)
	if err != nil || string(buf[:n]) != "turn reply" {
		t.Fatalf("reply %q %v", buf[:n], err)
	}
	if src != to || src2 != to {
		t.Errorf("answers came from %v and %v, want %v", src, src2, to)
	}
	if got := testutil.ToFloat64(s.stats.udp[v4].passed); got != 1 {
		t.Errorf("passed = %v, want 1", got)
	}
}

// TestPassthroughNeedsTURNIdleTimeout: with a TURN server behind the
// port, how long an allocation's connection may stay quiet is the TURN
// server's to say; there is no default to fall back on unsaid.
func TestPassthroughNeedsTURNIdleTimeout(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Listen = []string{"127.0.0.1:0"}
	s, err := New(cfg, Options{Passthrough: true})
	if err == nil {
		s.Close()
		t.Fatal("New with Passthrough and no TURNIdleTimeout succeeded, want an error")
	}
	if !strings.Contains(err.Error(), "TURNIdleTimeout") {
		t.Errorf("err = %v, want it to name TURNIdleTimeout", err)
	}
}

func TestPortInUseSaysWhichPort(t *testing.T) {
	taken, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	cfg := DefaultConfig()
	cfg.Listen = []string{taken.LocalAddr().String()}
	for _, sockets := range []int{1, 2} {
		cfg.Sockets = sockets
		_, err = New(cfg, Options{})
		port := taken.LocalAddr().(*net.UDPAddr).Port
		if err == nil || !strings.Contains(err.Error(), "udp port "+itoa(port)+" is already in use") || !strings.Contains(err.Error(), "coturn") {
			t.Errorf("sockets=%d: err = %v, want it to name udp port %d and suggest who holds it", sockets, err, port)
		}
	}
}

func itoa(i int) string { return netip.AddrPortFrom(netip.IPv4Unspecified(), uint16(i)).String()[8:] }

func TestUDPReadAndAnswerAllocatesNothing(t *testing.T) {
	for _, listen := range []string{"0.0.0.0:0", "127.0.0.1:0"} {
		t.Run(listen, func(t *testing.T) {
			s := startServer(t, func(c *Config, _ *Options) { c.Listen = []string{listen}; c.Sockets = 1; c.TCP = false })
			c, _ := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.MustParseAddrPort("127.0.0.1:0")))
			defer c.Close()
			to := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), udpAddr(s).Port())
			req := stun.MustBuild(stun.TransactionID, stun.BindingRequest, stun.Fingerprint).Raw
			out := make([]byte, 1500)
			c.SetReadDeadline(time.Now().Add(deadline))
			// AllocsPerRun counts every goroutine's allocations, so this
			// covers the server's reader as well as the client.
			allocs := testing.AllocsPerRun(200, func() {
				c.WriteToUDPAddrPort(req, to)
				if _, _, err := c.ReadFromUDPAddrPort(out); err != nil {
					t.Fatal(err)
				}
			})
			if allocs != 0 {
				t.Errorf("one Binding round trip allocates %v times", allocs)
			}
		})
	}
}

// TestPassthroughReadAllocatesNothing: a relayed packet from a known TURN
// client reaches pion's reader without an allocation in the front door.
func TestPassthroughReadAllocatesNothing(t *testing.T) {
	for _, listen := range []string{"0.0.0.0:0", "127.0.0.1:0"} {
		t.Run(listen, func(t *testing.T) {
			s := startServer(t, func(c *Config, o *Options) {
				c.Listen = []string{listen}
				c.Sockets = 1
				c.TCP = false
				o.Passthrough = true
			})
			pc := s.PacketConns()[0]
			to := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), udpAddr(s).Port())
			c, _ := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.MustParseAddrPort("127.0.0.1:0")))
			defer c.Close()
			channelData := append([]byte{0x40, 0x00, 0x00, 0xA0}, make([]byte, 160)...)
			buf := make([]byte, 1600)
			pc.SetReadDeadline(time.Now().Add(deadline))
			var first net.Addr
			allocs := testing.AllocsPerRun(200, func() {
				c.WriteToUDPAddrPort(channelData, to)
				n, from, err := pc.ReadFrom(buf)
				if err != nil || n != len(channelData) {
					t.Fatalf("read %d, %v", n, err)
				}
				if first == nil {
					first = from
				}
			})
			if allocs != 0 {
				t.Errorf("a ChannelData packet through the front door allocates %v times", allocs)
			}
			if got, want := addrPortOf(first), addrPortOf(c.LocalAddr()); got != want {
				t.Errorf("from %v, want %v", got, want)
			}
		})
	}
}

// TestBatchedAnswersReachEveryClient fires requests from many sockets at
// once, so that one recvmmsg returns several datagrams and one sendmmsg
// carries several answers: each must reach its own sender.
func TestBatchedAnswersReachEveryClient(t *testing.T) {
	for _, listen := range []string{"127.0.0.1:0", "[::]:0"} {
		t.Run(listen, func(t *testing.T) {
			s := startServer(t, func(c *Config, _ *Options) { c.Listen = []string{listen}; c.Sockets = 1; c.TCP = false })
			to := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), udpAddr(s).Port())
			cl := newBindingClients(t, 16)
			const perClient = 8
			for range perClient {
				cl.sendRound(t, to)
			}
			cl.wantEveryAnswer(t, to)
		})
	}
}

// bindingClients are UDP clients on 127.0.0.1 that send Binding requests
// and check that each gets the answers to its own.
type bindingClients struct {
	conns []*net.UDPConn
	sent  map[[12]byte]int // transaction ID: index of the client that sent it
	each  int              // requests each client sent
}

func newBindingClients(t *testing.T, n int) *bindingClients {
	t.Helper()
	cl := &bindingClients{sent: make(map[[12]byte]int)}
	for range n {
		c, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.MustParseAddrPort("127.0.0.1:0")))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		cl.conns = append(cl.conns, c)
	}
	return cl
}

// sendRound sends one Binding request from each client to to.
func (cl *bindingClients) sendRound(t *testing.T, to netip.AddrPort) {
	t.Helper()
	for i, c := range cl.conns {
		m := stun.MustBuild(stun.TransactionID, stun.BindingRequest)
		cl.sent[m.TransactionID] = i
		if _, err := c.WriteToUDPAddrPort(m.Raw, to); err != nil {
			t.Fatal(err)
		}
	}
	cl.each++
}

// wantEveryAnswer reads each client's answers: every request must be
// answered, from to, to the client that sent it, with its own address.
func (cl *bindingClients) wantEveryAnswer(t *testing.T, to netip.AddrPort) {
	t.Helper()
	buf := make([]byte, 1500)
	for i, c := range cl.conns {
		c.SetReadDeadline(time.Now().Add(deadline))
		for j := range cl.each {
			n, from, err := c.ReadFromUDPAddrPort(buf)
			if err != nil {
				t.Fatalf("client %d got %d of its %d answers: %v", i, j, cl.each, err)
			}
			m := &stun.Message{Raw: buf[:n]}
			if err := m.Decode(); err != nil {
				t.Fatal(err)
			}
			var xor stun.XORMappedAddress
			xor.GetFrom(m)
			if owner, ok := cl.sent[m.TransactionID]; !ok || owner != i || xor.Port != c.LocalAddr().(*net.UDPAddr).Port || from != to {
				t.Fatalf("client %d got an answer meant for %d (mapped port %d, from %v)", i, owner, xor.Port, from)
			}
			delete(cl.sent, m.TransactionID)
		}
	}
	if len(cl.sent) != 0 {
		t.Errorf("%d requests unanswered", len(cl.sent))
	}
}

func BenchmarkUDPBinding(b *testing.B) {
	cfg := DefaultConfig()
	cfg.Listen = []string{"127.0.0.1:0"}
	cfg.Sockets = 1
	s, err := New(cfg, Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	c, _ := net.DialUDP("udp4", nil, net.UDPAddrFromAddrPort(udpAddr(s)))
	defer c.Close()
	req := stun.MustBuild(stun.TransactionID, stun.BindingRequest).Raw
	buf := make([]byte, 1500)
	c.SetReadDeadline(time.Now().Add(time.Minute))
	b.ReportAllocs()
	for b.Loop() {
		c.Write(req)
		if _, err := c.Read(buf); err != nil {
			b.Fatal(err)
		}
	}
}

// TestTCPClientThatNeverReadsIsClosed: a client that sends Binding after
// Binding over TCP and never reads the answers fills the socket buffers
// between them; the answer write that then waits is given up after
// streamWriteTimeout and the connection closed, instead of holding its
// goroutine and connection slot for good. Another client's Bindings are
// answered all along.
func TestTCPClientThatNeverReadsIsClosed(t *testing.T) {
	if testing.Short() {
		t.Skip("waits out the 10s stream write timeout")
	}
	s := startServer(t, func(c *Config, _ *Options) { c.TCPIdleTimeout = time.Hour })
	addr := udpAddr(s).String()
	greedy, err := net.DialTimeout("tcp4", addr, deadline)
	if err != nil {
		t.Fatal(err)
	}
	defer greedy.Close()
	req := stun.MustBuild(stun.TransactionID, stun.BindingRequest).Raw
	flood := bytes.Repeat(req, 1000)
	sent := make(chan error, 1)
	go func() {
		for {
			if _, err := greedy.Write(flood); err != nil {
				sent <- err // the server closed the connection
				return
			}
		}
	}()
	c := tcpClient(t, addr)
	doBinding(t, c)
	select {
	case <-sent:
	case <-time.After(streamWriteTimeout + time.Minute): // guards against hanging only
		t.Fatal("the server never closed the client that stopped reading")
	}
	doBinding(t, c) // the legitimate client's connection stays
	if got := testutil.ToFloat64(s.stats.tcpConns); got != 1 {
		t.Errorf("%v TCP connections, want only the legitimate client's", got)
	}
}

// TestTCPFrameLargerThanTheBufferIsRefused: a well-formed Binding request
// as large as the read buffer is answered; one a word larger (up to 64 KiB
// would once make its connection hold a 64 KiB buffer for life) is counted
// as malformed and its connection closed, while another client's Binding
// is answered.
func TestTCPFrameLargerThanTheBufferIsRefused(t *testing.T) {
	s := startServer(t, nil)
	addr := udpAddr(s).String()
	// A Binding request of size bytes: the header, and one attribute.
	binding := func(size int) []byte {
		return stun.MustBuild(stun.TransactionID, stun.BindingRequest,
			stun.RawAttribute{Type: stun.AttrSoftware, Value: make([]byte, size-stunwire.HeaderSize-4)}).Raw
	}
	conn, err := net.DialTimeout("tcp4", addr, deadline)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetReadDeadline(time.Now().Add(deadline))
	// The largest frame taken is answered...
	if _, err := conn.Write(binding(readBufferSize)); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(conn, make([]byte, stunwire.HeaderSize)); err != nil {
		t.Fatalf("a %d-byte Binding request: %v, want an answer", readBufferSize, err)
	}
	// ...and one a word larger ends the connection.
	if _, err := conn.Write(binding(readBufferSize + 4)); err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(io.Discard, conn); err != nil && !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("after a %d-byte frame: %v; want the connection closed", readBufferSize+4, err)
	}
	if got := testutil.ToFloat64(s.stats.tcp[v4].malformed); got != 1 {
		t.Errorf("malformed TCP frames %v, want 1", got)
	}
	c := tcpClient(t, addr)
	doBinding(t, c)
}

// tcpClient is a STUN client over a TCP connection to addr, closed when the
// test ends.
func tcpClient(t *testing.T, addr string) *stun.Client {
	t.Helper()
	conn, err := net.DialTimeout("tcp4", addr, deadline)
	if err != nil {
		t.Fatal(err)
	}
	c, err := stun.NewClient(conn)
	if err != nil {
		conn.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}
