package stunsrv

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"time"
)

// MappedAddress asks the STUN server at server (host:port) which address
// our UDP packets arrive from: how icebox learns its public address when
// no interface has it (public_ip: auto behind NAT).
func MappedAddress(ctx context.Context, server string) (netip.AddrPort, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "udp", server)
	if err != nil {
		return netip.AddrPort{}, err
	}
	defer c.Close()
	dl, ok := ctx.Deadline()
	if !ok {
		dl = time.Now().Add(3 * time.Second)
	}
	c.SetDeadline(dl)
	req := make([]byte, headerSize)
	binary.BigEndian.PutUint16(req, typeBindingRequest)
	binary.BigEndian.PutUint32(req[4:], magicCookie)
	rand.Read(req[8:])
	buf := make([]byte, 1500)
	// Retransmit as RFC 8489 §6.2.1 does, within the deadline.
	for rto := 250 * time.Millisecond; ; rto *= 2 {
		if _, err := c.Write(req); err != nil {
			return netip.AddrPort{}, err
		}
		wait := time.Now().Add(rto)
		if wait.After(dl) {
			wait = dl
		}
		c.SetReadDeadline(wait)
		n, err := c.Read(buf)
		if ne, ok := err.(net.Error); ok && ne.Timeout() && time.Now().Before(dl) {
			continue
		}
		if err != nil {
			return netip.AddrPort{}, fmt.Errorf("no answer from %s: %w", server, err)
		}
		if ap, ok := parseMapped(buf[:n], req[4:headerSize]); ok {
			return ap, nil
		}
	}
}

// parseMapped finds the mapped address in a Binding success response to
// the request with cookie+transaction ID id: XOR-MAPPED-ADDRESS, or
// MAPPED-ADDRESS from an RFC 3489 server that sends none. XOR-MAPPED-ADDRESS
// wins wherever it is: NAT ALGs rewrite MAPPED-ADDRESS, which is why the
// XOR form exists. A truncated response, and malformed attributes, are
// not read.
func parseMapped(b, id []byte) (netip.AddrPort, bool) {
	if len(b) < headerSize || binary.BigEndian.Uint16(b) != typeBindingResponse || string(b[4:headerSize]) != string(id) {
		return netip.AddrPort{}, false
	}
	end := headerSize + int(binary.BigEndian.Uint16(b[2:4]))
	if end > len(b) {
		return netip.AddrPort{}, false // truncated
	}
	var mapped netip.AddrPort
	for off := headerSize; off+4 <= end; {
		typ := binary.BigEndian.Uint16(b[off:])
		l := int(binary.BigEndian.Uint16(b[off+2:]))
		if off+4+l > end {
			break
		}
		v := b[off+4 : off+4+l]
		off += 4 + (l+3)&^3
		wellFormed := l == 8 && v[1] == familyIPv4 || l == 20 && v[1] == familyIPv6
		if !wellFormed || typ != attrXORMappedAddress && (typ != attrMappedAddress || mapped.IsValid()) {
			continue
		}
		port := binary.BigEndian.Uint16(v[2:])
		raw := append([]byte(nil), v[4:]...)
		if typ == attrMappedAddress {
			ip, _ := netip.AddrFromSlice(raw)
			mapped = netip.AddrPortFrom(ip.Unmap(), port)
			continue
		}
		port ^= magicCookie >> 16
		for i := range raw {
			raw[i] ^= id[i]
		}
		ip, _ := netip.AddrFromSlice(raw)
		return netip.AddrPortFrom(ip.Unmap(), port), true
	}
	return mapped, mapped.IsValid()
}
