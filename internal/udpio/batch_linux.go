package udpio

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// A loaded UDP server spends most of its time in syscalls, one per
// datagram each way. recvmmsg/sendmmsg move up to BatchSize datagrams per
// call instead. Every buffer is allocated once per socket, so the batched
// path allocates nothing either. golang.org/x/net/ipv4's ReadBatch does
// the same but allocates a net.Addr per datagram (xnet_test.go measures
// both).

// Reader reads a UDP socket several datagrams per syscall (recvmmsg) into
// buffers it owns, each with room before and after the datagram, so that
// a relay can put a header in front of a datagram and send it on without
// copying it. It never allocates. One goroutine reads.
type Reader struct {
	rc syscall.RawConn

	in       []unix.Mmsghdr // recvmmsg's array; each points into its ends
	ends     []ends
	oob      []byte // oobSize bytes a datagram
	bufs     []byte // SlotSize bytes a datagram
	n, next  int    // datagrams received, next to hand out
	headroom int    // bytes kept free before each received datagram

	// Serve's, for the duration of one call. serveFn is the method value
	// made once: passing r.serveRecv directly would allocate a closure on
	// every call.
	handler func() bool
	idle    func()
	serveFn func(fd uintptr) bool
	empty   int  // reads that found nothing (a wake-up with no datagram); TestServeWakesForADatagramAfterAShortBatch reads it
	full    bool // the last batch filled every slot: there may be more
	errno   syscall.Errno
}

// NewReader reads the socket behind rc up to count datagrams at a time (at
// most BatchSize), with headroom free bytes before and tailroom after each
// datagram of up to size bytes. It holds count 2 KiB buffers.
func NewReader(rc syscall.RawConn, headroom, size, tailroom, count int) (*Reader, error) {
	if headroom+size+tailroom > SlotSize {
		return nil, fmt.Errorf("udpio: batch slots hold %d bytes, not %d", SlotSize, headroom+size+tailroom)
	}
	count = min(max(count, 1), BatchSize)
	r := &Reader{rc: rc, headroom: headroom, in: make([]unix.Mmsghdr, count), ends: make([]ends, count)}
	r.oob, r.bufs = make([]byte, count*oobSize), make([]byte, count*SlotSize)
	for i := range count {
		r.ends[i].iov.Base = &r.bufs[i*SlotSize+headroom]
		r.ends[i].iov.SetLen(size)
	}
	r.serveFn = r.serveRecv
	return r, nil
}

// recvmmsg reads what is queued, up to a batch, without blocking.
func (r *Reader) recvmmsg(fd uintptr) syscall.Errno {
	for i := range r.in {
		h := &r.in[i].Hdr
		h.Name = (*byte)(unsafe.Pointer(&r.ends[i].name))
		h.Namelen = unix.SizeofSockaddrInet6
		h.Iov = &r.ends[i].iov
		h.SetIovlen(1)
		h.Control = &r.oob[i*oobSize]
		h.SetControllen(oobSize)
		h.Flags = 0
		r.in[i].Len = 0
	}
	// RawSyscall6, not Syscall6: with MSG_DONTWAIT the call never blocks,
	// so it need not give up the P. Syscall6's entersyscall wakes sysmon
	// from its deep sleep after every idle spell, and a woken sysmon polls
	// every 20 µs for the next millisecond: with light flows, where the
	// process idles between datagrams, that was an eighth of the CPU
	// (and a P retaken during a slow syscall costs a thread switch).
	n, _, e := unix.RawSyscall6(unix.SYS_RECVMMSG, fd, uintptr(unsafe.Pointer(&r.in[0])), uintptr(len(r.in)), unix.MSG_DONTWAIT, 0, 0)
	if e == 0 {
		r.n, r.next = int(n), 0
	}
	return e
}

// Serve reads batches and calls h inside the read itself each time a
// batch (or what is left of the last one) is there, until h returns false
// or the read fails. h takes the datagrams with Take or Next; it returns
// true once it took them all and sent what it queued (the goroutine may
// sleep next), false to stop with a datagram left for the caller, and
// Serve then returns nil.
//
// A light flow brings one datagram per wake-up; reading until EAGAIN
// before waiting again would cost a second recvmmsg per datagram. A batch
// shorter than asked for shows the queue was empty, so Serve waits right
// away instead: Go's netpoller is edge-triggered, and within one
// RawConn.Read a datagram that arrives after the last recvmmsg marks the
// socket ready, so the wait returns at once (only the prepareRead at the
// start of each Read clears readiness). idle, if not nil, is called before
// each wait. Pass function values made once (a method value made per call
// allocates).
func (r *Reader) Serve(h func() bool, idle func()) error {
	if r.next < r.n && !h() {
		return nil
	}
	r.handler, r.idle, r.errno = h, idle, 0
	var err error
	for {
		r.full = false
		err = r.rc.Read(r.serveFn)
		// A full batch ends the Read, so that the runtime sees a Close or
		// a passed deadline between batches: it checks them only when a
		// Read starts or waits, and a steady flood never lets it wait.
		if err != nil || r.errno != 0 || !r.full {
			break
		}
	}
	r.handler, r.idle = nil, nil
	if err != nil {
		return err
	}
	if r.errno != 0 {
		return r.errno
	}
	return nil
}

func (r *Reader) serveRecv(fd uintptr) bool {
	e := r.recvmmsg(fd)
	for e == unix.EINTR {
		e = r.recvmmsg(fd)
	}
	if e == unix.EAGAIN {
		r.empty++
		r.wait()
		return false
	}
	if e != 0 {
		r.errno = e
		return true
	}
	short := r.n < len(r.in)
	if !r.handler() {
		return true
	}
	if short {
		r.wait()
		return false
	}
	r.full = true // Serve reads again, in a new Read
	return true
}

func (r *Reader) wait() {
	if r.idle != nil {
		r.idle()
	}
}

// Take returns the next datagram of the batch, its source, the local
// address it arrived at (with IP_PKTINFO on the socket), and whether the
// kernel truncated it; ok is false once the batch is used up.
func (r *Reader) Take() (msg []byte, from netip.AddrPort, local Local, truncated, ok bool) {
	if r.next >= r.n {
		return nil, netip.AddrPort{}, Local{}, false, false
	}
	i := r.next
	r.next++
	h := &r.in[i].Hdr
	start := i*SlotSize + r.headroom
	msg = r.bufs[start : start+int(r.in[i].Len)]
	from = sockaddrToAddrPort(&r.ends[i].name)
	local = ParseLocal(r.oob[i*oobSize : i*oobSize+int(h.Controllen)])
	return msg, from, local, h.Flags&unix.MSG_TRUNC != 0, true
}

// Next returns the next whole datagram of the batch (truncated ones are
// skipped): its slot, with the datagram at slot[headroom:headroom+n] and
// tailroom after it, and its source. ok is false once the batch is used
// up.
func (r *Reader) Next() (slot []byte, n int, from netip.AddrPort, ok bool) {
	msg, from, _, truncated, ok := r.Take()
	for ok && truncated {
		msg, from, _, truncated, ok = r.Take()
	}
	if !ok {
		return nil, 0, netip.AddrPort{}, false
	}
	i := r.next - 1
	return r.bufs[i*SlotSize : (i+1)*SlotSize], len(msg), from, true
}

// ends is where a datagram's bytes and its peer's address are, for the
// mmsghdr that points at them.
type ends struct {
	iov  unix.Iovec
	name unix.RawSockaddrInet6 // large enough for IPv4 too
}

// Writer sends datagrams on a UDP socket several per syscall (sendmmsg),
// without copying them, each from a chosen local address if asked. One
// goroutine uses it; others may write to the socket meanwhile.
type Writer struct {
	rc      syscall.RawConn
	ipv6    bool
	out     []unix.Mmsghdr // sendmmsg's array; each points into its ends
	ends    []ends
	oob     []byte // oobSize bytes a datagram
	pending int    // datagrams queued

	sendFn func(fd uintptr) bool // w.send, made once
	// send's progress through the batch: datagrams done (sent or refused),
	// and of those refused by the kernel, with their bytes.
	sent, failed, failedBytes int
}

// NewWriter returns a writer of up to count datagrams per syscall (at most
// BatchSize) on the socket behind rc (nil: set it with Use), whose family
// ipv6 says: on an IPv4 socket every destination must be IPv4 or
// IPv4-mapped.
func NewWriter(rc syscall.RawConn, ipv6 bool, count int) *Writer {
	count = min(max(count, 1), BatchSize)
	w := &Writer{rc: rc, ipv6: ipv6, out: make([]unix.Mmsghdr, count), ends: make([]ends, count), oob: make([]byte, count*oobSize)}
	w.sendFn = w.send
	return w
}

// Use sends what is queued from now on over rc, a socket of the writer's
// family; what was queued before must have been flushed.
func (w *Writer) Use(rc syscall.RawConn) { w.rc = rc }

// Queue adds p, to be sent to to from src (the zero Local: the kernel's
// choice). p must stay unchanged until Flush, which the caller calls at the
// latest once Pending reaches Cap.
func (w *Writer) Queue(p []byte, to netip.AddrPort, src Local) {
	i := w.pending
	e := &w.ends[i]
	e.iov.Base = &p[0]
	e.iov.SetLen(len(p))
	h := &w.out[i].Hdr
	h.Name = (*byte)(unsafe.Pointer(&e.name))
	h.Namelen = putSockaddr(&e.name, to, w.ipv6)
	h.Iov = &e.iov
	h.SetIovlen(1)
	h.Control, h.Controllen = nil, 0
	if src.IP.IsValid() {
		oob := PutLocal(w.oob[i*oobSize:(i+1)*oobSize], src, w.ipv6)
		h.Control = &oob[0]
		h.SetControllen(len(oob))
	}
	w.pending++
}

// Pending is how many datagrams wait for Flush; Cap how many may.
func (w *Writer) Pending() int { return w.pending }
func (w *Writer) Cap() int     { return len(w.out) }

// send never blocks either (MSG_DONTWAIT): RawSyscall6, as in recvmmsg.
// sendmmsg stops at the first datagram the kernel refuses (EINVAL for a
// forged source's port 0, EPERM from a firewall, ENETUNREACH, EMSGSIZE):
// it returns how many went out before it, or that datagram's error when
// it was the first. send skips a refused datagram and goes on with the
// rest, so one unreachable destination costs only its own datagram.
func (w *Writer) send(fd uintptr) bool {
	for w.sent < w.pending {
		n, _, e := unix.RawSyscall6(unix.SYS_SENDMMSG, fd, uintptr(unsafe.Pointer(&w.out[w.sent])), uintptr(w.pending-w.sent), unix.MSG_DONTWAIT, 0, 0)
		switch e {
		case 0:
			w.sent += int(n)
		case unix.EINTR:
		case unix.EAGAIN:
			return false // the send buffer is full: wait for room
		default:
			w.failed++
			w.failedBytes += int(w.ends[w.sent].iov.Len)
			w.sent++
		}
	}
	return true
}

// Flush sends every queued datagram and returns how many of them the
// kernel refused, and their bytes (dropped, each on its own: the rest of
// the batch goes out). Should the socket itself fail (closed), what was
// not sent counts as refused. Nothing is retried: the clients retransmit.
func (w *Writer) Flush() (failed, failedBytes int) {
	w.failed, w.failedBytes = 0, 0
	if w.pending == 0 {
		return 0, 0
	}
	w.sent = 0
	if err := w.rc.Write(w.sendFn); err != nil {
		for i := w.sent; i < w.pending; i++ {
			w.failed++
			w.failedBytes += int(w.ends[i].iov.Len)
		}
	}
	w.pending = 0
	return w.failed, w.failedBytes
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
// relay data plane learns IPv4 peers only).
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
