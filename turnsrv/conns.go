package turnsrv

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/pion/turn/v4"
)

// packetConn is a client-facing UDP socket as pion sees it: every datagram
// passes inspect first. ChannelData, the bulk of the traffic, is told apart
// by its first byte and passed straight through.
type packetConn struct {
	net.PacketConn
	s      *Server
	closer onceCloser
}

func (c *packetConn) ReadFrom(p []byte) (int, net.Addr, error) {
	for {
		n, addr, err := c.PacketConn.ReadFrom(p)
		if err != nil || n == 0 || p[0]&0xC0 != 0 || c.s.inspect(p[:n], addr) {
			return n, addr, err
		}
	}
}

// Close is idempotent: the socket may be shared with stunsrv, which closes
// it too.
func (c *packetConn) Close() error { return c.closer.close(c.PacketConn.Close) }

// onceCloser makes Close idempotent and quiet about what is already closed.
type onceCloser struct {
	once sync.Once
	err  error
}

func (o *onceCloser) close(f func() error) error {
	o.once.Do(func() {
		if err := f(); err != nil && !errors.Is(err, net.ErrClosed) {
			o.err = err
		}
	})
	return o.err
}

// streamListener hands pion TCP or TLS connections that deliver one whole
// TURN frame per Read, after inspect, and that Close tracks so Server.Close
// can end them: pion closes listeners but not the connections it accepted.
type streamListener struct {
	net.Listener
	s      *Server
	closer onceCloser
}

func (l *streamListener) Close() error { return l.closer.close(l.Listener.Close) }

// idleTimeout ends a stream connection that sends nothing for this long.
// Any live allocation refreshes its permissions every 5 minutes and itself
// within its lifetime of at most an hour; 10 minutes of silence leaves a
// margin over the former and still frees abandoned connections.
const idleTimeout = 10 * time.Minute

func (l *streamListener) Accept() (net.Conn, error) {
	delay := time.Duration(0)
	for {
		c, err := l.Listener.Accept()
		if err == nil {
			fc := &frameConn{Conn: c, s: l.s}
			if _, framed := c.(frontDoorConn); !framed {
				fc.r = bufio.NewReaderSize(c, 2048)
			}
			if !l.s.trackConn(fc, true) {
				c.Close()
				return nil, net.ErrClosed
			}
			return fc, nil
		}
		if errors.Is(err, net.ErrClosed) {
			return nil, err
		}
		// pion stops accepting for good on any error; out of file
		// descriptors is worth waiting out instead, as net/http does.
		delay = min(max(2*delay, 5*time.Millisecond), time.Second)
		l.s.log.Warn("turn: accept failed; retrying", "listener", l.Addr(), "err", err, "in", delay)
		time.Sleep(delay)
	}
}

var errFrame = errors.New("turn: not a STUN or ChannelData frame")

// frontDoorConn is a stream connection from stunsrv's front door: it
// already delivers one whole frame per Read, within its own idle timeouts,
// and wants to know when it holds an allocation.
type frontDoorConn interface {
	net.Conn
	SetAllocated(held bool)
}

// frameConn passes each frame of a TURN stream through inspect. A
// connection from the front door is framed there; any other is reframed
// here (RFC 5766 section 11.5), so that each Read returns exactly one STUN
// message or ChannelData message.
type frameConn struct {
	net.Conn
	r      *bufio.Reader // nil for front door connections
	s      *Server
	closer onceCloser
}

func (c *frameConn) frontDoorConn() (frontDoorConn, bool) {
	if c == nil {
		return nil, false
	}
	fd, ok := c.Conn.(frontDoorConn)
	return fd, ok
}

func (c *frameConn) Read(p []byte) (int, error) {
	for {
		var n int
		var err error
		if c.r == nil {
			n, err = c.Conn.Read(p)
		} else {
			if err := c.Conn.SetReadDeadline(time.Now().Add(idleTimeout)); err != nil {
				return 0, err
			}
			n, err = c.readFrame(p)
		}
		if err != nil {
			return 0, err
		}
		if p[0]&0xC0 != 0 || c.s.inspect(p[:n], c.RemoteAddr()) {
			return n, nil
		}
	}
}

func (c *frameConn) readFrame(p []byte) (int, error) {
	h, err := c.r.Peek(4)
	if err != nil {
		return 0, err
	}
	var n int
	switch h[0] >> 6 {
	case 0: // STUN
		n = stunHeaderLen + int(binary.BigEndian.Uint16(h[2:4]))
	case 1: // ChannelData, padded to 4 bytes over streams
		n = 4 + (int(binary.BigEndian.Uint16(h[2:4]))+3)&^3
	default:
		return 0, errFrame
	}
	if n > len(p) {
		return 0, fmt.Errorf("turn: %d-byte frame from %s exceeds %d bytes", n, c.RemoteAddr(), len(p))
	}
	return io.ReadFull(c.r, p[:n])
}

func (c *frameConn) Close() error {
	return c.closer.close(func() error {
		c.s.trackConn(c, false)
		return c.Conn.Close()
	})
}

// relayGenerator allocates relay sockets in the configured port range,
// through pion's own generator, and wraps them in relayConn.
type relayGenerator struct {
	s     *Server
	inner *turn.RelayAddressGeneratorPortRange
}

func (g *relayGenerator) Validate() error { return g.inner.Validate() }

func (g *relayGenerator) AllocatePacketConn(network string, requestedPort int) (net.PacketConn, net.Addr, error) {
	conn, addr, err := g.inner.AllocatePacketConn(network, requestedPort)
	if err != nil {
		return nil, nil, fmt.Errorf("turn: allocating relay port in %d-%d: %w", g.inner.MinPort, g.inner.MaxPort, err)
	}
	ua, ok := addr.(*net.UDPAddr)
	if !ok {
		conn.Close()
		return nil, nil, fmt.Errorf("turn: relay address %v is not UDP", addr)
	}
	g.s.relayPorts.add(ua.Port)
	return &relayConn{PacketConn: conn, s: g.s, port: ua.Port}, addr, nil
}

func (g *relayGenerator) AllocateConn(string, int) (net.Conn, net.Addr, error) {
	return nil, nil, errors.New("turn: TCP relays (RFC 6062) are not supported")
}

var errRelayPort = errors.New("turn: peer is this server's relay address but not a live relay port")

// relayConn is one allocation's relay socket. It counts relayed traffic and
// enforces the part of the peer policy that needs the port: a permission
// for the relay address itself reaches only other relays.
type relayConn struct {
	net.PacketConn
	s      *Server
	port   int
	closer onceCloser
}

func (c *relayConn) ReadFrom(p []byte) (int, net.Addr, error) {
	n, addr, err := c.PacketConn.ReadFrom(p)
	if err == nil {
		c.s.metrics.fromPeerBytes.Add(float64(n))
		c.s.metrics.fromPeerPackets.Inc()
	}
	return n, addr, err
}

func (c *relayConn) WriteTo(p []byte, addr net.Addr) (int, error) {
	if ua, ok := addr.(*net.UDPAddr); ok && c.s.toRelayRefused(ua) {
		c.s.metrics.peerRefusals[refuseRelayPort].Inc()
		return 0, errRelayPort
	}
	n, err := c.PacketConn.WriteTo(p, addr)
	if err == nil {
		c.s.metrics.toPeerBytes.Add(float64(n))
		c.s.metrics.toPeerPackets.Inc()
	}
	return n, err
}

func (c *relayConn) Close() error {
	return c.closer.close(func() error {
		c.s.relayPorts.del(c.port)
		return c.PacketConn.Close()
	})
}

// toRelayRefused reports whether a packet to dst aims at the relay address
// but at a port no relay holds: the TURN port, SSH, anything else on the
// host that listens on the public address.
func (s *Server) toRelayRefused(dst *net.UDPAddr) bool {
	a, ok := netip.AddrFromSlice(dst.IP)
	if !ok {
		return false
	}
	a = a.Unmap()
	p := s.live.Load().policy
	return p.isRelay(a) && !s.relayPorts.has(dst.Port) && !p.allowed(a)
}
