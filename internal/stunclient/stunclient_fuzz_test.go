package stunclient

import (
	"bytes"
	"encoding/binary"
	"net"
	"net/netip"
	"testing"

	"github.com/pion/stun/v3"

	"icebox/stunsrv"
)

// FuzzReadResponse checks how MappedAddress reads a Binding response. On
// any datagram readResponse must not panic and must agree with a strict
// reference: only a well-framed success response to our transaction, and
// the address of its first XOR-MAPPED-ADDRESS if well-formed, else of its
// first MAPPED-ADDRESS if well-formed. And for any request and address,
// the response icebox's responder (stunsrv.AppendBindingResponse) builds
// reads back as that address, and not for another transaction.
func FuzzReadResponse(f *testing.F) {
	tid := [stun.TransactionIDSize]byte{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}
	req := stun.MustBuild(stun.NewTransactionIDSetter(tid), stun.BindingRequest, stun.Fingerprint).Raw
	from := netip.MustParseAddrPort("198.51.100.7:54321")
	from6 := netip.MustParseAddrPort("[2001:db8::7]:443")
	ours := stunsrv.AppendBindingResponse(nil, req, from)
	f.Add(ours, tid[:], from.Addr().AsSlice(), from.Port())
	f.Add(stunsrv.AppendBindingResponse(nil, req, from6), tid[:], from6.Addr().AsSlice(), from6.Port())
	both := stun.MustBuild(stun.NewTransactionIDSetter(tid), stun.BindingSuccess,
		&stun.MappedAddress{IP: net.IPv4(10, 0, 0, 1), Port: 1},
		&stun.XORMappedAddress{IP: net.IPv4(192, 0, 2, 1), Port: 32853},
		stun.NewSoftware("test vector"), stun.NewShortTermIntegrity("VOkJxbRl1RmTxUk/WvJxBt"), stun.Fingerprint).Raw
	f.Add(both, tid[:], []byte{192, 0, 2, 1}, uint16(32853))
	refused := stun.MustBuild(stun.NewTransactionIDSetter(tid), stun.BindingError, stun.CodeBadRequest).Raw
	f.Add(refused, []byte{}, []byte{}, uint16(0))
	f.Add(ours[:len(ours)-10], []byte{}, []byte{}, uint16(0))
	f.Add([]byte("GET / HTTP/1.1\r\n\r\n"), []byte("\x00\x01"), []byte{1, 2, 3}, uint16(65535))

	f.Fuzz(func(t *testing.T, resp, idIn, ip []byte, port uint16) {
		// Any datagram, as the answer to the transaction it names and to
		// another one.
		var id [stun.TransactionIDSize]byte
		if len(resp) >= 20 {
			copy(id[:], resp[8:20])
		}
		got, err := readResponse(resp, id)
		want, wantOK := referenceMapped(resp, id)
		if (err == nil) != wantOK || got != want {
			t.Fatalf("readResponse(%x) = %v %v, reference %v %v", resp, got, err, want, wantOK)
		}
		id[len(id)-1] ^= 1
		if _, err := readResponse(resp, id); err == nil {
			t.Fatalf("readResponse(%x) accepted it for another transaction", resp)
		}

		// Round trip through the responder.
		copy(id[:], idIn)
		req := stun.MustBuild(stun.NewTransactionIDSetter(id), stun.BindingRequest).Raw
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
		out := stunsrv.AppendBindingResponse([]byte("dst"), req, ap)
		got, err = readResponse(out[3:], id)
		if want := netip.AddrPortFrom(addr.Unmap(), port); err != nil || got != want {
			t.Fatalf("response to %x for %v reads as %v %v", req, ap, got, err)
		}
		id[0] ^= 0x80
		if _, err := readResponse(out[3:], id); err == nil {
			t.Fatal("response accepted for another transaction")
		}
	})
}

// referenceMapped is the rule written out plainly.
func referenceMapped(b []byte, id [stun.TransactionIDSize]byte) (netip.AddrPort, bool) {
	const header = 20
	if len(b) < header || b[0] != 0x01 || b[1] != 0x01 || binary.BigEndian.Uint32(b[4:]) != magicCookie || !bytes.Equal(b[8:header], id[:]) {
		return netip.AddrPort{}, false
	}
	end := header + int(binary.BigEndian.Uint16(b[2:4]))
	if end > len(b) {
		return netip.AddrPort{}, false // truncated
	}
	first := map[uint16][]byte{}
	for off := header; off < end; {
		if off+4 > end {
			return netip.AddrPort{}, false // a torn attribute header
		}
		typ := binary.BigEndian.Uint16(b[off:])
		l := int(binary.BigEndian.Uint16(b[off+2:]))
		if off+4+(l+3)&^3 > end {
			return netip.AddrPort{}, false // an attribute past the end
		}
		if typ == 0x8020 {
			typ = 0x0020 // the draft's XOR-MAPPED-ADDRESS, which pion reads as the RFC's
		}
		if _, seen := first[typ]; !seen {
			first[typ] = b[off+4 : off+4+l]
		}
		off += 4 + (l+3)&^3
	}
	for _, typ := range []uint16{0x0020, 0x0001} { // XOR-MAPPED-ADDRESS, MAPPED-ADDRESS
		v := first[typ]
		var ip []byte
		switch {
		case len(v) == 8 && v[0] == 0 && v[1] == 1:
			ip = bytes.Clone(v[4:8])
		case len(v) == 20 && v[0] == 0 && v[1] == 2:
			ip = bytes.Clone(v[4:20])
		default:
			continue
		}
		port := binary.BigEndian.Uint16(v[2:])
		if typ == 0x0020 {
			port ^= uint16(magicCookie >> 16)
			key := append(binary.BigEndian.AppendUint32(nil, magicCookie), id[:]...)
			for i := range ip {
				ip[i] ^= key[i]
			}
		}
		a, _ := netip.AddrFromSlice(ip)
		return netip.AddrPortFrom(a.Unmap(), port), true
	}
	return netip.AddrPort{}, false
}

// magicCookie is RFC 8489's fixed cookie.
const magicCookie = 0x2112A442
