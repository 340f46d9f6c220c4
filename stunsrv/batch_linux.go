package stunsrv

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// A loaded STUN server spends most of its time in syscalls, one per
// datagram each way. recvmmsg/sendmmsg move up to batchSize datagrams per
// call instead. Every buffer is allocated once per socket, so the batched
// path allocates nothing either.
const (
	batchSize = 32
	// slotSize holds one datagram. pion reads at most 1600 bytes (its
	// InboundMTU); anything larger is truncated by the kernel and dropped.
	slotSize = 2048
)

type mmsgBatch struct {
	rc syscall.RawConn

	in      []unix.Mmsghdr
	inIov   []unix.Iovec
	inNames []unix.RawSockaddrInet6 // large enough for IPv4 too
	inOOB   []byte
	inBufs  []byte
	n, next int // datagrams received, next to handle

	out      []unix.Mmsghdr
	outIov   []unix.Iovec
	outNames []unix.RawSockaddrInet6
	outOOB   []byte
	outBufs  []byte
	pending  int // answers queued

	ipv6     bool
	headroom int // bytes kept free before each received datagram

	// Method values built once: passing c.recv directly would allocate
	// a closure on every call.
	recvFn, sendFn func(fd uintptr) bool
	// serve's, for the duration of one call.
	handler func() bool
	idle    func()
	serveFn func(fd uintptr) bool
	empty   int  // serve's reads that found nothing (a wake-up with no datagram); TestServeWakesForADatagramAfterAShortBatch reads it
	full    bool // serve's last batch filled every slot: there may be more
	errno   syscall.Errno
	// send's progress through the outgoing batch: datagrams done (sent or
	// refused), and of those refused by the kernel, with their bytes.
	sent, failed, failedBytes int
}

func newMMsgBatch(rc syscall.RawConn, ipv6 bool) *mmsgBatch {
	b := &mmsgBatch{rc: rc, ipv6: ipv6}
	b.withRecv(batchSize, 0, slotSize)
	b.withSend(batchSize)
	b.outBufs = make([]byte, batchSize*maxResponseSize)
	for i := range batchSize {
		b.outIov[i].Base = &b.outBufs[i*maxResponseSize]
	}
	return b
}

// withRecv sets b up to receive count datagrams of up to size bytes per
// call, each headroom bytes into its slot.
func (b *mmsgBatch) withRecv(count, headroom, size int) {
	b.headroom = headroom
	b.in = make([]unix.Mmsghdr, count)
	b.inIov = make([]unix.Iovec, count)
	b.inNames = make([]unix.RawSockaddrInet6, count)
	b.inOOB = make([]byte, count*oobSize)
	b.inBufs = make([]byte, count*slotSize)
	for i := range count {
		b.inIov[i].Base = &b.inBufs[i*slotSize+headroom]
		b.inIov[i].SetLen(size)
	}
	b.recvFn = b.recv
}

// withSend sets b up to send count datagrams per call.
func (b *mmsgBatch) withSend(count int) {
	b.out = make([]unix.Mmsghdr, count)
	b.outIov = make([]unix.Iovec, count)
	b.outNames = make([]unix.RawSockaddrInet6, count)
	b.outOOB = make([]byte, count*oobSize)
	b.sendFn = b.send
}

// BatchReader reads a UDP socket several datagrams per syscall
// (recvmmsg) into buffers it owns, each with room before and after the
// datagram, so that a relay can put a header in front of a datagram and
// send it on without copying it. It never allocates. One goroutine reads.
// golang.org/x/net/ipv4's ReadBatch does the same but allocates a
// net.Addr per datagram.
type BatchReader struct {
	b *mmsgBatch
}

// NewBatchReader reads c up to count datagrams at a time (at most 32),
// with headroom free bytes before and tailroom after each datagram of up
// to size bytes. It holds count 2 KiB buffers.
func NewBatchReader(c *net.UDPConn, headroom, size, tailroom, count int) (*BatchReader, error) {
	if headroom+size+tailroom > slotSize {
		return nil, fmt.Errorf("stunsrv: batch slots hold %d bytes, not %d", slotSize, headroom+size+tailroom)
	}
	rc, err := c.SyscallConn()
	if err != nil {
		return nil, err
	}
	b := &mmsgBatch{rc: rc}
	b.withRecv(min(max(count, 1), batchSize), headroom, size)
	return &BatchReader{b: b}, nil
}

// Fill waits for at least one datagram and reads what is queued, up to
// a batch. Call it once Next has returned every datagram of the last one.
func (r *BatchReader) Fill() error { return r.b.fill() }

// Serve reads datagrams and calls h within the read each time a batch
// (or what is left of the last one) is there. h takes the datagrams with
// Next; it returns true once it took them all and sent what it queued
// (the goroutine may sleep next), false to stop with a datagram left for
// Next, and Serve then returns nil. Serve waits for more datagrams without
// a further syscall when a batch came short: the socket was empty. Pass a
// function value made once (a method value made per call allocates).
func (r *BatchReader) Serve(h func() bool) error { return r.b.serve(h, nil) }

// Next returns the next datagram of the batch: its slot, with the
// datagram at slot[headroom:headroom+n] and tailroom after it, and its
// source. ok is false once the batch is used up.
func (r *BatchReader) Next() (slot []byte, n int, from netip.AddrPort, ok bool) {
	msg, from, _, truncated, ok := r.b.take()
	for ok && truncated {
		msg, from, _, truncated, ok = r.b.take()
	}
	if !ok {
		return nil, 0, netip.AddrPort{}, false
	}
	i := r.b.next - 1
	return r.b.inBufs[i*slotSize : (i+1)*slotSize], len(msg), from, true
}

func (b *mmsgBatch) recv(fd uintptr) bool {
	e := b.recvmmsg(fd)
	if e == unix.EAGAIN || e == unix.EINTR {
		return false
	}
	b.errno = e
	return true
}

// recvmmsg reads what is queued, up to a batch, without blocking.
func (b *mmsgBatch) recvmmsg(fd uintptr) syscall.Errno {
	for i := range b.in {
		h := &b.in[i].Hdr
		h.Name = (*byte)(unsafe.Pointer(&b.inNames[i]))
		h.Namelen = unix.SizeofSockaddrInet6
		h.Iov = &b.inIov[i]
		h.SetIovlen(1)
		h.Control = &b.inOOB[i*oobSize]
		h.SetControllen(oobSize)
		h.Flags = 0
		b.in[i].Len = 0
	}
	// RawSyscall6, not Syscall6: with MSG_DONTWAIT the call never blocks,
	// so it need not give up the P. Syscall6's entersyscall wakes sysmon
	// from its deep sleep after every idle spell, and a woken sysmon polls
	// every 20 µs for the next millisecond: with light flows, where the
	// process idles between datagrams, that was an eighth of the CPU
	// (and a P retaken during a slow syscall costs a thread switch).
	n, _, e := unix.RawSyscall6(unix.SYS_RECVMMSG, fd, uintptr(unsafe.Pointer(&b.in[0])), uintptr(len(b.in)), unix.MSG_DONTWAIT, 0, 0)
	if e == 0 {
		b.n, b.next = int(n), 0
	}
	return e
}

// serve reads batches and hands each to handler inside the read itself,
// until handler returns false (it left a datagram for the caller, to take
// with take) or the read fails. A light flow brings one datagram per
// wake-up; reading until EAGAIN before waiting again would cost a second
// recvmmsg per datagram. A batch shorter than asked for shows the queue
// was empty, so serve waits right away instead: Go's netpoller is
// edge-triggered, and within one RawConn.Read a datagram that arrives
// after the last recvmmsg marks the socket ready, so the wait returns at
// once (only the prepareRead at the start of each Read clears readiness).
// handler must have sent what it queued before it returns true: the
// goroutine may sleep next. idle, if set, is called before each wait.
func (b *mmsgBatch) serve(handler func() bool, idle func()) error {
	if b.next < b.n && !handler() {
		return nil
	}
	b.handler, b.idle, b.errno = handler, idle, 0
	if b.serveFn == nil {
		b.serveFn = b.serveRecv
	}
	var err error
	for {
		b.full = false
		err = b.rc.Read(b.serveFn)
		// A full batch ends the Read, so that the runtime sees a Close or
		// a passed deadline between batches: it checks them only when a
		// Read starts or waits, and a steady flood never lets it wait.
		if err != nil || b.errno != 0 || !b.full {
			break
		}
	}
	b.handler, b.idle = nil, nil
	if err != nil {
		return err
	}
	if b.errno != 0 {
		return b.errno
	}
	return nil
}

func (b *mmsgBatch) serveRecv(fd uintptr) bool {
	e := b.recvmmsg(fd)
	for e == unix.EINTR {
		e = b.recvmmsg(fd)
	}
	if e == unix.EAGAIN {
		b.empty++
		b.wait()
		return false
	}
	if e != 0 {
		b.errno = e
		return true
	}
	short := b.n < len(b.in)
	if !b.handler() {
		return true
	}
	if short {
		b.wait()
		return false
	}
	b.full = true // serve reads again, in a new Read
	return true
}

func (b *mmsgBatch) wait() {
	if b.idle != nil {
		b.idle()
	}
}

// fill reads the next batch, blocking until at least one datagram is there.
func (b *mmsgBatch) fill() error {
	b.errno = 0
	if err := b.rc.Read(b.recvFn); err != nil {
		return err
	}
	if b.errno != 0 {
		return b.errno
	}
	return nil
}

// take returns the next received datagram, or ok=false when the batch is
// used up.
func (b *mmsgBatch) take() (msg []byte, from netip.AddrPort, local localAddr, truncated, ok bool) {
	if b.next >= b.n {
		return nil, netip.AddrPort{}, localAddr{}, false, false
	}
	i := b.next
	b.next++
	h := &b.in[i].Hdr
	start := i*slotSize + b.headroom
	msg = b.inBufs[start : start+int(b.in[i].Len)]
	from = sockaddrToAddrPort(&b.inNames[i])
	local.ip, local.ifindex, _ = parseDst(b.inOOB[i*oobSize : i*oobSize+int(h.Controllen)])
	return msg, from, local, h.Flags&unix.MSG_TRUNC != 0, true
}

// queue adds an answer to the outgoing batch; full batches go out at once,
// and queue returns how many of their answers the kernel refused.
func (b *mmsgBatch) queue(answer []byte, to netip.AddrPort, src netip.Addr, ifindex uint32) (failed int) {
	i := b.pending
	slot := b.outBufs[i*maxResponseSize : (i+1)*maxResponseSize]
	n := copy(slot, answer)
	b.outIov[i].SetLen(n)
	b.address(i, to, src, ifindex)
	b.pending++
	if b.pending == batchSize {
		return b.flush()
	}
	return 0
}

// address sets outgoing message i's destination and, when src is valid,
// its source address.
func (b *mmsgBatch) address(i int, to netip.AddrPort, src netip.Addr, ifindex uint32) {
	h := &b.out[i].Hdr
	h.Name = (*byte)(unsafe.Pointer(&b.outNames[i]))
	h.Namelen = putSockaddr(&b.outNames[i], to, b.ipv6)
	h.Iov = &b.outIov[i]
	h.SetIovlen(1)
	h.Control, h.Controllen = nil, 0
	if src.IsValid() {
		oob := putSrc(b.outOOB[i*oobSize:(i+1)*oobSize], src, ifindex, b.ipv6)
		h.Control = &oob[0]
		h.SetControllen(len(oob))
	}
}

// send never blocks either (MSG_DONTWAIT): RawSyscall6, as in recvmmsg.
// sendmmsg stops at the first datagram the kernel refuses (EINVAL for a
// forged source's port 0, EPERM from a firewall, ENETUNREACH, EMSGSIZE):
// it returns how many went out before it, or that datagram's error when
// it was the first. send skips a refused datagram and goes on with the
// rest, so one unreachable destination costs only its own datagram.
func (b *mmsgBatch) send(fd uintptr) bool {
	for b.sent < b.pending {
		n, _, e := unix.RawSyscall6(unix.SYS_SENDMMSG, fd, uintptr(unsafe.Pointer(&b.out[b.sent])), uintptr(b.pending-b.sent), unix.MSG_DONTWAIT, 0, 0)
		switch e {
		case 0:
			b.sent += int(n)
		case unix.EINTR:
		case unix.EAGAIN:
			return false // the send buffer is full: wait for room
		default:
			b.failed++
			b.failedBytes += int(b.outIov[b.sent].Len)
			b.sent++
		}
	}
	return true
}

// flush sends every queued datagram and returns how many of them the
// kernel refused (their bytes are in failedBytes); the others all went
// out. Should the socket itself fail (closed), what was not sent counts
// as refused. Nothing is retried: the clients retransmit.
func (b *mmsgBatch) flush() (failed int) {
	b.failed, b.failedBytes = 0, 0
	if b.pending == 0 {
		return 0
	}
	b.sent = 0
	if err := b.rc.Write(b.sendFn); err != nil {
		for i := b.sent; i < b.pending; i++ {
			b.failed++
			b.failedBytes += int(b.outIov[i].Len)
		}
	}
	b.pending = 0
	return b.failed
}

func sockaddrToAddrPort(sa *unix.RawSockaddrInet6) netip.AddrPort {
	port := binary.BigEndian.Uint16((*[2]byte)(unsafe.Pointer(&sa.Port))[:])
	if sa.Family == unix.AF_INET {
		sa4 := (*unix.RawSockaddrInet4)(unsafe.Pointer(sa))
		return netip.AddrPortFrom(netip.AddrFrom4(sa4.Addr), port)
	}
	return netip.AddrPortFrom(netip.AddrFrom16(sa.Addr).Unmap(), port)
}

// putSockaddr writes to into sa for a socket of the family ipv6 says. On
// an IPv4 socket to must be IPv4 (or IPv4-mapped): As4 panics on any
// other address, so callers pass only what such a socket can reach (the
// relay data plane learns IPv4 peers only, xorPeerAddrPort).
func putSockaddr(sa *unix.RawSockaddrInet6, to netip.AddrPort, ipv6 bool) uint32 {
	*sa = unix.RawSockaddrInet6{}
	if !ipv6 {
		sa4 := (*unix.RawSockaddrInet4)(unsafe.Pointer(sa))
		sa4.Family = unix.AF_INET
		binary.BigEndian.PutUint16((*[2]byte)(unsafe.Pointer(&sa4.Port))[:], to.Port())
		sa4.Addr = to.Addr().Unmap().As4()
		return unix.SizeofSockaddrInet4
	}
	sa.Family = unix.AF_INET6
	binary.BigEndian.PutUint16((*[2]byte)(unsafe.Pointer(&sa.Port))[:], to.Port())
	sa.Addr = to.Addr().As16()
	return unix.SizeofSockaddrInet6
}

// BatchWriter sends datagrams from one of the front door's UDP sockets
// several per syscall (sendmmsg), without copying them, from the address
// each client last reached us at (as WriteTo does). One goroutine uses it;
// others may write to the socket meanwhile.
type BatchWriter struct {
	pc *packetConn
	b  *mmsgBatch
}

// NewBatchWriter returns a writer of up to count datagrams per syscall
// (at most 32) on the socket behind pc, or nil if pc is not one of the
// front door's sockets.
func NewBatchWriter(pc net.PacketConn, count int) *BatchWriter {
	c, ok := pc.(*packetConn)
	if !ok {
		return nil
	}
	rc, err := c.SyscallConn()
	if err != nil {
		return nil
	}
	b := &mmsgBatch{rc: rc, ipv6: c.ipv6}
	b.withSend(min(max(count, 1), batchSize))
	return &BatchWriter{pc: c, b: b}
}

// Queue adds p, to be sent to to. p must stay unchanged until Flush,
// which Queue calls itself once the batch is full: it then returns what
// Flush does, else 0.
func (w *BatchWriter) Queue(p []byte, to netip.AddrPort) (failed int) {
	b := w.b
	i := b.pending
	b.outIov[i].Base = &p[0]
	b.outIov[i].SetLen(len(p))
	var local localAddr
	if w.pc.wildcard {
		w.pc.localsMu.Lock()
		local = w.pc.locals[to]
		w.pc.localsMu.Unlock()
	}
	b.address(i, to, local.ip, local.ifindex)
	b.pending++
	if b.pending == len(b.out) {
		return w.Flush()
	}
	return 0
}

// Pending is how many datagrams wait for Flush.
func (w *BatchWriter) Pending() int { return w.b.pending }

// Flush sends what is queued and returns how many datagrams the kernel
// refused (dropped, each on its own: the rest of the batch goes out).
func (w *BatchWriter) Flush() (failed int) { return w.b.flush() }

// SocketWriter sends datagrams on plain UDP sockets (a TURN server's
// relay sockets) several per syscall (sendmmsg), without copying them. It
// sends on one socket at a time, set by Use. One goroutine uses it; others
// may write to the sockets meanwhile.
type SocketWriter struct {
	b *mmsgBatch
}

// NewSocketWriter returns a writer of up to count datagrams per syscall
// (at most 32).
func NewSocketWriter(count int) *SocketWriter {
	b := &mmsgBatch{}
	b.withSend(min(max(count, 1), batchSize))
	return &SocketWriter{b: b}
}

// Use sends what is queued from now on over rc, the raw connection of an
// IPv4 UDP socket (a relay socket: they are all IPv4); what was queued
// before must have been flushed.
func (w *SocketWriter) Use(rc syscall.RawConn) { w.b.rc = rc }

// Queue adds p, to be sent to to. p must stay unchanged until Flush, which
// the caller calls at the latest once Pending reaches Cap.
func (w *SocketWriter) Queue(p []byte, to netip.AddrPort) {
	b := w.b
	i := b.pending
	b.outIov[i].Base = &p[0]
	b.outIov[i].SetLen(len(p))
	b.address(i, to, netip.Addr{}, 0)
	b.pending++
}

// Pending is how many datagrams wait for Flush; Cap how many may.
func (w *SocketWriter) Pending() int { return w.b.pending }
func (w *SocketWriter) Cap() int     { return len(w.b.out) }

// Flush sends what is queued and returns how many datagrams the kernel
// refused, and their bytes (dropped, each on its own: the rest of the
// batch goes out).
func (w *SocketWriter) Flush() (failed, failedBytes int) {
	failed = w.b.flush()
	return failed, w.b.failedBytes
}
