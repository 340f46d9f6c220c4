package udpio

import (
	"net/netip"
	"unsafe"

	"golang.org/x/sys/unix"
)

// On a wildcard-bound socket the kernel picks a reply's source address by
// route, which on a host with several addresses need not be the one the
// client sent to; NATs then drop the reply. IP_PKTINFO / IPV6_RECVPKTINFO tell
// us the destination of each datagram so the reply can leave from it.

// oobSize holds one IPV6_PKTINFO (the larger of the two) control message.
var oobSize = unix.CmsgSpace(unix.SizeofInet6Pktinfo)

// OOBSize is the room one datagram's control messages take: what
// ParseLocal reads and PutLocal writes.
func OOBSize() int { return oobSize }

// PktinfoSupported says whether this OS tells the local address of a
// datagram.
const PktinfoSupported = true

// ControlPktinfo asks the kernel for destination addresses on a socket of
// the given family (a net.ListenConfig Control step).
func ControlPktinfo(ipv6 bool) func(fd uintptr) error {
	return func(fd uintptr) error {
		if ipv6 {
			return unix.SetsockoptInt(int(fd), unix.IPPROTO_IPV6, unix.IPV6_RECVPKTINFO, 1)
		}
		return unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_PKTINFO, 1)
	}
}

// ControlReusePort lets several sockets bind the same address
// (SO_REUSEPORT), so that several goroutines read it at once.
func ControlReusePort(fd uintptr) error {
	return unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
}

// ParseLocal finds the datagram's destination address in received control
// messages; the zero Local if there is none.
func ParseLocal(oob []byte) Local {
	for len(oob) >= unix.SizeofCmsghdr {
		h := (*unix.Cmsghdr)(unsafe.Pointer(&oob[0]))
		l := int(h.Len)
		if l < unix.SizeofCmsghdr || l > len(oob) {
			return Local{}
		}
		data := oob[unix.CmsgLen(0):l]
		switch {
		case h.Level == unix.IPPROTO_IP && h.Type == unix.IP_PKTINFO && len(data) >= unix.SizeofInet4Pktinfo:
			info := (*unix.Inet4Pktinfo)(unsafe.Pointer(&data[0]))
			return Local{netip.AddrFrom4(info.Addr), uint32(info.Ifindex)}
		case h.Level == unix.IPPROTO_IPV6 && h.Type == unix.IPV6_PKTINFO && len(data) >= unix.SizeofInet6Pktinfo:
			info := (*unix.Inet6Pktinfo)(unsafe.Pointer(&data[0]))
			return Local{netip.AddrFrom16(info.Addr), info.Ifindex}
		}
		next := unix.CmsgSpace(l - unix.CmsgLen(0))
		if next > len(oob) {
			break
		}
		oob = oob[next:]
	}
	return Local{}
}

// PutLocal writes into oob (at least OOBSize() bytes) a control message that
// makes the kernel send from src, and returns the used part. ipv6 is the
// socket's family: a dual-stack socket takes IPV6_PKTINFO with a v4-mapped
// source for IPv4 clients.
func PutLocal(oob []byte, src Local, ipv6 bool) []byte {
	clear(oob[:oobSize])
	h := (*unix.Cmsghdr)(unsafe.Pointer(&oob[0]))
	data := unsafe.Pointer(&oob[unix.CmsgLen(0)])
	if ipv6 {
		h.Level, h.Type = unix.IPPROTO_IPV6, unix.IPV6_PKTINFO
		h.SetLen(unix.CmsgLen(unix.SizeofInet6Pktinfo))
		info := (*unix.Inet6Pktinfo)(data)
		info.Addr = src.IP.As16()
		if src.IP.Is6() && !src.IP.Is4In6() && src.IP.IsLinkLocalUnicast() {
			info.Ifindex = src.Ifindex
		}
		return oob[:unix.CmsgSpace(unix.SizeofInet6Pktinfo)]
	}
	h.Level, h.Type = unix.IPPROTO_IP, unix.IP_PKTINFO
	h.SetLen(unix.CmsgLen(unix.SizeofInet4Pktinfo))
	info := (*unix.Inet4Pktinfo)(data)
	info.Spec_dst = src.IP.Unmap().As4()
	return oob[:unix.CmsgSpace(unix.SizeofInet4Pktinfo)]
}
