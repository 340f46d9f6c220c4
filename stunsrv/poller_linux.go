package stunsrv

import (
	"errors"
	"fmt"
	"os"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Poller lets one goroutine wait for many UDP sockets: an epoll set of
// its own, itself waited on through Go's netpoller, so that one wake-up
// serves every socket that is ready. A TURN server with one goroutine per
// relay socket pays a goroutine wake and a scheduler round per datagram
// when flows are light; with a Poller it pays one per batch of ready
// sockets. Sockets are watched edge-triggered: a socket reported ready
// must be read until a read comes back short, or the Poller reports it
// again only once a new datagram arrives.
type Poller struct {
	f      *os.File
	rc     syscall.RawConn
	events []unix.EpollEvent
	tokens []int32

	handler func(tokens []int32) bool
	more    bool
	errno   syscall.Errno
	waitFn  func(fd uintptr) bool
}

// NewPoller returns a Poller that reports up to size sockets per wake-up.
func NewPoller(size int) (*Poller, error) {
	fd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("stunsrv: epoll_create1: %w", err)
	}
	// Non-blocking, so that os.NewFile hands it to Go's netpoller.
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("stunsrv: epoll set non-blocking: %w", err)
	}
	f := os.NewFile(uintptr(fd), "poller")
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("stunsrv: epoll raw conn: %w", err)
	}
	p := &Poller{f: f, rc: rc, events: make([]unix.EpollEvent, max(size, 1)), tokens: make([]int32, max(size, 1))}
	p.waitFn = p.wait
	return p, nil
}

// Add watches the socket behind c for datagrams, reported as token.
func (p *Poller) Add(c syscall.RawConn, token int32) error {
	return p.ctl(c, unix.EPOLL_CTL_ADD, token)
}

// Remove stops watching the socket behind c. Call it before closing the
// socket: a descriptor closed and reused while still watched would be
// reported under the old token.
func (p *Poller) Remove(c syscall.RawConn) error {
	return p.ctl(c, unix.EPOLL_CTL_DEL, 0)
}

func (p *Poller) ctl(c syscall.RawConn, op int, token int32) error {
	var err error
	cerr := p.rc.Control(func(epfd uintptr) {
		cerr := c.Control(func(fd uintptr) {
			ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLET, Fd: token}
			err = unix.EpollCtl(int(epfd), op, int(fd), &ev)
		})
		if cerr != nil {
			err = cerr
		}
	})
	return errors.Join(cerr, err)
}

// Wait waits until a watched socket is ready and calls h within the wait
// with the tokens of the ready sockets, as many times as there are: h
// returns true while it knows there is more to read (a read came back
// full, or a socket failed and wants another try), and Wait asks again
// without sleeping. Wait returns only once the Poller is closed
// (os.ErrClosed) or waiting failed. Pass a function value made once.
func (p *Poller) Wait(h func(tokens []int32) bool) error {
	p.handler, p.more, p.errno = h, false, 0
	err := p.rc.Read(p.waitFn)
	p.handler = nil
	if err != nil {
		return err
	}
	return p.errno
}

func (p *Poller) wait(epfd uintptr) bool {
	for {
		// RawSyscall6 with a zero timeout never blocks, so it need not
		// give up the P (see recvmmsg). epoll_pwait exists on every
		// architecture, epoll_wait not on arm64.
		n, _, e := unix.RawSyscall6(unix.SYS_EPOLL_PWAIT, epfd, uintptr(unsafe.Pointer(&p.events[0])), uintptr(len(p.events)), 0, 0, 0)
		if e == unix.EINTR {
			continue
		}
		if e != 0 {
			p.errno = e
			return true
		}
		if n == 0 && !p.more {
			// Go's netpoller watches the epoll set edge-triggered: a
			// socket that gets ready from now on wakes this Read.
			return false
		}
		for i := range int(n) {
			p.tokens[i] = p.events[i].Fd
		}
		// A full answer may have left ready sockets behind.
		p.more = p.handler(p.tokens[:n]) || int(n) == len(p.events)
	}
}

// Close stops Wait and every watch.
func (p *Poller) Close() error { return p.f.Close() }
