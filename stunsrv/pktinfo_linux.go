package stunsrv

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

const pktinfoSupported = true

// controlPktinfo asks the kernel for destination addresses on a socket of
// the given family.
func controlPktinfo(ipv6 bool) func(fd uintptr) error {
	return func(fd uintptr) error {
		if ipv6 {
			return unix.SetsockoptInt(int(fd), unix.IPPROTO_IPV6, unix.IPV6_RECVPKTINFO, 1)
		}
		return unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_PKTINFO, 1)
	}
}

func controlReusePort(fd uintptr) error {
	return unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
}

// parseDst finds the datagram's destination address in received control
// messages. It returns ifindex too, which IPv6 link-local replies need.
func parseDst(oob []byte) (dst netip.Addr, ifindex uint32, ok bool) {
	for len(oob) >= unix.SizeofCmsghdr {
		h := (*unix.Cmsghdr)(unsafe.Pointer(&oob[0]))
		l := int(h.Len)
		if l < unix.SizeofCmsghdr || l > len(oob) {
			return netip.Addr{}, 0, false
		}
		data := oob[unix.CmsgLen(0):l]
		switch {
		case h.Level == unix.IPPROTO_IP && h.Type == unix.IP_PKTINFO && len(data) >= unix.SizeofInet4Pktinfo:
			info := (*unix.Inet4Pktinfo)(unsafe.Pointer(&data[0]))
			return netip.AddrFrom4(info.Addr), uint32(info.Ifindex), true
		case h.Level == unix.IPPROTO_IPV6 && h.Type == unix.IPV6_PKTINFO && len(data) >= unix.SizeofInet6Pktinfo:
			info := (*unix.Inet6Pktinfo)(unsafe.Pointer(&data[0]))
			return netip.AddrFrom16(info.Addr), info.Ifindex, true
		}
		next := unix.CmsgSpace(l - unix.CmsgLen(0))
		if next > len(oob) {
			break
		}
		oob = oob[next:]
	}
	return netip.Addr{}, 0, false
}

// putSrc writes into oob (at least oobSize bytes) a control message that
// makes the kernel send from src, and returns the used part. ipv6 is the
// socket's family: a dual-stack socket takes IPV6_PKTINFO with a v4-mapped
// source for IPv4 clients.
func putSrc(oob []byte, src netip.Addr, ifindex uint32, ipv6 bool) []byte {
	clear(oob[:oobSize])
	h := (*unix.Cmsghdr)(unsafe.Pointer(&oob[0]))
	data := unsafe.Pointer(&oob[unix.CmsgLen(0)])
	if ipv6 {
		h.Level, h.Type = unix.IPPROTO_IPV6, unix.IPV6_PKTINFO
		h.SetLen(unix.CmsgLen(unix.SizeofInet6Pktinfo))
		info := (*unix.Inet6Pktinfo)(data)
		info.Addr = src.As16()
		if src.Is6() && !src.Is4In6() && src.IsLinkLocalUnicast() {
			info.Ifindex = ifindex
		}
		return oob[:unix.CmsgSpace(unix.SizeofInet6Pktinfo)]
	}
	h.Level, h.Type = unix.IPPROTO_IP, unix.IP_PKTINFO
	h.SetLen(unix.CmsgLen(unix.SizeofInet4Pktinfo))
	info := (*unix.Inet4Pktinfo)(data)
	info.Spec_dst = src.Unmap().As4()
	return oob[:unix.CmsgSpace(unix.SizeofInet4Pktinfo)]
}
