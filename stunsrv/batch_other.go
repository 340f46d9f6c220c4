//go:build !linux

package stunsrv

import (
	"errors"
	"net"
	"net/netip"
	"syscall"
)

// BatchReader is recvmmsg's; NewBatchReader fails where there is none.
type BatchReader struct{}

// NewBatchReader fails: read the socket one datagram at a time.
func NewBatchReader(*net.UDPConn, int, int, int, int) (*BatchReader, error) {
	return nil, errors.New("stunsrv: no recvmmsg on this platform")
}

func (*BatchReader) Fill() error             { return nil }
func (*BatchReader) Serve(func() bool) error { return nil }
func (*BatchReader) Next() ([]byte, int, netip.AddrPort, bool) {
	return nil, 0, netip.AddrPort{}, false
}

// Without recvmmsg the front door reads one datagram per syscall.

type mmsgBatch struct{}

func newMMsgBatch(syscall.RawConn, bool) *mmsgBatch { return nil }

func (*mmsgBatch) fill() error                     { return nil }
func (*mmsgBatch) serve(func() bool, func()) error { return nil }
func (*mmsgBatch) take() ([]byte, netip.AddrPort, localAddr, bool, bool) {
	return nil, netip.AddrPort{}, localAddr{}, false, false
}
func (*mmsgBatch) queue([]byte, netip.AddrPort, netip.Addr, uint32) int { return 0 }
func (*mmsgBatch) flush() int                                           { return 0 }

// BatchWriter is sendmmsg's; NewBatchWriter returns nil where there is none.
type BatchWriter struct{}

// NewBatchWriter returns nil: write one datagram at a time.
func NewBatchWriter(net.PacketConn, int) *BatchWriter { return nil }

func (*BatchWriter) Queue([]byte, netip.AddrPort) int { return 0 }
func (*BatchWriter) Pending() int                     { return 0 }
func (*BatchWriter) Flush() int                       { return 0 }

// SocketWriter is sendmmsg's; NewSocketWriter returns nil where there is none.
type SocketWriter struct{}

// NewSocketWriter returns nil: write one datagram at a time.
func NewSocketWriter(int) *SocketWriter { return nil }

func (*SocketWriter) Use(syscall.RawConn)          {}
func (*SocketWriter) Queue([]byte, netip.AddrPort) {}
func (*SocketWriter) Pending() int                 { return 0 }
func (*SocketWriter) Cap() int                     { return 1 }
func (*SocketWriter) Flush() (int, int)            { return 0, 0 }
