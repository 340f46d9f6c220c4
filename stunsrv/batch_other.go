//go:build !linux

package stunsrv

import (
	"net/netip"
	"syscall"
)

// Without recvmmsg the front door reads one datagram per syscall.

type mmsgBatch struct{}

func newMMsgBatch(syscall.RawConn, bool) *mmsgBatch { return nil }

func (*mmsgBatch) fill() error { return nil }
func (*mmsgBatch) take() ([]byte, netip.AddrPort, localAddr, bool, bool) {
	return nil, netip.AddrPort{}, localAddr{}, false, false
}
func (*mmsgBatch) queue([]byte, netip.AddrPort, netip.Addr, uint32) error { return nil }
func (*mmsgBatch) flush() error                                           { return nil }
