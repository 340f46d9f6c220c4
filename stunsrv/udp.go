package stunsrv

import (
	"net"
	"net/netip"
	"sync"
	"time"

	"icebox/internal/udpio"
)

// packetConn is the UDP front door: a net.PacketConn over one socket whose
// ReadFrom answers Binding requests itself and returns only what the TURN
// server must see. With TURN off nothing is returned and the socket is a pure
// STUN responder.
type packetConn struct {
	*net.UDPConn
	stats       *stats
	passthrough bool // hand non-Binding STUN and ChannelData to the caller
	wildcard    bool // bound to 0.0.0.0 or ::, so replies need an explicit source
	ipv6        bool // the socket's family

	// Owned by the single reading goroutine.
	oobIn  []byte
	oobOut []byte
	reply  []byte
	// peers caches the net.Addr handed to pion for each TURN client, so a
	// relayed packet does not allocate one; pion only reads it. Bounded
	// like locals.
	peers map[netip.AddrPort]*net.UDPAddr

	// Where each TURN client reached us, so that pion's replies on a
	// wildcard socket leave from that address too. Bounded: a flood of
	// spoofed sources only costs a reset. Read for every datagram relayed
	// each way, by the socket's reader and every relay's goroutine;
	// written only when a client's address changes.
	localsMu sync.RWMutex
	locals   map[netip.AddrPort]udpio.Local
	wpool    sync.Pool // *[]byte oob buffers for concurrent writers

	// Batched reads and answers where the OS has recvmmsg/sendmmsg, else
	// nil; answers holds the queued answers, maxResponseSize bytes each.
	batch   *udpio.Reader
	out     *udpio.Writer
	answers []byte
	fast    FastPath // set by the reading goroutine; nil: none

	loop loopState

	// readFromBatch's: serveBatch and loop.waiting as values made once,
	// and the datagram serveBatch stopped at, for the caller.
	serveFn   func() bool
	idleFn    func()
	held      []byte
	heldFrom  netip.AddrPort
	heldLocal udpio.Local
}

// FastPath lets the TURN server relay datagrams from the front door's
// receive buffers in place, without the copy into the caller's buffer,
// and batch its own sends: a datagram is valid until Flush, which the
// reading goroutine calls before it waits for more datagrams and before
// ReadFrom returns one (what came first goes out first).
type FastPath interface {
	// Relay reports whether it took msg (ChannelData or STUN, not a
	// Binding request) from from.
	Relay(msg []byte, from netip.AddrPort) bool
	Flush()
}

// SetFastPath sets f as conn's fast path when conn is one of the front
// door's UDP sockets read in batches, or one of its TCP or TLS
// connections, and reports whether it did. Only the goroutine that reads
// conn may call it.
func SetFastPath(conn any, f FastPath) bool {
	switch c := conn.(type) {
	case *packetConn:
		if c.batch == nil || !c.passthrough {
			return false
		}
		c.fast = f
		return true
	case *tcpConn:
		if !c.l.passthrough {
			return false
		}
		c.fast = f
		return true
	}
	return false
}

const maxLocals = 1 << 16

func newPacketConn(c *net.UDPConn, st *stats, passthrough bool, clock func() time.Duration) *packetConn {
	local := c.LocalAddr().(*net.UDPAddr).AddrPort()
	pc := &packetConn{
		loop:        loopState{clock: clock},
		UDPConn:     c,
		stats:       st,
		passthrough: passthrough,
		wildcard:    local.Addr().IsUnspecified() && udpio.PktinfoSupported,
		ipv6:        local.Addr().Is6() && !local.Addr().Is4In6(),
		reply:       make([]byte, 0, maxResponseSize),
		peers:       make(map[netip.AddrPort]*net.UDPAddr),
	}
	if rc, err := c.SyscallConn(); err == nil {
		if r, err := udpio.NewReader(rc, 0, udpio.SlotSize, 0, udpio.BatchSize); err == nil {
			pc.batch, pc.out = r, udpio.NewWriter(rc, pc.ipv6, udpio.BatchSize)
			pc.answers = make([]byte, udpio.BatchSize*maxResponseSize)
		}
	}
	pc.loop.working() // until a reader comes
	if pc.wildcard {
		pc.oobIn = make([]byte, udpio.OOBSize())
		pc.oobOut = make([]byte, udpio.OOBSize())
		pc.locals = make(map[netip.AddrPort]udpio.Local)
		pc.wpool.New = func() any { b := make([]byte, udpio.OOBSize()); return &b }
	}
	return pc
}

// ReadFrom returns the next datagram that is not a Binding request.
// Bindings are answered before it returns; malformed datagrams are counted
// and dropped. It returns an error only once the socket is closed: other
// read errors are counted and retried.
func (c *packetConn) ReadFrom(p []byte) (int, net.Addr, error) {
	if c.batch != nil {
		return c.readFromBatch(p)
	}
	for {
		c.loop.waiting()
		n, from, local, err := c.readOne(p)
		if err != nil {
			if c.loop.readFailed(err, c.stats) {
				return 0, nil, err
			}
			continue
		}
		c.loop.working()
		c.loop.backoff = 0
		answer, pass := c.triage(p[:n], from)
		if answer {
			c.answer(p[:n], from, local)
		}
		if pass {
			return n, c.passOn(from, local), nil
		}
	}
}

func (c *packetConn) readFromBatch(p []byte) (int, net.Addr, error) {
	if c.serveFn == nil {
		c.serveFn, c.idleFn = c.serveBatch, c.loop.waiting
	}
	for {
		if err := c.batch.Serve(c.serveFn, c.idleFn); err != nil {
			if c.loop.readFailed(err, c.stats) {
				return 0, nil, err
			}
			continue
		}
		return copy(p, c.held), c.passOn(c.heldFrom, c.heldLocal), nil
	}
}

// serveBatch works through the datagrams read, inside the read (see
// udpio.Reader.Serve): it answers Bindings, hands the fast path what it
// takes and sends both before the loop may sleep. It stops at the first
// datagram for the caller, held for ReadFrom to return, after sending
// what came before it.
func (c *packetConn) serveBatch() bool {
	c.loop.working()
	c.loop.backoff = 0
	for {
		msg, from, local, truncated, ok := c.batch.Take()
		if !ok {
			c.flush()
			if c.fast != nil {
				c.fast.Flush()
			}
			return true
		}
		fam := familyOf(from)
		if truncated {
			c.stats.udp[fam].malformed.Inc()
			continue
		}
		answer, pass := c.triage(msg, from)
		if answer {
			c.queueAnswer(msg, from, local)
		}
		if pass {
			if c.fast != nil {
				if c.wildcard {
					c.remember(from, local)
				}
				if c.fast.Relay(msg, from) {
					continue
				}
				c.fast.Flush()
			}
			c.flush() // answers queued so far go out before pion gets to work
			c.held, c.heldFrom, c.heldLocal = msg, from, local
			return false
		}
	}
}

// queueAnswer puts the Binding response to req in the outgoing batch, in
// a buffer of its own until the batch goes out; a full batch goes out at
// once.
func (c *packetConn) queueAnswer(req []byte, to netip.AddrPort, local udpio.Local) {
	i := c.out.Pending()
	slot := c.answers[i*maxResponseSize : i*maxResponseSize : (i+1)*maxResponseSize]
	if !c.wildcard {
		local = udpio.Local{}
	}
	c.stats.udp[familyOf(to)].answered.Inc()
	c.out.Queue(AppendBindingResponse(slot, req, to), to, local)
	if c.out.Pending() == c.out.Cap() {
		c.flush()
	}
}

func (c *packetConn) flush() {
	failed, _ := c.out.Flush()
	c.stats.countFailed(failed)
}

func (c *packetConn) readOne(p []byte) (n int, from netip.AddrPort, local udpio.Local, err error) {
	n, oobn, _, from, err := c.ReadMsgUDPAddrPort(p, c.oobIn)
	if err != nil {
		return 0, from, local, err
	}
	from = netip.AddrPortFrom(from.Addr().Unmap(), from.Port())
	if c.wildcard {
		local = udpio.ParseLocal(c.oobIn[:oobn])
	}
	return n, from, local, nil
}

// triage counts one datagram's outcome and says whether to answer it here
// and whether the caller (pion) should see it.
func (c *packetConn) triage(b []byte, from netip.AddrPort) (answer, pass bool) {
	st := &c.stats.udp[familyOf(from)]
	if from.Port() == 0 {
		// A forged source (the kernel delivers port 0): nothing can be
		// sent there, and the kernel would refuse the answer.
		st.dropped.Inc()
		return false, false
	}
	switch classify(b) {
	case kindBinding:
		return true, false
	case kindMalformed:
		st.malformed.Inc()
		return false, false
	default:
		// Other STUN methods, ChannelData and indications (TURN's Send)
		// are the TURN server's, if there is one.
		if c.passthrough {
			st.passed.Inc()
			return false, true
		}
		st.dropped.Inc()
		return false, false
	}
}

// answer sends a Binding response at once, from the address the request
// was sent to.
func (c *packetConn) answer(req []byte, from netip.AddrPort, local udpio.Local) {
	c.reply = AppendBindingResponse(c.reply[:0], req, from)
	var oob []byte
	if c.wildcard && local.IP.IsValid() {
		oob = udpio.PutLocal(c.oobOut, local, c.ipv6)
	}
	c.stats.udp[familyOf(from)].answered.Inc()
	_, _, err := c.WriteMsgUDPAddrPort(c.reply, oob, from)
	c.stats.countWrite(err)
}

func (c *packetConn) passOn(from netip.AddrPort, local udpio.Local) net.Addr {
	if c.wildcard {
		c.remember(from, local)
	}
	addr, ok := c.peers[from]
	if !ok {
		if len(c.peers) >= maxLocals {
			clear(c.peers)
		}
		addr = net.UDPAddrFromAddrPort(from)
		c.peers[from] = addr
	}
	return addr
}

func (c *packetConn) remember(from netip.AddrPort, local udpio.Local) {
	if !local.IP.IsValid() {
		return
	}
	// Only this socket's reading goroutine writes locals, so what it
	// reads here still holds when it takes the write lock.
	c.localsMu.RLock()
	old, ok := c.locals[from]
	c.localsMu.RUnlock()
	if ok && old == local {
		return
	}
	c.localsMu.Lock()
	if len(c.locals) >= maxLocals {
		clear(c.locals)
	}
	c.locals[from] = local
	c.localsMu.Unlock()
}

// WriteTo sends from the address the peer last reached us at, when known.
func (c *packetConn) WriteTo(p []byte, addr net.Addr) (int, error) {
	ua, ok := addr.(*net.UDPAddr)
	if !ok {
		return c.UDPConn.WriteTo(p, addr)
	}
	to := ua.AddrPort()
	if !c.wildcard {
		return c.WriteToUDPAddrPort(p, to)
	}
	to = netip.AddrPortFrom(to.Addr().Unmap(), to.Port())
	c.localsMu.RLock()
	local, known := c.locals[to]
	c.localsMu.RUnlock()
	if !known {
		return c.WriteToUDPAddrPort(p, to)
	}
	bp := c.wpool.Get().(*[]byte)
	n, _, err := c.WriteMsgUDPAddrPort(p, udpio.PutLocal(*bp, local, c.ipv6), to)
	c.wpool.Put(bp)
	return n, err
}

func familyOf(a netip.AddrPort) int {
	if a.Addr().Is4() {
		return v4
	}
	return v6
}

// BatchWriter sends datagrams from one of the front door's UDP sockets
// several per syscall (sendmmsg), without copying them, from the address
// each client last reached us at (as WriteTo does). One goroutine uses it;
// others may write to the socket meanwhile.
type BatchWriter struct {
	pc *packetConn
	w  *udpio.Writer
}

// NewBatchWriter returns a writer of up to count datagrams per syscall
// (at most udpio.BatchSize) on the socket behind pc, or nil if pc is not
// one of the front door's sockets or the OS has no sendmmsg.
func NewBatchWriter(pc net.PacketConn, count int) *BatchWriter {
	c, ok := pc.(*packetConn)
	if !ok {
		return nil
	}
	rc, err := c.SyscallConn()
	if err != nil {
		return nil
	}
	w := udpio.NewWriter(rc, c.ipv6, count)
	if w == nil {
		return nil
	}
	return &BatchWriter{pc: c, w: w}
}

// Queue adds p, to be sent to to. p must stay unchanged until Flush,
// which Queue calls itself once the batch is full: it then returns what
// Flush does, else 0.
func (w *BatchWriter) Queue(p []byte, to netip.AddrPort) (failed int) {
	var local udpio.Local
	if w.pc.wildcard {
		w.pc.localsMu.RLock()
		local = w.pc.locals[to]
		w.pc.localsMu.RUnlock()
	}
	w.w.Queue(p, to, local)
	if w.w.Pending() == w.w.Cap() {
		return w.Flush()
	}
	return 0
}

// Pending is how many datagrams wait for Flush.
func (w *BatchWriter) Pending() int { return w.w.Pending() }

// Flush sends what is queued and returns how many datagrams the kernel
// refused (dropped, each on its own: the rest of the batch goes out).
func (w *BatchWriter) Flush() (failed int) {
	failed, _ = w.w.Flush()
	return failed
}
