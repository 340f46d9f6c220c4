package stunsrv

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"icebox/internal/ipclass"
	"icebox/internal/persource"
	"icebox/internal/stunwire"
)

// RFC 8489 §6.2.2 frames STUN over TCP by its own length field, and RFC 8656
// §11.5 pads ChannelData to four bytes there. The length field allows
// 64 KiB, but no frame larger than the read buffer is taken: pion takes no
// STUN message of 1600 bytes or more, and over UDP the front door drops
// anything larger than a slot, so a larger frame is an attempt to make
// each connection hold 64 KiB.

// readBufferSize is each stream connection's read buffer, a few frames,
// and the largest frame it takes.
const readBufferSize = 4096

var (
	errMalformedFrame = errors.New("stunsrv: malformed frame on TCP stream")
	errFrameTooLarge  = errors.New("stunsrv: frame larger than the reader's buffer")
)

// Why a stream connection was closed at once; the values label
// icebox_stun_tcp_refused_total.
const (
	refuseTotal      = iota // stun.max_tcp_connections reached
	refusePerSource         // stun.max_tcp_connections_per_source or the source's fair share reached
	refuseHandshakes        // stun.max_tls_handshakes in flight, or the source's share of them
	refuseHandshake         // TLS handshake failed or timed out
	numRefusals
)

var refusalNames = [numRefusals]string{"total", "per_source", "tls_handshakes", "tls_handshake"}

// admission bounds stream connections on every listener of the front door
// together, and the TLS handshakes among them: in total, per source
// address (IPv4 address or IPv6 /64), and, once half full, to each
// source's fair share (persource.FairShareFull), so that neither one host
// nor a handful of them can hold every slot.
type admission struct {
	conns, handshakes           persource.Counter
	connLimits, handshakeLimits persource.Limits
}

func newAdmission(cfg Config) *admission {
	return &admission{
		connLimits:      persource.Limits{Total: cfg.MaxTCPConnections, PerSource: cfg.MaxTCPConnectionsPerSource, FairShare: true},
		handshakeLimits: persource.Limits{Total: cfg.MaxTLSHandshakes, PerSource: cfg.MaxTCPConnectionsPerSource, FairShare: true},
	}
}

// take admits one connection from src, or says why not.
func (a *admission) take(src netip.Addr) (refusal int, ok bool) {
	switch a.conns.Take(src, a.connLimits) {
	case persource.Admitted:
		return 0, true
	case persource.OverTotal:
		return refuseTotal, false
	}
	return refusePerSource, false
}

func (a *admission) release(src netip.Addr) { a.conns.Release(src) }

// tcpListener hands out framed connections that answer Binding requests
// themselves, within the admission caps. With a TLS config it terminates
// TLS first, off the accept path: handshakes run in their own goroutines,
// at most max_tls_handshakes at once, each within tls_handshake_timeout,
// so slow or silent clients cannot hold up the ones behind them.
type tcpListener struct {
	net.Listener
	stats       *stats
	admit       *admission
	tls         *tls.Config // nil: plain TCP
	passthrough bool
	idle        *atomic.Int64 // time.Duration: idle timeout until a connection holds an allocation
	turnIdle    *atomic.Int64 // time.Duration: once it does
	handshake   time.Duration

	ready  chan net.Conn // TLS connections that finished their handshake
	done   chan struct{} // closed by Close
	closer sync.Once

	mu    sync.Mutex
	conns map[*tcpConn]struct{} // open, so that Close can end them

	// loop is the accepting loop's: Accept's, or acceptTLS's with TLS.
	// handoff is Accept's with TLS, which takes handshaken connections
	// from ready. One writer each.
	loop, handoff loopState
}

// Accept returns the next admitted (and, for TLS, handshaken) connection.
// It fails only once the listener is closed: other errors (out of file
// descriptors) are counted and waited out, as net/http does.
func (l *tcpListener) Accept() (net.Conn, error) {
	if l.tls != nil {
		l.handoff.waiting()
		select {
		case c := <-l.ready:
			l.handoff.working()
			return c, nil
		case <-l.done:
			return nil, net.ErrClosed
		}
	}
	return l.acceptRaw()
}

// acceptRaw accepts the next connection the caps admit.
func (l *tcpListener) acceptRaw() (*tcpConn, error) {
	for {
		l.loop.waiting()
		c, err := l.Listener.Accept()
		if err != nil {
			if l.loop.readFailed(err, l.stats) {
				return nil, err
			}
			continue
		}
		l.loop.working()
		l.loop.backoff = 0
		from := ipclass.PeerAddrPort(c.RemoteAddr())
		if why, ok := l.admit.take(from.Addr()); !ok {
			l.stats.tcpRefused[why].Inc()
			c.Close()
			continue
		}
		l.stats.tcpConns.Inc()
		var rw io.ReadWriter = c
		counts := &l.stats.tcp
		if _, terminated := c.(interface{ ConnectionState() tls.ConnectionState }); terminated {
			counts = &l.stats.tls // TLS done before the front door: the shared port's
		}
		if l.tls != nil {
			c = tls.Server(c, l.tls)
			rw = c
			counts = &l.stats.tls
		} else if raw := newRawStream(c); raw != nil {
			rw = raw
		}
		tc := &tcpConn{
			Conn:   c,
			r:      bufio.NewReaderSize(rw, readBufferSize),
			w:      rw,
			l:      l,
			from:   from,
			counts: counts,
			header: make([]byte, 0, maxResponseSize),
		}
		l.mu.Lock()
		l.conns[tc] = struct{}{}
		l.mu.Unlock()
		return tc, nil
	}
}

// acceptTLS feeds ready with connections that completed their handshake.
func (l *tcpListener) acceptTLS() {
	for {
		tc, err := l.acceptRaw()
		if err != nil {
			return
		}
		src := tc.from.Addr()
		if l.admit.handshakes.Take(src, l.admit.handshakeLimits) != persource.Admitted {
			l.stats.tcpRefused[refuseHandshakes].Inc()
			tc.Close()
			continue
		}
		go func() {
			defer l.admit.handshakes.Release(src)
			ctx, cancel := context.WithTimeout(context.Background(), l.handshake)
			err := tc.Conn.(*tls.Conn).HandshakeContext(ctx)
			cancel()
			if err != nil {
				l.stats.tcpRefused[refuseHandshake].Inc()
				tc.Close()
				return
			}
			select {
			case l.ready <- tc:
			case <-l.done:
				tc.Close()
			}
		}()
	}
}

// check is Alive's look at the listener's loops.
func (l *tcpListener) check() error {
	if l.tls == nil {
		return l.loop.check("tcp " + l.Addr().String())
	}
	return errors.Join(l.loop.check("tls "+l.Addr().String()), l.handoff.check("tls "+l.Addr().String()+" hand-off"))
}

// Close stops accepting and closes every open connection.
func (l *tcpListener) Close() error {
	err := l.Listener.Close()
	l.closer.Do(func() { close(l.done) })
	l.mu.Lock()
	open := make([]*tcpConn, 0, len(l.conns))
	for c := range l.conns {
		open = append(open, c)
	}
	l.mu.Unlock()
	for _, c := range open {
		c.Close()
	}
	return err
}

// tcpConn turns a byte stream into frames. Read returns only frames the
// TURN server must see, one whole frame per call, and answers Binding
// requests in between. Only one goroutine reads.
type tcpConn struct {
	net.Conn
	r         *bufio.Reader // frames queue up on a busy stream: one read takes several
	w         io.Writer     // Conn, or a rawStream on it
	l         *tcpListener
	from      netip.AddrPort
	counts    *[2]outcomeCounters // stats.tcp, or stats.tls for a TLS stream
	header    []byte              // Binding answers
	allocated atomic.Bool
	closed    atomic.Bool
	// fast relays frames from r's buffer in place; set by the reading
	// goroutine. A frame stays valid until r reads again, so fast is
	// flushed before that.
	fast FastPath
}

// streamWriteTimeout bounds how long one write to a TCP or TLS client may
// wait for the client to read: a client that stops reading would
// otherwise hold the goroutine relaying to it, and its relay socket,
// for good.
const streamWriteTimeout = 10 * time.Second

// Write writes p to the stream; any goroutine may. A write that fails,
// or times out, closes the connection: a frame cut short leaves the
// stream unusable.
func (c *tcpConn) Write(p []byte) (int, error) {
	c.Conn.SetWriteDeadline(time.Now().Add(streamWriteTimeout))
	n, err := c.w.Write(p)
	if err != nil {
		c.Close()
	}
	return n, err
}

// SetAllocated tells the connection whether it holds a TURN allocation:
// only then may it stay quiet for the TURN idle timeout (an allocation's
// refresh interval) instead of the short one. A connection that merely sent
// something TURN-like gains nothing.
func (c *tcpConn) SetAllocated(held bool) { c.allocated.Store(held) }

// Read returns the next frame for the TURN server. A frame larger than p
// is an error: the stream cannot be resynchronised after it.
func (c *tcpConn) Read(p []byte) (int, error) {
	for {
		b, err := c.nextFrame()
		if err != nil {
			return 0, err
		}
		if b == nil {
			continue
		}
		if c.fast != nil {
			if c.fast.Relay(b, c.from) {
				continue
			}
			c.fast.Flush()
		}
		if len(b) > len(p) {
			return 0, fmt.Errorf("%w: %d bytes from %v, buffer %d", errFrameTooLarge, len(b), c.from, len(p))
		}
		return copy(p, b), nil
	}
}

// nextFrame reads one frame and answers or drops it (returning nil), or
// returns it for the TURN server.
func (c *tcpConn) nextFrame() ([]byte, error) {
	fam := familyOf(c.from)
	st := &c.counts[fam]
	if err := c.beforeRead(4); err != nil {
		return nil, err
	}
	b, err := c.r.Peek(4)
	if err != nil {
		return nil, err
	}
	var size int
	switch {
	case b[0]&0xC0 == 0x40 && c.allocated.Load():
		// ChannelData needs a channel bound on this very connection, so
		// without an allocation it is garbage ("GET " parses as channel
		// 0x4745).
		size = 4 + int(binary.BigEndian.Uint16(b[2:4]))
		size += (4 - size%4) % 4
	case b[0]&0xC0 == 0:
		size = stunwire.HeaderSize + int(binary.BigEndian.Uint16(b[2:4]))
	default:
		// The stream is no longer in step: nothing after this can be framed.
		st.malformed.Inc()
		return nil, errMalformedFrame
	}
	if size > readBufferSize {
		st.malformed.Inc()
		return nil, fmt.Errorf("%w: %d bytes from %v", errFrameTooLarge, size, c.from)
	}
	if err := c.beforeRead(size); err != nil {
		return nil, err
	}
	// The frame stays in r's buffer until the next call: Read copies it
	// out before then.
	if b, err = c.r.Peek(size); err != nil {
		return nil, err
	}
	c.r.Discard(size)
	switch classify(b) {
	case kindBinding:
		c.header = AppendBindingResponse(c.header[:0], b, c.from)
		// Counted before it is sent, as over UDP: a client that has its
		// answer must find it counted.
		st.answered.Inc()
		// Through Write, with its timeout: a client that sends Bindings
		// and never reads would otherwise hold this goroutine for good.
		if _, err := c.Write(c.header); err != nil {
			return nil, err
		}
		return nil, nil
	case kindMalformed:
		st.malformed.Inc()
		return nil, errMalformedFrame
	}
	if !c.l.passthrough {
		st.dropped.Inc()
		return nil, nil
	}
	st.passed.Inc()
	return b, nil
}

// beforeRead prepares for a read from the socket unless r already holds
// n bytes: it flushes the fast path (a read into r may move the frames it
// relays in place) and starts the idle timeout. Frames already buffered
// need neither, and a busy stream brings several per read.
func (c *tcpConn) beforeRead(n int) error {
	if c.r.Buffered() >= n {
		return nil
	}
	if c.fast != nil {
		c.fast.Flush()
	}
	idle := time.Duration(c.l.idle.Load())
	if c.allocated.Load() {
		idle = time.Duration(c.l.turnIdle.Load())
	}
	return c.SetReadDeadline(time.Now().Add(idle))
}

func (c *tcpConn) Close() error {
	if c.closed.CompareAndSwap(false, true) {
		c.l.mu.Lock()
		delete(c.l.conns, c)
		c.l.mu.Unlock()
		c.l.admit.release(c.from.Addr())
		c.l.stats.tcpConns.Dec()
	}
	return c.Conn.Close()
}
