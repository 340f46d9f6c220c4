package attack

import (
	"encoding/binary"
	"errors"
	"io"
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/pion/stun/v3"

	"icebox/internal/credentials"
)

// rawTURN speaks TURN by hand over UDP or TCP, for what pion's client will
// not send: any XOR-PEER-ADDRESS bytes.
type rawTURN struct {
	t      *testing.T
	c      net.Conn
	stream bool
	user   string
	key    stun.MessageIntegrity
	nonce  stun.Nonce
}

func dialRawTURN(t *testing.T, network, addr string) *rawTURN {
	t.Helper()
	c, err := net.Dial(network+"4", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	u, p, _ := credentials.Mint([]byte(testSecret), "prober", time.Hour, time.Now())
	return &rawTURN{t: t, c: c, stream: network == "tcp", user: u, key: stun.NewLongTermIntegrity(u, "icebox", p)}
}

func (r *rawTURN) read() (*stun.Message, error) {
	buf := make([]byte, 2048)
	r.c.SetReadDeadline(time.Now().Add(5 * time.Second))
	n := 0
	if r.stream {
		if _, err := io.ReadFull(r.c, buf[:4]); err != nil {
			return nil, err
		}
		n = 20 + int(binary.BigEndian.Uint16(buf[2:4]))
		if buf[0]>>6 == 1 { // ChannelData, padded
			n = 4 + (int(binary.BigEndian.Uint16(buf[2:4]))+3)&^3
		}
		if _, err := io.ReadFull(r.c, buf[4:n]); err != nil {
			return nil, err
		}
	} else {
		var err error
		if n, err = r.c.Read(buf); err != nil {
			return nil, err
		}
	}
	m := &stun.Message{Raw: buf[:n]}
	if buf[0]>>6 == 1 {
		return m, nil // ChannelData: not a STUN message
	}
	return m, m.Decode()
}

// do sends a signed request with extra raw attributes and returns the
// answer with its transaction ID.
func (r *rawTURN) do(method stun.Method, attrs ...stun.Setter) *stun.Message {
	r.t.Helper()
	if r.nonce == nil {
		res := r.roundTrip(stun.MustBuild(stun.TransactionID, stun.NewType(stun.MethodAllocate, stun.ClassRequest)))
		if err := r.nonce.GetFrom(res); err != nil {
			r.t.Fatalf("no nonce: %v", res)
		}
	}
	s := append([]stun.Setter{stun.TransactionID, stun.NewType(method, stun.ClassRequest)}, attrs...)
	s = append(s, stun.NewUsername(r.user), stun.NewRealm("icebox"), &r.nonce, r.key, stun.Fingerprint)
	res := r.roundTrip(stun.MustBuild(s...))
	if code(res) == 438 { // stale nonce (e.g. a restarted server): take the new one
		if err := r.nonce.GetFrom(res); err != nil {
			r.t.Fatalf("438 without a nonce: %v", res)
		}
		s[0] = stun.TransactionID
		res = r.roundTrip(stun.MustBuild(s...))
	}
	return res
}

func (r *rawTURN) roundTrip(m *stun.Message) *stun.Message {
	r.t.Helper()
	if _, err := r.c.Write(m.Raw); err != nil {
		r.t.Fatal(err)
	}
	for {
		res, err := r.read()
		if err != nil {
			r.t.Fatalf("no answer to %v: %v", m.Type, err)
		}
		if res.Raw[0]>>6 == 0 && res.TransactionID == m.TransactionID {
			return res
		}
	}
}

func (r *rawTURN) send(b []byte) {
	r.t.Helper()
	if _, err := r.c.Write(b); err != nil {
		r.t.Fatal(err)
	}
}

func code(m *stun.Message) int {
	var ec stun.ErrorCodeAttribute
	if m.Type.Class != stun.ClassErrorResponse {
		return 0
	}
	if ec.GetFrom(m) != nil {
		return -1
	}
	return int(ec.Code)
}

// peerValue is an XOR-PEER-ADDRESS value for ip (4 or 16 bytes, written
// with the family its length says, or truncated) and port, XORed for txid.
func peerValue(family uint16, ip []byte, port int, txid [stun.TransactionIDSize]byte) []byte {
	v := make([]byte, 4+len(ip))
	binary.BigEndian.PutUint16(v, family)
	binary.BigEndian.PutUint16(v[2:], uint16(port)^0x2112)
	key := append(binary.BigEndian.AppendUint32(nil, 0x2112A442), txid[:]...)
	for i := range ip {
		v[4+i] = ip[i] ^ key[i]
	}
	return v
}

// peerAttr is an XOR-PEER-ADDRESS setter computed against the message's
// own transaction ID.
func peerAttr(family uint16, ip []byte, port int) stun.Setter {
	return setterFunc(func(m *stun.Message) error {
		m.Add(stun.AttrXORPeerAddress, peerValue(family, ip, port, m.TransactionID))
		return nil
	})
}

type setterFunc func(m *stun.Message) error

func (f setterFunc) AddTo(m *stun.Message) error { return f(m) }

type peerForm struct {
	name   string
	family uint16
	ip     string // parsed; 4 or 16 bytes on the wire as family says
	short  int    // >0: send only this many address bytes (pion reads them leniently)
	relay  bool   // a form of the relay address: permitted (IPv6 spellings: 443), but no packet may reach a non-relay port
}

// peerForms are the addresses a client may name to reach the host itself:
// every form of loopback and of the relay address, unspecified, link-local
// and the IPv6 disguises of IPv4. Only loopback is ever really reachable
// from them, so nothing in this table can send a packet off the machine.
var peerForms = []peerForm{
	{"relay address (127.0.0.1)", 1, "127.0.0.1", 0, true},
	{"loopback 127.0.0.2", 1, "127.0.0.2", 0, false},
	{"loopback 127.1.2.3", 1, "127.1.2.3", 0, false},
	{"loopback 127.255.255.254", 1, "127.255.255.254", 0, false},
	{"unspecified 0.0.0.0", 1, "0.0.0.0", 0, false},
	{"this network 0.0.0.1", 1, "0.0.0.1", 0, false},
	{"IPv4 family, 2 address bytes (127.0.x.x)", 1, "127.0.0.2", 2, false},
	{"IPv4 family, 3 address bytes", 1, "127.0.0.2", 3, false},
	{"mapped ::ffff:127.0.0.2", 2, "::ffff:127.0.0.2", 0, false},
	{"mapped relay ::ffff:127.0.0.1", 2, "::ffff:127.0.0.1", 0, true},
	{"compatible ::127.0.0.2", 2, "::127.0.0.2", 0, false},
	{"compatible relay ::127.0.0.1", 2, "::127.0.0.1", 0, true},
	{"translated ::ffff:0:127.0.0.2", 2, "::ffff:0:7f00:2", 0, false},
	{"NAT64 64:ff9b::127.0.0.2", 2, "64:ff9b::7f00:2", 0, false},
	{"NAT64 relay 64:ff9b::127.0.0.1", 2, "64:ff9b::7f00:1", 0, true},
	{"local NAT64 64:ff9b:1::127.0.0.2", 2, "64:ff9b:1::7f00:2", 0, false},
	{"6to4 2002:7f00:2::", 2, "2002:7f00:2::", 0, false},
	{"6to4 with host bits 2002:7f00:2:ffff::1", 2, "2002:7f00:2:ffff::1", 0, false},
	{"6to4 relay 2002:7f00:1::", 2, "2002:7f00:1::", 0, true},
	{"Teredo 2001::", 2, "2001:0:4136:e378:8000:63bf:80ff:fffd", 0, false},
	{"IPv6 loopback ::1", 2, "::1", 0, false},
	{"IPv6 unspecified ::", 2, "::", 0, false},
	{"link-local fe80::1", 2, "fe80::1", 0, false},
	{"unique local fd00::1", 2, "fd00::1", 0, false},
	{"site-local fec0::1", 2, "fec0::1", 0, false},
	{"IPv6 family, 4 address bytes", 2, "127.0.0.2", 4, false},
	{"mapped, 12 address bytes", 2, "::ffff:127.0.0.2", 12, false},
	{"multicast ff02::1", 2, "ff02::1", 0, false},
}

func (f peerForm) bytes() []byte {
	ip := net.ParseIP(f.ip)
	b := []byte(ip.To16())
	if f.family == 1 {
		b = ip.To4()
	}
	if f.short > 0 {
		b = b[:f.short]
	}
	return b
}

// TestPeerForms names every form in peerForms, over UDP and TCP, in
// CreatePermission, ChannelBind and Send (and ChannelData where a channel
// was bound), aiming at a port with listeners on five loopback addresses.
// Nothing may arrive; a refused form gets 403.
func TestPeerForms(t *testing.T) {
	d := start(t, config(t))
	// One port on several loopback addresses; anything arriving counts.
	var listeners []net.PacketConn
	var port int
	for try := 0; try < 20 && listeners == nil; try++ {
		l0, err := net.ListenPacket("udp4", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port = l0.LocalAddr().(*net.UDPAddr).Port
		ls := []net.PacketConn{l0}
		for _, a := range []string{"127.0.0.2", "127.1.2.3", "127.255.255.254", "127.0.0.0"} {
			l, err := net.ListenPacket("udp4", net.JoinHostPort(a, strconv.Itoa(port)))
			if err != nil {
				break
			}
			ls = append(ls, l)
		}
		if l6, err := net.ListenPacket("udp6", net.JoinHostPort("::1", strconv.Itoa(port))); err == nil {
			ls = append(ls, l6)
		}
		if len(ls) >= 5 {
			listeners = ls
		} else {
			for _, l := range ls {
				l.Close()
			}
		}
	}
	if listeners == nil {
		t.Fatal("no port free on the loopback addresses")
	}
	for _, l := range listeners {
		t.Cleanup(func() { l.Close() })
	}

	tried, refused := 0, 0
	for _, network := range []string{"udp", "tcp"} {
		c := dialRawTURN(t, network, d.stun)
		if res := c.do(stun.MethodAllocate, stun.RawAttribute{Type: stun.AttrRequestedTransport, Value: []byte{17, 0, 0, 0}}); res.Type.Class != stun.ClassSuccessResponse {
			t.Fatalf("%s allocate: %v", network, res)
		}
		for i, f := range peerForms {
			channel := uint16(0x4000 + i)
			for _, method := range []stun.Method{stun.MethodCreatePermission, stun.MethodChannelBind} {
				attrs := []stun.Setter{peerAttr(f.family, f.bytes(), port)}
				if method == stun.MethodChannelBind {
					attrs = append(attrs, stun.RawAttribute{Type: stun.AttrChannelNumber, Value: []byte{byte(channel >> 8), byte(channel), 0, 0}})
				}
				res := c.do(method, attrs...)
				tried++
				// An IPv6 spelling of the relay passes the policy, but
				// relays are IPv4: 443 (RFC 8656 §9.1), never 403; an
				// IPv4-mapped one too, as an IPv6-family address.
				v6 := f.relay && f.family == 2
				switch got := code(res); {
				case v6 && got != 443:
					t.Errorf("%s %v %s: %v, want 443 (peer address family mismatch)", network, method, f.name, res)
				case v6:
					refused++
				case f.relay && got != 0 && !(got == 400 && method == stun.MethodChannelBind):
					// 400 is right when an earlier form named the same
					// transport address on another channel.
					t.Errorf("%s %v %s: %v, want success (another relay may be there)", network, method, f.name, res)
				case !f.relay && got == 0:
					t.Errorf("%s %v %s: permitted", network, method, f.name)
				case !f.relay && got != 403 && got != 400:
					t.Errorf("%s %v %s: error %d, want 403", network, method, f.name, got)
				case got != 0:
					refused++
				}
			}
			// Send indication, and ChannelData on the channel if bound.
			send := stun.MustBuild(stun.TransactionID, stun.NewType(stun.MethodSend, stun.ClassIndication),
				peerAttr(f.family, f.bytes(), port), stun.RawAttribute{Type: stun.AttrData, Value: []byte("leak:" + f.name)})
			c.send(send.Raw)
			cd := make([]byte, 8)
			binary.BigEndian.PutUint16(cd, channel)
			binary.BigEndian.PutUint16(cd[2:], 4)
			copy(cd[4:], "leak")
			c.send(cd)
		}
		// Barrier: the server handles one client's messages in order, and
		// loopback delivery is done when the sender's write returns.
		if res := c.do(stun.MethodRefresh, stun.RawAttribute{Type: stun.AttrLifetime, Value: []byte{0, 0, 0, 0}}); res.Type.Class != stun.ClassSuccessResponse {
			t.Fatalf("%s release: %v", network, res)
		}
	}
	arrived := 0
	buf := make([]byte, 2048)
	for _, l := range listeners {
		for {
			l.SetReadDeadline(time.Now())
			n, from, err := l.ReadFrom(buf)
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			arrived++
			t.Errorf("%s received %q from %v", l.LocalAddr(), buf[:n], from)
		}
	}
	t.Logf("%d forms × 2 transports: %d CreatePermission/ChannelBind requests, %d refused, %d Sends and %d ChannelData; %d packets arrived at %d listeners",
		len(peerForms), tried, refused, 2*len(peerForms), 2*len(peerForms), arrived, len(listeners))
	d.alive()
}
