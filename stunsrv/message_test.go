package stunsrv

import (
	"bytes"
	"encoding/binary"
	"net"
	"net/netip"
	"testing"

	"github.com/pion/stun/v3"

	"icebox/internal/stunwire"
)

// RFC 5769 test vectors.
var (
	rfc5769Request = []byte("\x00\x01\x00\x58" +
		"\x21\x12\xa4\x42" +
		"\xb7\xe7\xa7\x01\xbc\x34\xd6\x86\xfa\x87\xdf\xae" +
		"\x80\x22\x00\x10" + "STUN test client" +
		"\x00\x24\x00\x04" + "\x6e\x00\x01\xff" +
		"\x80\x29\x00\x08" + "\x93\x2f\xf9\xb1\x51\x26\x3b\x36" +
		"\x00\x06\x00\x09" + "\x65\x76\x74\x6a\x3a\x68\x36\x76\x59\x20\x20\x20" +
		"\x00\x08\x00\x14" + "\x9a\xea\xa7\x0c\xbf\xd8\xcb\x56\x78\x1e\xf2\xb5\xb2\xd3\xf2\x49\xc1\xb5\x71\xa2" +
		"\x80\x28\x00\x04" + "\xe5\x7a\x3b\xcf")
	rfc5769ResponseIPv4 = []byte("\x01\x01\x00\x3c" +
		"\x21\x12\xa4\x42" +
		"\xb7\xe7\xa7\x01\xbc\x34\xd6\x86\xfa\x87\xdf\xae" +
		"\x80\x22\x00\x0b" + "\x74\x65\x73\x74\x20\x76\x65\x63\x74\x6f\x72\x20" +
		"\x00\x20\x00\x08" + "\x00\x01\xa1\x47\xe1\x12\xa6\x43" +
		"\x00\x08\x00\x14" + "\x2b\x91\xf5\x99\xfd\x9e\x90\xc3\x8c\x74\x89\xf9\x2a\xf9\xba\x53\xf0\x6b\xe7\xd7" +
		"\x80\x28\x00\x04" + "\xc0\x7d\x4c\x96")
	rfc5769ResponseIPv6 = []byte("\x01\x01\x00\x48" +
		"\x21\x12\xa4\x42" +
		"\xb7\xe7\xa7\x01\xbc\x34\xd6\x86\xfa\x87\xdf\xae" +
		"\x80\x22\x00\x0b" + "\x74\x65\x73\x74\x20\x76\x65\x63\x74\x6f\x72\x20" +
		"\x00\x20\x00\x14" + "\x00\x02\xa1\x47" +
		"\x01\x13\xa9\xfa\xa5\xd3\xf1\x79\xbc\x25\xf4\xb5\xbe\xd2\xb9\xd9" +
		"\x00\x08\x00\x14" + "\xa3\x82\x95\x4e\x4b\xe6\x7b\xf1\x17\x84\xc9\x7c\x82\x92\xc2\x75\xbf\xe3\xed\x41" +
		"\x80\x28\x00\x04" + "\xc8\xfb\x0b\x4c")
)

// attr returns the first attribute of type typ in a well-formed message, header included.
func attr(t *testing.T, msg []byte, typ uint16) []byte {
	t.Helper()
	for off := stunwire.HeaderSize; off+4 <= len(msg); {
		l := int(binary.BigEndian.Uint16(msg[off+2:]))
		if binary.BigEndian.Uint16(msg[off:]) == typ {
			return msg[off : off+4+l]
		}
		off += 4 + l + (4-l%4)%4
	}
	t.Fatalf("attribute %#04x not in message", typ)
	return nil
}

func TestRFC5769Vectors(t *testing.T) {
	if got := classify(rfc5769Request); got != kindBinding {
		t.Fatalf("sample request classified %v, want binding", got)
	}
	for name, vec := range map[string][]byte{"ipv4": rfc5769ResponseIPv4, "ipv6": rfc5769ResponseIPv6} {
		if got := classify(vec); got != kindOtherSTUN {
			t.Errorf("%s response classified %v, want other-stun (fingerprint must check)", name, got)
		}
	}

	// Our answer to a request with the vectors' transaction ID from the
	// vectors' addresses must carry the vectors' XOR-MAPPED-ADDRESS.
	for _, tc := range []struct {
		from   string
		vector []byte
	}{
		{"192.0.2.1:32853", rfc5769ResponseIPv4},
		{"[2001:db8:1234:5678:11:2233:4455:6677]:32853", rfc5769ResponseIPv6},
	} {
		resp := AppendBindingResponse(nil, rfc5769Request, netip.MustParseAddrPort(tc.from))
		if got, want := attr(t, resp, stunwire.AttrXORMappedAddress), attr(t, tc.vector, stunwire.AttrXORMappedAddress); !bytes.Equal(got, want) {
			t.Errorf("from %s: XOR-MAPPED-ADDRESS %x, want %x", tc.from, got, want)
		}
		if classify(resp) != kindOtherSTUN {
			t.Errorf("from %s: our response does not pass our own fingerprint check", tc.from)
		}
	}

	// A flipped bit anywhere before the FINGERPRINT makes the request invalid.
	bad := bytes.Clone(rfc5769Request)
	bad[30] ^= 1
	if got := classify(bad); got != kindMalformed {
		t.Errorf("corrupted request classified %v, want malformed", got)
	}
}

func TestResponseDecodesWithPion(t *testing.T) {
	for _, from := range []string{"203.0.113.7:5000", "[2001:db8::1]:6000", "[::ffff:198.51.100.2]:7000"} {
		for _, withFingerprint := range []bool{false, true} {
			setters := []stun.Setter{stun.TransactionID, stun.BindingRequest}
			if withFingerprint {
				setters = append(setters, stun.Fingerprint)
			}
			req := stun.MustBuild(setters...)
			if classify(req.Raw) != kindBinding {
				t.Fatalf("pion's request classified %v", classify(req.Raw))
			}
			ap := netip.MustParseAddrPort(from)
			resp := &stun.Message{Raw: AppendBindingResponse(nil, req.Raw, ap)}
			if err := resp.Decode(); err != nil {
				t.Fatalf("decode: %v", err)
			}
			if resp.Type != stun.BindingSuccess || resp.TransactionID != req.TransactionID {
				t.Fatalf("got %v %x, want binding success %x", resp.Type, resp.TransactionID, req.TransactionID)
			}
			var xor stun.XORMappedAddress
			if err := xor.GetFrom(resp); err != nil {
				t.Fatal(err)
			}
			if got := netip.AddrPortFrom(netip.MustParseAddr(xor.IP.String()), uint16(xor.Port)); got != netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()) {
				t.Errorf("mapped %v, want %v", got, ap)
			}
			if withFingerprint != resp.Contains(stun.AttrFingerprint) {
				t.Errorf("fingerprint present %v, want %v", resp.Contains(stun.AttrFingerprint), withFingerprint)
			}
			if withFingerprint {
				if err := stun.Fingerprint.Check(resp); err != nil {
					t.Errorf("fingerprint: %v", err)
				}
			}
			if resp.Contains(stun.AttrSoftware) || len(resp.Raw) > len(req.Raw)+32 {
				t.Errorf("response of %d bytes to a %d-byte request is bigger than needed", len(resp.Raw), len(req.Raw))
			}
		}
	}
}

func TestRFC3489ClientGetsMappedAddress(t *testing.T) {
	req := make([]byte, stunwire.HeaderSize)
	binary.BigEndian.PutUint16(req, typeBindingRequest)
	copy(req[4:], "0123456789abcdef") // 128-bit transaction ID, no cookie
	if classify(req) != kindBinding {
		t.Fatalf("classic request classified %v", classify(req))
	}
	resp := AppendBindingResponse(nil, req, netip.MustParseAddrPort("192.0.2.1:32853"))
	want := []byte{0x00, 0x01, 0x00, 0x08, 0x00, 0x01, 0x80, 0x55, 192, 0, 2, 1}
	if got := attr(t, resp, stunwire.AttrMappedAddress); !bytes.Equal(got, want) {
		t.Errorf("MAPPED-ADDRESS %x, want %x", got, want)
	}
	if !bytes.Equal(resp[4:20], req[4:20]) {
		t.Error("transaction ID not echoed")
	}
}

func TestClassify(t *testing.T) {
	valid := stun.MustBuild(stun.TransactionID, stun.BindingRequest, stun.Fingerprint).Raw
	allocate := stun.MustBuild(stun.TransactionID, stun.NewType(stun.MethodAllocate, stun.ClassRequest)).Raw
	indication := stun.MustBuild(stun.TransactionID, stun.NewType(stun.MethodBinding, stun.ClassIndication)).Raw
	withLen := func(b []byte, l uint16) []byte {
		b = bytes.Clone(b)
		binary.BigEndian.PutUint16(b[2:], l)
		return b
	}
	badAttrLen := bytes.Clone(valid)
	binary.BigEndian.PutUint16(badAttrLen[stunwire.HeaderSize+2:], 200)
	fingerprintNotLast := append(bytes.Clone(valid), 0, 0x24, 0, 4, 1, 2, 3, 4)
	binary.BigEndian.PutUint16(fingerprintNotLast[2:], uint16(len(fingerprintNotLast)-stunwire.HeaderSize))

	for _, tc := range []struct {
		name string
		in   []byte
		want datagramKind
	}{
		{"binding with fingerprint", valid, kindBinding},
		{"binding without attributes", stun.MustBuild(stun.TransactionID, stun.BindingRequest).Raw, kindBinding},
		{"allocate", allocate, kindOtherSTUN},
		{"indication", indication, kindIndication},
		{"channel data", []byte{0x40, 0x00, 0x00, 0x02, 0xAA, 0xBB}, kindChannelData},
		{"channel data longer than datagram", []byte{0x40, 0x00, 0x00, 0x09, 0xAA}, kindMalformed},
		{"empty", nil, kindMalformed},
		{"three bytes", []byte{0, 1, 0}, kindMalformed},
		{"truncated header", valid[:19], kindMalformed},
		{"truncated body", valid[:len(valid)-1], kindMalformed},
		{"length too long", withLen(valid, uint16(len(valid))), kindMalformed},
		{"length not multiple of 4", withLen(valid[:len(valid)-2], uint16(len(valid)-stunwire.HeaderSize-2)), kindMalformed},
		{"top bits set", append([]byte{0xC0}, valid[1:]...), kindMalformed},
		{"attribute overruns", badAttrLen, kindMalformed},
		{"fingerprint not last", fingerprintNotLast, kindMalformed},
		{"classic allocate", func() []byte { b := bytes.Clone(allocate); b[4] = 0; return b }(), kindMalformed},
		{"http", []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"), kindMalformed},
		{"channel from RFC 5766's wider range", []byte{0x7d, 0x06, 0x00, 0x00}, kindChannelData},
		{"not a channel", []byte{0x80, 0x00, 0x00, 0x00}, kindMalformed},
	} {
		if got := classify(tc.in); got != tc.want {
			t.Errorf("%s: got %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestBindingPathAllocatesNothing(t *testing.T) {
	req := stun.MustBuild(stun.TransactionID, stun.BindingRequest, stun.Fingerprint).Raw
	from := netip.MustParseAddrPort("[2001:db8::1]:6000")
	dst := make([]byte, 0, maxResponseSize)
	if n := testing.AllocsPerRun(100, func() {
		if classify(req) == kindBinding {
			dst = AppendBindingResponse(dst[:0], req, from)
		}
	}); n != 0 {
		t.Errorf("classify+answer allocates %v times per request", n)
	}
}

func BenchmarkBindingResponse(b *testing.B) {
	req := stun.MustBuild(stun.TransactionID, stun.BindingRequest, stun.Fingerprint).Raw
	from := netip.AddrPortFrom(netip.MustParseAddr("198.51.100.7"), 40000)
	dst := make([]byte, 0, maxResponseSize)
	b.ReportAllocs()
	b.SetBytes(int64(len(req)))
	for b.Loop() {
		if classify(req) != kindBinding {
			b.Fatal("not a binding")
		}
		dst = AppendBindingResponse(dst[:0], req, from)
	}
}

func FuzzClassify(f *testing.F) {
	f.Add(rfc5769Request)
	f.Add(rfc5769ResponseIPv4)
	f.Add(stun.MustBuild(stun.TransactionID, stun.BindingRequest).Raw)
	f.Add([]byte{0x40, 0x00, 0x00, 0x02, 0xAA, 0xBB})
	f.Fuzz(func(t *testing.T, b []byte) {
		kind := classify(b)
		if kind != kindBinding {
			return
		}
		from := netip.AddrPortFrom(netip.AddrFrom4([4]byte{192, 0, 2, 1}), 1)
		if len(b)%2 == 1 {
			from = netip.AddrPortFrom(netip.IPv6Loopback(), 2)
		}
		resp := AppendBindingResponse(nil, b, from)
		if len(resp) > maxResponseSize {
			t.Fatalf("response of %d bytes exceeds %d", len(resp), maxResponseSize)
		}
		if binary.BigEndian.Uint32(b[4:8]) == stunwire.MagicCookie {
			m := &stun.Message{Raw: resp}
			if err := m.Decode(); err != nil {
				t.Fatalf("our response does not decode: %v", err)
			}
			var xor stun.XORMappedAddress
			if err := xor.GetFrom(m); err != nil || xor.Port != int(from.Port()) || !xor.IP.Equal(net.IP(from.Addr().AsSlice())) {
				t.Fatalf("XOR-MAPPED-ADDRESS %v (%v), want %v", xor, err, from)
			}
		}
	})
}
