package turnsrv

import (
	crand "crypto/rand"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/pion/turn/v4"

	"icebox/internal/stunwire"
	"icebox/internal/udpio"
	"icebox/stunsrv"
)

// packetConn is a client-facing UDP socket as pion sees it: every datagram
// passes inspect first. ChannelData, the bulk of the traffic, is told apart
// by its first byte and passed straight through.
type packetConn struct {
	net.PacketConn
	s      *Server
	closer onceCloser
	key    keyOwner // used by the one goroutine pion reads with
	// fast relays client datagrams from the front door's buffers, where
	// the front door allows; set by the reading goroutine on its first read.
	fast *clientFast
}

// clientFast is the data plane's client side of one front door socket,
// used by its reading goroutine: it relays ChannelData and Send
// indications in place and sends a read's datagrams to peers in batches.
type clientFast struct {
	dp     *dataPlane
	snd    *peerSender
	stream bool // a TCP or TLS connection's
}

func (f *clientFast) Relay(msg []byte, from netip.AddrPort) bool {
	if len(msg) < 4 {
		return false
	}
	id := connID{src: from, stream: f.stream}
	switch msg[0] >> 6 {
	case 1:
		return f.dp.fromClient(msg, id, f.snd)
	case 0:
		return f.dp.fromSend(msg, id, f.snd)
	}
	return false
}

func (f *clientFast) Flush() { f.snd.flush() }

// offered reports whether the front door offers every ChannelData message
// and STUN message to the fast path (Relay) before its reader returns it:
// then the reader gets only what the data plane already declined, and
// need not parse it again.
func (f *clientFast) offered() bool { return f != nil && f.snd != nil }

func (c *packetConn) ReadFrom(p []byte) (int, net.Addr, error) {
	if c.fast == nil {
		c.fast = c.s.newClientFast(c.PacketConn, false)
	}
	for {
		n, addr, err := c.PacketConn.ReadFrom(p)
		if err != nil || n < 4 {
			return n, addr, err
		}
		if c.s.forPion(p[:n], connIDOf(addr), addr, c, c.fast) {
			return n, addr, nil
		}
	}
}

// newClientFast makes the data plane's client side of conn, one of the
// front door's sockets or connections, relaying in the front door's
// reader where the front door offers that (stunsrv.SetFastPath).
func (s *Server) newClientFast(conn any, stream bool) *clientFast {
	f := &clientFast{dp: s.dp, snd: newPeerSender(s.metrics), stream: stream}
	if f.snd.w == nil || !stunsrv.SetFastPath(conn, f) {
		f.snd = nil
	}
	return f
}

// forPion reports whether pion gets msg, which a client sent: the data
// plane relays the ChannelData and Send indications it knows (unless the
// front door offered them to it already), inspect answers the requests it
// refuses, and the data plane notes the requests pion is to answer.
func (s *Server) forPion(msg []byte, id connID, from net.Addr, t transport, f *clientFast) bool {
	offered := f.offered()
	switch msg[0] >> 6 {
	case 1: // ChannelData: the data plane's, unless it does not know the channel
		return offered || !s.dp.fromClient(msg, id, nil)
	case 0:
		if (!offered && s.dp.fromSend(msg, id, nil)) || !s.inspect(msg, from, t) {
			return false
		}
		s.dp.noteRequest(msg, id)
	}
	return true
}

func (c *packetConn) reply(b []byte, to net.Addr) { c.PacketConn.WriteTo(b, to) }
func (c *packetConn) keyOwner() *keyOwner         { return &c.key }

// WriteTo sends pion's answers and Data indications; the data plane
// learns what pion granted from the success answers.
func (c *packetConn) WriteTo(p []byte, addr net.Addr) (int, error) {
	if len(p) >= stunwire.HeaderSize && p[0]&0xC0 == 0 {
		if ua, ok := addr.(*net.UDPAddr); ok {
			c.s.dp.noteResponse(p, connIDOf(ua), clientOut{udp: c.PacketConn, to: ua, toAP: ua.AddrPort()})
		}
	}
	return c.PacketConn.WriteTo(p, addr)
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

// Accept hands pion the front door's next connection. The front door's
// Accept fails only once it is closed: it waits out other errors itself.
func (l *streamListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if _, framed := c.(frontDoorConn); !framed {
			// Options.Listeners and FrontDoor say where they come from.
			l.s.log.Error("turn: a stream connection that is not the STUN front door's; closed", "listener", l.Addr())
			c.Close()
			continue
		}
		fc := &frameConn{Conn: c, s: l.s, id: connIDOf(c.RemoteAddr())}
		if !l.s.trackConn(fc, true) {
			c.Close()
			return nil, net.ErrClosed
		}
		return fc, nil
	}
}

// frontDoorConn is a stream connection from stunsrv's front door: it
// already delivers one whole frame per Read, within its own idle timeouts,
// and wants to know when it holds an allocation.
type frontDoorConn interface {
	net.Conn
	SetAllocated(held bool)
}

// frameConn passes each frame of a TURN stream, which the front door has
// framed (one STUN or ChannelData message per Read), through inspect.
type frameConn struct {
	net.Conn
	id     connID
	s      *Server
	closer onceCloser
	key    keyOwner
	fast   *clientFast // as packetConn's
}

func (c *frameConn) reply(b []byte, _ net.Addr) { c.Conn.Write(b) }
func (c *frameConn) keyOwner() *keyOwner        { return &c.key }

func (c *frameConn) frontDoorConn() (frontDoorConn, bool) {
	if c == nil {
		return nil, false
	}
	fd, ok := c.Conn.(frontDoorConn)
	return fd, ok
}

func (c *frameConn) Read(p []byte) (int, error) {
	if c.fast == nil {
		c.fast = c.s.newClientFast(c.Conn, true)
	}
	for {
		n, err := c.Conn.Read(p)
		if err != nil {
			return 0, err
		}
		if n < 4 {
			return n, nil
		}
		if c.s.forPion(p[:n], c.id, c.RemoteAddr(), c, c.fast) {
			return n, nil
		}
	}
}

// Write sends pion's answers; the data plane learns from the successes.
func (c *frameConn) Write(p []byte) (int, error) {
	if len(p) >= stunwire.HeaderSize && p[0]&0xC0 == 0 {
		c.s.dp.noteResponse(p, c.id, clientOut{stream: c})
	}
	return c.Conn.Write(p)
}

func (c *frameConn) Close() error {
	return c.closer.close(func() error {
		c.s.trackConn(c, false)
		c.s.keys.drop(&c.key)
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
	var conn net.PacketConn
	var addr net.Addr
	var err error
	if requestedPort != 0 {
		conn, addr, err = g.inner.AllocatePacketConn(network, requestedPort)
	} else {
		conn, addr, err = g.freePort(network)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("turn: allocating relay port in %d-%d: %w", g.inner.MinPort, g.inner.MaxPort, err)
	}
	ua, ok := addr.(*net.UDPAddr)
	if !ok {
		conn.Close()
		return nil, nil, fmt.Errorf("turn: relay address %v is not UDP", addr)
	}
	g.s.relayPorts.add(ua.Port)
	rc := &relayConn{PacketConn: conn, s: g.s, port: ua.Port}
	// The data plane takes IPv4 relay sockets only, as pion asks for
	// (allocation.Manager opens "udp4"; inspect answers 443 for IPv6
	// peers): it builds IPv4 Data indications and sends to IPv4 peers.
	// Anything else stays pion's alone.
	if udp, ok := conn.(*net.UDPConn); ok && network == "udp4" {
		rc.initDataPlane(udp)
		g.s.dp.relayOpened(ua.Port, rc)
	}
	return rc, addr, nil
}

// maxBindFailures bounds the binds one allocation tries on ports no relay
// of ours holds (something else on the host may hold them).
const maxBindFailures = 32

// freePort binds a relay socket on a port of the range that no relay holds,
// starting at a random one and going round: pion's generator tries 10
// random ports, so in a small range it failed (508) long before the range
// was full.
func (g *relayGenerator) freePort(network string) (net.PacketConn, net.Addr, error) {
	lo, hi := int(g.inner.MinPort), int(g.inner.MaxPort)
	n := hi - lo + 1
	start := rand.IntN(n)
	failures := 0
	for i := range n {
		port := lo + (start+i)%n
		if g.s.relayPorts.has(port) {
			continue
		}
		conn, err := net.ListenPacket(network, net.JoinHostPort(g.inner.Address, strconv.Itoa(port)))
		if err != nil {
			if failures++; failures >= maxBindFailures {
				return nil, nil, err
			}
			continue
		}
		addr := *conn.LocalAddr().(*net.UDPAddr)
		addr.IP = g.inner.RelayAddress
		return conn, &addr, nil
	}
	return nil, nil, errors.New("every port is in use")
}

// AllocateConn completes pion's RelayAddressGenerator interface, which
// requires it. pion/turn v4 never calls it (it stores it in its allocation
// manager's config and nothing reads it there): TCP relays (RFC 6062) are
// served by neither.
func (g *relayGenerator) AllocateConn(string, int) (net.Conn, net.Addr, error) {
	return nil, nil, errors.New("turn: TCP relays (RFC 6062) are not supported")
}

var (
	errRelayPort   = errors.New("turn: peer is this server's relay address but not a live relay port")
	errPeerRefused = errors.New("turn: the peer policy refuses this peer")
)

// relayConn is one allocation's relay socket. It counts relayed traffic and
// enforces the part of the peer policy that needs the port: a permission
// for the relay address itself reaches only other relays.
type relayConn struct {
	net.PacketConn
	s      *Server
	port   int
	closer onceCloser

	// The data plane's: the socket itself, the allocation it serves once
	// pion reports it, how it is read (several datagrams per syscall where
	// the OS allows) and, for a stream client, frames queued to go out in
	// one write.
	udp     *net.UDPConn
	raw     syscall.RawConn // udp's, for batched sends to peers; nil if none
	alloc   atomic.Pointer[dpAlloc]
	batch   *udpio.Reader // nil: one datagram per read, into buf
	serveFn func() bool   // c.serve, made once
	// A datagram of the batch that is pion's, where serve stopped.
	held     []byte
	heldN    int
	heldFrom netip.AddrPort
	buf      []byte
	wbuf     []byte
	wstream  net.Conn
	wcount   int
	// For a UDP client, the datagrams of one read go out in one sendmmsg
	// on the client's front door socket.
	bw      *stunsrv.BatchWriter
	bwFor   net.PacketConn
	backoff time.Duration
	// txid draws Data indications' transaction IDs (a CSPRNG seeded once,
	// so that a datagram costs no getrandom call).
	txid *rand.ChaCha8
	// The allocation's bandwidth, each way (quotas.bytes_per_second).
	toPeerGate, fromPeerGate rateGate
}

// rtpMTU is the largest datagram pion reads from a relay socket.
const rtpMTU = 1600

// Room the data plane keeps around a datagram read from a peer: a
// ChannelData header or a Data indication's headers (the larger) before
// it, padding after it. Relay sockets are IPv4, so are their peers.
const (
	headroom = dataIndicationHead4
	tailroom = 3
)

// maxStreamBatch bounds the frames queued for one stream write.
const maxStreamBatch = 16 << 10

// relayBatch is how many datagrams one read of a relay socket takes at
// most: a peer's burst (a video frame) comes in one syscall. The buffers
// (2 KiB each) are taken only once the relay carries a channel, so idle
// allocations cost no more than pion's own buffer.
const relayBatch = 8

// relaySocketBuffer is each relay socket's receive and send buffer: a
// video frame's burst from a peer queues instead of dropping. Memory is
// only used while datagrams queue.
const relaySocketBuffer = 1 << 20

func (c *relayConn) initDataPlane(udp *net.UDPConn) {
	c.udp = udp
	udp.SetReadBuffer(relaySocketBuffer)
	udp.SetWriteBuffer(relaySocketBuffer)
	c.buf = make([]byte, headroom+rtpMTU+tailroom)
	if raw, err := udp.SyscallConn(); err == nil {
		c.raw = raw
	}
	var seed [32]byte
	crand.Read(seed[:])
	c.txid = rand.NewChaCha8(seed)
}

// batchReads switches to reading several datagrams per syscall, between
// two reads (nothing is left in buf).
func (c *relayConn) batchReads() {
	if c.raw == nil {
		return
	}
	if b, err := udpio.NewReader(c.raw, headroom, rtpMTU, tailroom, relayBatch); err == nil {
		c.batch, c.buf = b, nil
		c.serveFn = c.serve
	}
}

// ReadFrom is pion's read of the relay socket (pion's only reader of it).
// A datagram from a peer on a channel the data plane knows goes straight
// to the client as ChannelData; the rest is returned to pion, from peers
// the current policy allows. Read errors other than a closed socket are
// retried: pion would end the allocation.
func (c *relayConn) ReadFrom(p []byte) (int, net.Addr, error) {
	if c.udp == nil {
		n, addr, err := c.PacketConn.ReadFrom(p)
		if err == nil {
			c.s.metrics.fromPeerBytes.Add(float64(n))
			c.s.metrics.fromPeerPackets.Inc()
		}
		return n, addr, err
	}
	for {
		slot, n, from, err := c.next()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return 0, nil, err
			}
			c.s.metrics.relayReadErrors.Inc()
			c.backoff = min(max(2*c.backoff, time.Millisecond), 100*time.Millisecond)
			time.Sleep(c.backoff)
			continue
		}
		c.backoff = 0
		if c.batch == nil {
			if c.fromPeer(slot, n, from) {
				c.batchReads()
				continue
			}
		}
		// Batched reads relayed what the data plane knows in serve.
		if r := c.s.live.Load().policy.refusal(from.Addr().AsSlice()); r != "" {
			c.s.metrics.peerRefusals[r].Inc()
			continue
		}
		return copy(p, slot[headroom:headroom+n]), net.UDPAddrFromAddrPort(from), nil
	}
}

// next returns the next datagram from a peer in its slot that is pion's:
// with batched reads, the data plane relays the rest first, inside the read.
func (c *relayConn) next() (slot []byte, n int, from netip.AddrPort, err error) {
	if c.batch == nil {
		n, from, err = c.udp.ReadFromUDPAddrPort(c.buf[headroom : headroom+rtpMTU])
		return c.buf, n, from, err
	}
	if err := c.batch.Serve(c.serveFn, nil); err != nil {
		c.flushStream()
		c.flushUDP()
		return nil, 0, netip.AddrPort{}, err
	}
	return c.held, c.heldN, c.heldFrom, nil
}

// serve relays the datagrams of a batch that the data plane knows, within
// the read, and sends them before the reader may sleep. It stops at the
// first datagram that is pion's, held for next to return, after sending
// what came before it.
func (c *relayConn) serve() bool {
	for {
		slot, n, from, ok := c.batch.Next()
		if !ok {
			c.flushStream()
			c.flushUDP()
			return true
		}
		if c.fromPeer(slot, n, from) {
			continue
		}
		c.flushStream() // what came before goes first
		c.flushUDP()
		c.held, c.heldN, c.heldFrom = slot, n, from
		return false
	}
}

// fromPeer counts a peer's datagram and offers it to the data plane,
// which reports whether it relayed it (or dropped it). from is a plain
// IPv4 address: the data plane's relay sockets are udp4.
func (c *relayConn) fromPeer(slot []byte, n int, from netip.AddrPort) bool {
	m := c.s.metrics
	m.fromPeerBytes.Add(float64(n))
	m.fromPeerPackets.Inc()
	a := c.alloc.Load()
	return a != nil && c.s.dp.fromPeer(c, a, slot, n, from)
}

// queueStream queues one ChannelData frame for a stream client; the
// frames of one batch go out in one write.
func (c *relayConn) queueStream(to net.Conn, frame []byte) {
	if c.batch == nil || (c.wstream != nil && c.wstream != to) || len(c.wbuf)+len(frame) > maxStreamBatch {
		c.flushStream()
	}
	if c.wbuf == nil {
		c.wbuf = make([]byte, 0, maxStreamBatch)
	}
	c.wstream = to
	c.wbuf = append(c.wbuf, frame...)
	c.wcount++
	if c.batch == nil {
		c.flushStream()
	}
}

// queueUDP queues one ChannelData datagram for a UDP client, when the
// relay reads in batches; it reports false when the caller must send it.
func (c *relayConn) queueUDP(out *clientOut, frame []byte) bool {
	if c.batch == nil {
		return false
	}
	if c.bwFor != out.udp {
		c.flushUDP()
		c.bw, c.bwFor = stunsrv.NewBatchWriter(out.udp, relayBatch), out.udp
	}
	if c.bw == nil {
		return false
	}
	if c.bw.Pending() == relayBatch-1 {
		// Queue flushes a full batch itself: count it here.
		c.countUDP(relayBatch, c.bw.Queue(frame, out.toAP))
		return true
	}
	c.bw.Queue(frame, out.toAP)
	return true
}

func (c *relayConn) flushUDP() {
	if c.bw == nil || c.bw.Pending() == 0 {
		return
	}
	n := c.bw.Pending()
	c.countUDP(n, c.bw.Flush())
}

// countUDP counts a batch of n datagrams to UDP clients of which the
// kernel refused failed.
func (c *relayConn) countUDP(n, failed int) {
	m := c.s.metrics
	if failed > 0 {
		m.fastDrops[dropWrite].Add(float64(failed))
	}
	if n > failed {
		m.fastFromPeer.Add(float64(n - failed))
	}
}

func (c *relayConn) flushStream() {
	if c.wcount == 0 {
		return
	}
	m := c.s.metrics
	if _, err := c.wstream.Write(c.wbuf); err != nil {
		m.fastDrops[dropWrite].Add(float64(c.wcount))
	} else {
		m.fastFromPeer.Add(float64(c.wcount))
	}
	c.wbuf, c.wstream, c.wcount = c.wbuf[:0], nil, 0
}

// WriteTo is pion's relaying of Send indications and of ChannelData the
// data plane left to it, checked against the current peer policy: a
// reload that denies a peer stops what pion granted before.
func (c *relayConn) WriteTo(p []byte, addr net.Addr) (int, error) {
	if ua, ok := addr.(*net.UDPAddr); ok {
		if c.s.toRelayRefused(ua) {
			c.s.metrics.peerRefusals[refuseRelayPort].Inc()
			return 0, errRelayPort
		}
		if r := c.s.live.Load().policy.refusal(ua.IP); r != "" {
			c.s.metrics.peerRefusals[r].Inc()
			return 0, errPeerRefused
		}
	}
	if !c.admitToPeer(len(p), c.s.dp.now()) {
		return len(p), nil // dropped, as a congested link would
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
		if c.udp != nil {
			c.s.dp.relayClosed(c.port, c)
		}
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
	return s.toRelayRefusedAddr(netip.AddrPortFrom(a, uint16(dst.Port)))
}

func (s *Server) toRelayRefusedAddr(dst netip.AddrPort) bool {
	return s.live.Load().policy.relayPortsOnly(dst.Addr()) && !s.relayPorts.has(int(dst.Port()))
}
