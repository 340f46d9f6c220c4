package stunsrv

import (
	"io"
	"net"
	"os"
	"sync"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// rawStream reads and writes a TCP socket with recvfrom and sendto inside
// RawConn.Read and Write, as a RawSyscall6 with MSG_DONTWAIT that never
// blocks and so need not give up the P: net.Conn's read and write are
// ordinary syscalls, whose entersyscall wakes sysmon from its deep sleep,
// and a woken sysmon polls every 20 µs for the next millisecond (see
// recvmmsg). A relayed TCP ChannelData round trip makes one read and one
// write on each client stream. Deadlines work as on the net.Conn:
// RawConn.Read and Write honour them.
type rawStream struct {
	rc syscall.RawConn

	rbuf   []byte // Read's, for the duration of one call
	rn     int
	rerrno syscall.Errno
	readFn func(fd uintptr) bool

	wmu     sync.Mutex // writers: pion's answers and the data plane's frames
	wbuf    []byte
	wn      int
	werrno  syscall.Errno
	writeFn func(fd uintptr) bool
}

// newRawStream returns a rawStream on c, or nil where c is not a plain
// TCP connection (TLS, or one from an extra listener).
func newRawStream(c net.Conn) *rawStream {
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return nil
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return nil
	}
	s := &rawStream{rc: rc}
	// Method values built once: passing s.read directly would allocate a
	// closure on every call.
	s.readFn, s.writeFn = s.read, s.write
	return s
}

// Read is one recvfrom. Only one goroutine reads.
func (s *rawStream) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	s.rbuf, s.rn, s.rerrno = p, 0, 0
	err := s.rc.Read(s.readFn)
	s.rbuf = nil
	switch {
	case err != nil:
		return 0, err
	case s.rerrno != 0:
		return 0, os.NewSyscallError("recvfrom", s.rerrno)
	case s.rn == 0:
		return 0, io.EOF
	}
	return s.rn, nil
}

func (s *rawStream) read(fd uintptr) bool {
	n, _, e := unix.RawSyscall6(unix.SYS_RECVFROM, fd, uintptr(unsafe.Pointer(&s.rbuf[0])), uintptr(len(s.rbuf)), unix.MSG_DONTWAIT, 0, 0)
	if e == unix.EAGAIN || e == unix.EINTR {
		return false
	}
	s.rn, s.rerrno = int(n), e
	return true
}

// Write writes all of p, as net.Conn's Write does; any goroutine may.
func (s *rawStream) Write(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	s.wmu.Lock()
	defer s.wmu.Unlock()
	s.wbuf, s.wn, s.werrno = p, 0, 0
	err := s.rc.Write(s.writeFn)
	n := s.wn
	s.wbuf = nil
	if err == nil && s.werrno != 0 {
		err = os.NewSyscallError("sendto", s.werrno)
	}
	return n, err
}

// write sends what is left of wbuf; MSG_NOSIGNAL: a peer that went away
// is an EPIPE error, not a signal.
func (s *rawStream) write(fd uintptr) bool {
	for s.wn < len(s.wbuf) {
		rest := s.wbuf[s.wn:]
		n, _, e := unix.RawSyscall6(unix.SYS_SENDTO, fd, uintptr(unsafe.Pointer(&rest[0])), uintptr(len(rest)), unix.MSG_DONTWAIT|unix.MSG_NOSIGNAL, 0, 0)
		switch e {
		case 0:
			s.wn += int(n)
		case unix.EINTR:
		case unix.EAGAIN:
			return false // wait until the socket can take more
		default:
			s.werrno = e
			return true
		}
	}
	return true
}
