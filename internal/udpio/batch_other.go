//go:build !linux

package udpio

import (
	"errors"
	"net/netip"
	"syscall"
)

// Without recvmmsg and sendmmsg the callers read and write one datagram
// per syscall; icebox is built for Linux and this file only keeps the
// package compiling on a developer's laptop.

// Reader is recvmmsg's; NewReader fails where there is none.
type Reader struct{}

// NewReader fails: read the socket one datagram at a time.
func NewReader(syscall.RawConn, int, int, int, int) (*Reader, error) {
	return nil, errors.New("udpio: no recvmmsg on this OS")
}

func (*Reader) Serve(func() bool, func()) error { return nil }
func (*Reader) Take() ([]byte, netip.AddrPort, Local, bool, bool) {
	return nil, netip.AddrPort{}, Local{}, false, false
}
func (*Reader) Next() ([]byte, int, netip.AddrPort, bool) { return nil, 0, netip.AddrPort{}, false }

// Writer is sendmmsg's; NewWriter returns nil where there is none.
type Writer struct{}

// NewWriter returns nil: write one datagram at a time.
func NewWriter(syscall.RawConn, bool, int) *Writer { return nil }

func (*Writer) Use(syscall.RawConn)                 {}
func (*Writer) Queue([]byte, netip.AddrPort, Local) {}
func (*Writer) Pending() int                        { return 0 }
func (*Writer) Cap() int                            { return 1 }
func (*Writer) Flush() (int, int)                   { return 0, 0 }
