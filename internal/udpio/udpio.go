// Package udpio reads and writes UDP sockets several datagrams per syscall
// (recvmmsg, sendmmsg) without allocating, and tells the address each
// datagram arrived at or leaves from (IP_PKTINFO): the I/O under icebox's
// STUN port and TURN relay sockets.
package udpio

import "net/netip"

// BatchSize is the most datagrams one syscall moves.
const BatchSize = 32

// SlotSize is what a Reader's buffer holds of one datagram with its
// headroom and tailroom. pion reads at most 1600 bytes (its InboundMTU);
// anything larger is truncated by the kernel and dropped.
const SlotSize = 2048

// Local is the address of this host a datagram arrived at, or leaves
// from, with the interface for IPv6 link-local addresses. The zero Local
// leaves the choice to the kernel.
type Local struct {
	IP      netip.Addr
	Ifindex uint32
}
