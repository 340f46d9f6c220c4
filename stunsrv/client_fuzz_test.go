package stunsrv

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"testing"

	"github.com/pion/stun/v3"
)

// FuzzParseMapped checks how MappedAddress reads a Binding response. On
// any datagram parseMapped must not panic and must agree with a strict
// reference: only a success response to our transaction, not truncated,
// and the address of a well-formed XOR-MAPPED-ADDRESS, or of a well-formed
// MAPPED-ADDRESS if there is none. And for any request (req if Classify
// takes it, else one built from its bytes) and address, the response
// AppendBindingResponse builds reads back as that address, and not for
// another transaction.
func FuzzParseMapped(f *testing.F) {
	tid := [stun.TransactionIDSize]byte{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}
	req := stun.MustBuild(stun.NewTransactionIDSetter(tid), stun.BindingRequest, stun.Fingerprint).Raw
	from := netip.MustParseAddrPort("198.51.100.7:54321")
	from6 := netip.MustParseAddrPort("[2001:db8::7]:443")
	ours := AppendBindingResponse(nil, req, from)
	f.Add(ours, req, from.Addr().AsSlice(), from.Port())
	f.Add(AppendBindingResponse(nil, req, from6), req, from6.Addr().AsSlice(), from6.Port())
	f.Add(rfc5769ResponseIPv4, rfc5769Request, []byte{192, 0, 2, 1}, uint16(32853))
	f.Add(ours[:len(ours)-10], []byte{}, []byte{}, uint16(0))
	classic := append([]byte{0, 1, 0, 0}, bytes.Repeat([]byte{0xCC}, 16)...)
	f.Add(AppendBindingResponse(nil, classic, from), classic, netip.MustParseAddr("::ffff:192.0.2.1").AsSlice(), uint16(1))
	f.Add([]byte("GET / HTTP/1.1\r\n\r\n"), []byte("\x00\x01"), []byte{1, 2, 3}, uint16(65535))

	f.Fuzz(func(t *testing.T, resp, reqIn, ip []byte, port uint16) {
		// Any datagram, as the answer to the transaction it names and to
		// another one.
		if len(resp) >= headerSize {
			id := bytes.Clone(resp[4:headerSize])
			got, ok := parseMapped(resp, id)
			want, wantOK := referenceMapped(resp, id)
			if ok != wantOK || got != want {
				t.Fatalf("parseMapped(%x) = %v %v, reference %v %v", resp, got, ok, want, wantOK)
			}
			id[len(id)-1] ^= 1
			if _, ok := parseMapped(resp, id); ok {
				t.Fatalf("parseMapped(%x) accepted it for another transaction", resp)
			}
		} else if _, ok := parseMapped(resp, make([]byte, 16)); ok {
			t.Fatalf("parseMapped accepted %d bytes", len(resp))
		}

		// Round trip through AppendBindingResponse.
		req := reqIn
		if Classify(req) != BindingRequest {
			req = make([]byte, headerSize)
			binary.BigEndian.PutUint16(req, typeBindingRequest)
			copy(req[4:], reqIn)
		}
		var addr netip.Addr
		switch {
		case len(ip) == 16:
			addr = netip.AddrFrom16([16]byte(ip))
		case len(ip) > 4:
			var b [16]byte
			copy(b[:], ip)
			addr = netip.AddrFrom16(b)
		default:
			var b [4]byte
			copy(b[:], ip)
			addr = netip.AddrFrom4(b)
		}
		ap := netip.AddrPortFrom(addr, port)
		out := AppendBindingResponse([]byte("dst"), req, ap)
		got, ok := parseMapped(out[3:], req[4:headerSize])
		if want := netip.AddrPortFrom(addr.Unmap(), port); !ok || got != want {
			t.Fatalf("response to %x for %v reads as %v %v", req, ap, got, ok)
		}
		id := bytes.Clone(req[4:headerSize])
		id[0] ^= 0x80
		if _, ok := parseMapped(out[3:], id); ok {
			t.Fatal("response accepted for another transaction")
		}
	})
}

// referenceMapped is the rule written out plainly.
func referenceMapped(b, id []byte) (netip.AddrPort, bool) {
	if len(b) < headerSize || b[0] != 0x01 || b[1] != 0x01 || !bytes.Equal(b[4:headerSize], id) {
		return netip.AddrPort{}, false
	}
	end := headerSize + int(binary.BigEndian.Uint16(b[2:4]))
	if end > len(b) {
		return netip.AddrPort{}, false // truncated
	}
	var mapped, xored []netip.AddrPort
	for off := headerSize; off+4 <= end; {
		typ := binary.BigEndian.Uint16(b[off:])
		l := int(binary.BigEndian.Uint16(b[off+2:]))
		if off+4+l > end {
			break
		}
		v := b[off+4 : off+4+l]
		off += 4 + (l+3)&^3
		if typ != attrMappedAddress && typ != attrXORMappedAddress {
			continue
		}
		var ip []byte
		switch {
		case l == 8 && v[1] == familyIPv4:
			ip = bytes.Clone(v[4:8])
		case l == 20 && v[1] == familyIPv6:
			ip = bytes.Clone(v[4:20])
		default:
			continue
		}
		port := binary.BigEndian.Uint16(v[2:])
		if typ == attrXORMappedAddress {
			port ^= uint16(magicCookie >> 16)
			for i := range ip {
				ip[i] ^= id[i]
			}
			a, _ := netip.AddrFromSlice(ip)
			xored = append(xored, netip.AddrPortFrom(a.Unmap(), port))
		} else {
			a, _ := netip.AddrFromSlice(ip)
			mapped = append(mapped, netip.AddrPortFrom(a.Unmap(), port))
		}
	}
	switch {
	case len(xored) > 0:
		return xored[0], true
	case len(mapped) > 0:
		return mapped[0], true
	}
	return netip.AddrPort{}, false
}
