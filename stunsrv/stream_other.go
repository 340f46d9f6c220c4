//go:build !linux

package stunsrv

import "net"

// rawStream is Linux's; elsewhere streams use net.Conn's Read and Write.
type rawStream struct{ net.Conn }

func newRawStream(net.Conn) *rawStream { return nil }
