package stunsrv

import (
	"encoding/binary"
	"errors"
	"io"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// RFC 8489 §6.2.2 frames STUN over TCP by its own length field, and RFC 8656
// §12.5 pads ChannelData to four bytes there. maxFrame bounds what one client
// can make us buffer: the 16-bit length field plus header.
const maxFrame = headerSize + 0xFFFF + 3

var errMalformedFrame = errors.New("stunsrv: malformed frame on TCP stream")

// tcpListener hands out connections that answer Binding requests
// themselves, refusing connections past the cap.
type tcpListener struct {
	net.Listener
	stats       *stats
	passthrough bool
	slots       chan struct{}
	idle        atomic.Int64 // time.Duration: idle timeout before a connection turns to TURN
	turnIdle    atomic.Int64 // time.Duration: idle timeout once it has

	mu    sync.Mutex
	conns map[*tcpConn]struct{} // open, so that Close can end them
}

func (l *tcpListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		select {
		case l.slots <- struct{}{}:
		default:
			l.stats.tcpRefused.Inc()
			c.Close()
			continue
		}
		l.stats.tcpConns.Inc()
		remote := c.RemoteAddr().(*net.TCPAddr).AddrPort()
		tc := &tcpConn{
			Conn:   c,
			l:      l,
			from:   netip.AddrPortFrom(remote.Addr().Unmap(), remote.Port()),
			frame:  make([]byte, 0, 1500),
			header: make([]byte, 0, maxResponseSize),
		}
		l.mu.Lock()
		l.conns[tc] = struct{}{}
		l.mu.Unlock()
		return tc, nil
	}
}

// Close stops accepting and closes every open connection.
func (l *tcpListener) Close() error {
	err := l.Listener.Close()
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
// TURN server must see, a whole frame at a time when the caller's buffer
// allows, and answers Binding requests in between.
type tcpConn struct {
	net.Conn
	l       *tcpListener
	from    netip.AddrPort
	frame   []byte // the frame being read, then handed out
	pending []byte // the unread rest of frame
	header  []byte // Binding answers
	turn    bool   // has carried TURN traffic: idle timeout is TURN's
	closed  atomic.Bool
}

func (c *tcpConn) Read(p []byte) (int, error) {
	for len(c.pending) == 0 {
		if err := c.nextFrame(); err != nil {
			return 0, err
		}
	}
	n := copy(p, c.pending)
	c.pending = c.pending[n:]
	return n, nil
}

// nextFrame reads one frame and either answers it, drops it or queues it
// in pending for Read.
func (c *tcpConn) nextFrame() error {
	idle := c.l.idle.Load()
	if c.turn {
		idle = c.l.turnIdle.Load()
	}
	if err := c.SetReadDeadline(time.Now().Add(time.Duration(idle))); err != nil {
		return err
	}
	fam := familyOf(c.from)
	st := &c.l.stats.tcp[fam]
	b := c.frame[:4]
	if _, err := io.ReadFull(c.Conn, b); err != nil {
		return err
	}
	var size int
	switch {
	case b[0]&0xC0 == 0x40 && c.turn:
		// ChannelData needs a channel bound on this very connection, so
		// as a first frame it is garbage ("GET " parses as channel 0x4745).
		size = 4 + int(binary.BigEndian.Uint16(b[2:4]))
		size += (4 - size%4) % 4
	case b[0]&0xC0 == 0:
		size = headerSize + int(binary.BigEndian.Uint16(b[2:4]))
	default:
		// The stream is no longer in step: nothing after this can be framed.
		st.malformed.Inc()
		return errMalformedFrame
	}
	if cap(c.frame) < size {
		c.frame = make([]byte, 0, size)
		copy(c.frame[:4], b)
	}
	b = c.frame[:size]
	if _, err := io.ReadFull(c.Conn, b[4:]); err != nil {
		return err
	}
	switch Classify(b) {
	case BindingRequest:
		c.header = AppendBindingResponse(c.header[:0], b, c.from)
		// Counted before it is sent, as over UDP: a client that has its
		// answer must find it counted.
		st.answered.Inc()
		_, err := c.Conn.Write(c.header)
		return err
	case Malformed:
		st.malformed.Inc()
		return errMalformedFrame
	}
	if !c.l.passthrough {
		st.dropped.Inc()
		return nil
	}
	st.passed.Inc()
	c.turn = true
	c.pending = b
	return nil
}

func (c *tcpConn) Close() error {
	if c.closed.CompareAndSwap(false, true) {
		c.l.mu.Lock()
		delete(c.l.conns, c)
		c.l.mu.Unlock()
		<-c.l.slots
		c.l.stats.tcpConns.Dec()
	}
	return c.Conn.Close()
}
