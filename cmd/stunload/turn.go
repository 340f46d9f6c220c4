package main

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/pion/stun/v3"

	"icebox/internal/credentials"
)

// turnClient is a minimal TURN client over one UDP or TCP connection:
// enough to allocate, bind channels, create permissions and delete the
// allocation, with long-term credentials minted from a REST secret.
type turnClient struct {
	conn   net.Conn
	stream bool
	r      *bufio.Reader
	user   stun.Username
	realm  stun.Realm
	nonce  stun.Nonce
	key    stun.MessageIntegrity
	buf    []byte
}

func dialTURN(network, addr string, secret []byte, realm string) (*turnClient, error) {
	c, err := net.Dial(network, addr)
	if err != nil {
		return nil, err
	}
	username, password, _ := credentials.Mint(secret, "stunload", time.Hour, time.Now())
	tc := &turnClient{
		conn: c, stream: network != "udp" && network != "udp4" && network != "udp6",
		user: stun.NewUsername(username), realm: stun.NewRealm(realm),
		key: stun.NewLongTermIntegrity(username, realm, password),
		buf: make([]byte, 2048),
	}
	if tc.stream {
		tc.r = newStreamReader(c)
	}
	return tc, nil
}

type setter func(*stun.Message) error

func (f setter) AddTo(m *stun.Message) error { return f(m) }

func rawAttr(t stun.AttrType, v []byte) stun.Setter {
	return setter(func(m *stun.Message) error { m.Add(t, v); return nil })
}

var udpTransport = rawAttr(stun.AttrRequestedTransport, []byte{17, 0, 0, 0})

func peerAttr(p netip.AddrPort) stun.Setter {
	return setter(func(m *stun.Message) error {
		return stun.XORMappedAddress{IP: p.Addr().AsSlice(), Port: int(p.Port())}.AddToAs(m, stun.AttrXORPeerAddress)
	})
}

// readFrame returns the next STUN or ChannelData message.
func (c *turnClient) readFrame() ([]byte, error) {
	if !c.stream {
		n, err := c.conn.Read(c.buf)
		return c.buf[:n], err
	}
	b, err := peekFrame(c.r)
	if err != nil {
		return nil, err
	}
	// b stays valid until the next read from r.
	c.r.Discard(len(b))
	return b, nil
}

// do sends an authenticated request and returns the success response,
// fetching or renewing the nonce as the server asks.
func (c *turnClient) do(method stun.Method, attrs ...stun.Setter) (*stun.Message, error) {
	for attempt := 0; attempt < 3; attempt++ {
		s := append([]stun.Setter{stun.TransactionID, stun.NewType(method, stun.ClassRequest)}, attrs...)
		if c.nonce != nil {
			s = append(s, c.user, c.realm, c.nonce, c.key)
		}
		req, err := stun.Build(append(s, stun.Fingerprint)...)
		if err != nil {
			return nil, err
		}
		res, err := c.roundTrip(req)
		if err != nil {
			return nil, err
		}
		if res.Type.Class == stun.ClassSuccessResponse {
			return res, nil
		}
		var code stun.ErrorCodeAttribute
		code.GetFrom(res)
		if code.Code != stun.CodeUnauthorized && code.Code != stun.CodeStaleNonce {
			return nil, fmt.Errorf("%v: error %d %s", method, code.Code, code.Reason)
		}
		if err := c.nonce.GetFrom(res); err != nil {
			return nil, fmt.Errorf("%v: %d without a nonce", method, code.Code)
		}
	}
	return nil, fmt.Errorf("%v: refused", method)
}

func (c *turnClient) roundTrip(req *stun.Message) (*stun.Message, error) {
	for rto := 500 * time.Millisecond; rto < 8*time.Second; rto *= 2 {
		if _, err := c.conn.Write(req.Raw); err != nil {
			return nil, err
		}
		c.conn.SetReadDeadline(time.Now().Add(rto))
		for {
			b, err := c.readFrame()
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() && !c.stream {
				break // retransmit
			}
			if err != nil {
				return nil, err
			}
			if b[0]>>6 != 0 {
				continue // ChannelData from an earlier run
			}
			res := &stun.Message{Raw: append([]byte(nil), b...)}
			if res.Decode() == nil && res.TransactionID == req.TransactionID {
				c.conn.SetReadDeadline(time.Time{})
				return res, nil
			}
		}
	}
	return nil, fmt.Errorf("%v: no answer", req.Type)
}

func (c *turnClient) allocate() (netip.AddrPort, error) {
	res, err := c.do(stun.MethodAllocate, udpTransport)
	if err != nil {
		return netip.AddrPort{}, err
	}
	var relay stun.XORMappedAddress
	if err := relay.GetFromAs(res, stun.AttrXORRelayedAddress); err != nil {
		return netip.AddrPort{}, err
	}
	ip, _ := netip.AddrFromSlice(relay.IP)
	return netip.AddrPortFrom(ip.Unmap(), uint16(relay.Port)), nil
}

func (c *turnClient) channelBind(number uint16, peer netip.AddrPort) error {
	_, err := c.do(stun.MethodChannelBind, rawAttr(stun.AttrChannelNumber, []byte{byte(number >> 8), byte(number), 0, 0}), peerAttr(peer))
	return err
}

func (c *turnClient) createPermission(peer netip.AddrPort) error {
	_, err := c.do(stun.MethodCreatePermission, peerAttr(peer))
	return err
}

// release deletes the allocation (Refresh with lifetime 0), giving up
// quickly: it also runs when stunload is done.
func (c *turnClient) release() error {
	c.conn.SetDeadline(time.Now().Add(time.Second))
	defer c.conn.SetDeadline(time.Time{})
	_, err := c.do(stun.MethodRefresh, rawAttr(stun.AttrLifetime, []byte{0, 0, 0, 0}))
	return err
}

func (c *turnClient) Close() error { return c.conn.Close() }
