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

// parseMapped finds (XOR-)MAPPED-ADDRESS in a Binding success response
// to the request with cookie+transaction ID id.
func parseMapped(b, id []byte) (netip.AddrPort, bool) {
	if len(b) < headerSize || binary.BigEndian.Uint16(b) != typeBindingResponse || string(b[4:headerSize]) != string(id) {
		return netip.AddrPort{}, false
	}
	for off := headerSize; off+4 <= len(b); {
		typ := binary.BigEndian.Uint16(b[off:])
		l := int(binary.BigEndian.Uint16(b[off+2:]))
		v := b[off+4 : min(len(b), off+4+l)]
		if (typ == attrXORMappedAddress || typ == attrMappedAddress) && len(v) >= 8 {
			port := binary.BigEndian.Uint16(v[2:])
			raw := append([]byte(nil), v[4:]...)
			if typ == attrXORMappedAddress {
				port ^= magicCookie >> 16
				for i := range raw {
					raw[i] ^= id[i%len(id)]
				}
			}
			if ip, ok := netip.AddrFromSlice(raw); ok && (len(raw) == 4 || len(raw) == 16) {
				return netip.AddrPortFrom(ip.Unmap(), port), true
			}
		}
		off += 4 + l + (4-l%4)%4
	}
	return netip.AddrPort{}, false
}
