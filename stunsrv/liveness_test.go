package stunsrv

import (
	"crypto/tls"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/pion/stun/v3"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"icebox/internal/testenv"
)

// waitUntil waits for a state to be reached; it never paces the test.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	testenv.WaitFor(t, deadline, what, cond)
}

// TestReadLoopSurvivesReadErrors makes the real sockets' reads fail (a
// read deadline in the past fails every read with a timeout) and checks
// that the loops count the errors, keep going, and answer again once the
// sockets read again, over UDP and TCP.
func TestReadLoopSurvivesReadErrors(t *testing.T) {
	s := startServer(t, func(c *Config, _ *Options) { c.Sockets = 1 })
	ln := s.tcp[0].Listener.(*net.TCPListener)
	s.udp[0].SetReadDeadline(time.Now())
	ln.SetDeadline(time.Now())
	waitUntil(t, "both loops saw read errors", func() bool {
		return testutil.ToFloat64(s.stats.readErrors) >= 4
	})
	if err := s.Alive(); err != nil {
		t.Errorf("Alive while reads fail: %v", err)
	}
	s.udp[0].SetReadDeadline(time.Time{})
	ln.SetDeadline(time.Time{})
	for _, network := range []string{"udp", "tcp"} {
		if mapped, local := bindWithPion(t, network, udpAddr(s).String()); mapped != local {
			t.Errorf("%s: mapped %v, want %v", network, mapped, local)
		}
	}
}

// TestAliveSeesAStuckReader: a TURN reader that takes a packet and never
// comes back for the next one makes Alive fail once the packet is older
// than stuckAfter; a reader waiting for packets is alive however long it
// waits.
func TestAliveSeesAStuckReader(t *testing.T) {
	s := startServer(t, func(c *Config, o *Options) {
		c.Sockets = 1
		c.TCP = false
		o.Passthrough = true
	})
	if err := s.Alive(); err != nil {
		t.Fatalf("fresh server: %v", err)
	}
	s.skew.Add(int64(stuckAfter + time.Second))
	if err := s.Alive(); err == nil {
		t.Fatal("Alive with nobody ever reading the TURN socket")
	}
	got := make(chan []byte)
	pc := s.PacketConns()[0]
	go func() {
		buf := make([]byte, 1600)
		n, _, err := pc.ReadFrom(buf)
		if err == nil {
			got <- buf[:n]
		}
	}()
	waitUntil(t, "the reader waits", func() bool { return s.Alive() == nil })
	s.skew.Add(int64(time.Hour)) // waiting is not being stuck
	if err := s.Alive(); err != nil {
		t.Fatalf("reader waiting for an hour: %v", err)
	}

	c, err := net.DialUDP("udp4", nil, net.UDPAddrFromAddrPort(udpAddr(s)))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Write(stun.MustBuild(stun.TransactionID, stun.NewType(stun.MethodAllocate, stun.ClassRequest)).Raw)
	select {
	case <-got:
	case <-time.After(deadline):
		t.Fatal("allocate not handed to the reader")
	}
	if err := s.Alive(); err != nil {
		t.Fatalf("reader just took a packet: %v", err)
	}
	s.skew.Add(int64(stuckAfter + time.Second))
	if err := s.Alive(); err == nil || !strings.Contains(err.Error(), "busy") {
		t.Fatalf("Alive = %v, want the stuck reader reported", err)
	}
}

// TestAliveSeesExtraListeners: the listeners AddListener adds (TURN's TLS
// port, the shared :443) count for Alive like the STUN port's: one nobody
// accepts from is reported once stuckAfter has passed, by name, and is
// alive once its reader waits. With TLS the accepting loop and the
// hand-off to the reader are watched apart.
func TestAliveSeesExtraListeners(t *testing.T) {
	for _, tc := range []struct {
		name string
		tls  *tls.Config
		want string
	}{
		{"plain", nil, "tcp 127.0.0.1:"},
		{"tls", &tls.Config{}, "hand-off"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := startServer(t, func(c *Config, o *Options) {
				c.Sockets = 1
				c.TCP = false
				o.Passthrough = true
			})
			go func() { // the STUN port's reader, so that only the extra listener is missing one
				buf := make([]byte, 1600)
				for {
					if _, _, err := s.PacketConns()[0].ReadFrom(buf); err != nil {
						return
					}
				}
			}()
			raw, err := net.Listen("tcp4", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			ln := s.AddListener(raw, tc.tls)
			waitUntil(t, "the STUN port's reader waits", func() bool {
				s.skew.Add(int64(stuckAfter + time.Second))
				err := s.Alive()
				return err != nil && !strings.Contains(err.Error(), "udp")
			})
			if err := s.Alive(); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Alive = %v, want the extra listener without a reader reported (%q)", err, tc.want)
			}
			go ln.Accept()
			waitUntil(t, "the extra listener's reader waits", func() bool { return s.Alive() == nil })
			s.skew.Add(int64(time.Hour))
			if err := s.Alive(); err != nil {
				t.Fatalf("readers waiting for an hour: %v", err)
			}
		})
	}
}

// TestAddListenerServesAnExtraListener: connections from a listener handed
// over later (a :443 demultiplexer's, TLS already terminated) get Binding
// answers, framing and the shared per-source cap.
func TestAddListenerServesAnExtraListener(t *testing.T) {
	s := startServer(t, func(c *Config, o *Options) {
		c.MaxTCPConnectionsPerSource = 2
		o.Passthrough = true
	})
	raw, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln := s.AddListener(raw, nil)
	frames := make(chan []byte, 1)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				buf := make([]byte, 1600)
				defer c.Close()
				for {
					n, err := c.Read(buf)
					if err != nil {
						return
					}
					frames <- append([]byte(nil), buf[:n]...)
				}
			}()
		}
	}()

	// Two connections use up 127.0.0.1's share: one asks a Binding, the
	// other sends TURN.
	first, err := net.Dial("tcp4", raw.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	client, err := stun.NewClient(first)
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	if mapped := doBinding(t, client); mapped != addrPortOf(first.LocalAddr()) {
		t.Errorf("mapped %v, want %v", mapped, first.LocalAddr())
	}
	c, err := net.Dial("tcp4", raw.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	allocate := stun.MustBuild(stun.TransactionID, stun.NewType(stun.MethodAllocate, stun.ClassRequest))
	c.Write(allocate.Raw)
	select {
	case got := <-frames:
		if string(got) != string(allocate.Raw) {
			t.Fatalf("reader got %x, want the allocate request", got)
		}
	case <-time.After(deadline):
		t.Fatal("allocate not handed to the reader")
	}
	third, err := net.Dial("tcp4", raw.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer third.Close()
	third.SetReadDeadline(time.Now().Add(deadline))
	if _, err := third.Read(make([]byte, 1)); !errors.Is(err, io.EOF) && !isReset(err) {
		t.Fatalf("third connection from one source: %v, want closed at once", err)
	}
	if got := testutil.ToFloat64(s.stats.tcpRefused[refusePerSource]); got != 1 {
		t.Errorf("refused per source = %v, want 1", got)
	}
}
