// Package stunclient asks a STUN server which address our UDP packets
// arrive from (a Binding request, RFC 8489): icebox's one STUN client,
// used by public_ip: auto and by icebox check.
package stunclient

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/pion/stun/v3"
)

// defaultTimeout bounds a request whose context has no deadline.
const defaultTimeout = 3 * time.Second

// RefusedError is a Binding error response: something answers STUN at
// the address but refused a plain Binding request.
type RefusedError struct {
	Code   int
	Reason string
}

func (e *RefusedError) Error() string {
	return fmt.Sprintf("Binding error %d %s", e.Code, e.Reason)
}

// MappedAddress asks the STUN server at server (host:port) which address
// our UDP packets arrive from. It retransmits as RFC 8489 §6.2.1 does
// until ctx's deadline (3 s without one). The socket is connected, so an
// ICMP "port unreachable" comes back as an error wrapping
// syscall.ECONNREFUSED rather than as a silent timeout; no answer in time
// is an error for which net.Error's Timeout is true. An error response
// is a *RefusedError.
func MappedAddress(ctx context.Context, server string) (netip.AddrPort, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "udp", server)
	if err != nil {
		return netip.AddrPort{}, err
	}
	defer conn.Close()
	deadline, ok := ctx.Deadline()
	if !ok {
		deadline = time.Now().Add(defaultTimeout)
	}
	// A cancelled ctx ends the wait at once.
	stop := context.AfterFunc(ctx, func() { conn.SetReadDeadline(time.Unix(1, 0)) })
	defer stop()

	req, err := stun.Build(stun.TransactionID, stun.BindingRequest, stun.Fingerprint)
	if err != nil {
		return netip.AddrPort{}, err
	}
	buf := make([]byte, 1500)
	for rto := 250 * time.Millisecond; ; rto = min(2*rto, 2*time.Second) {
		if _, err := conn.Write(req.Raw); err != nil {
			return netip.AddrPort{}, fmt.Errorf("asking %s: %w", server, err)
		}
		wait := time.Now().Add(rto)
		if wait.After(deadline) {
			wait = deadline
		}
		conn.SetReadDeadline(wait)
		// A cancel whose past deadline the line above overwrote would
		// wait up to rto unseen: put it back.
		if ctx.Err() != nil {
			conn.SetReadDeadline(time.Unix(1, 0))
		}
		for {
			n, err := conn.Read(buf)
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() && ctx.Err() == nil && time.Now().Before(deadline) {
				break // retransmit
			}
			if err != nil {
				return netip.AddrPort{}, fmt.Errorf("no answer from %s: %w", server, err)
			}
			ap, err := readResponse(buf[:n], req.TransactionID)
			if errors.Is(err, errNotOurs) {
				continue
			}
			return ap, err
		}
	}
}

var (
	errNotOurs = errors.New("not a response to our Binding request")
	// ErrNoMappedAddress is a success response that names no address.
	ErrNoMappedAddress = errors.New("Binding answer without a mapped address")
)

// readResponse reads b as the answer to Binding transaction id: the
// mapped address of a success response, a *RefusedError for an error
// response, errNotOurs for anything else. XOR-MAPPED-ADDRESS wins over
// MAPPED-ADDRESS (sent by RFC 3489 servers), which NAT ALGs rewrite.
// Only a well-formed attribute is read: IPv4 in 8 bytes, IPv6 in 20.
func readResponse(b []byte, id [stun.TransactionIDSize]byte) (netip.AddrPort, error) {
	m := &stun.Message{Raw: b}
	// The first two bits of a STUN message are zero; pion ignores them.
	if m.Decode() != nil || b[0]&0xC0 != 0 || m.TransactionID != id {
		return netip.AddrPort{}, errNotOurs
	}
	switch m.Type {
	case stun.BindingSuccess:
	case stun.BindingError:
		var code stun.ErrorCodeAttribute
		code.GetFrom(m)
		return netip.AddrPort{}, &RefusedError{Code: int(code.Code), Reason: string(code.Reason)}
	default:
		return netip.AddrPort{}, errNotOurs
	}
	if wellFormed(m, stun.AttrXORMappedAddress) {
		var a stun.XORMappedAddress
		if a.GetFrom(m) == nil {
			return addrPort(a.IP, a.Port), nil
		}
	}
	if wellFormed(m, stun.AttrMappedAddress) {
		var a stun.MappedAddress
		if a.GetFrom(m) == nil {
			return addrPort(a.IP, a.Port), nil
		}
	}
	return netip.AddrPort{}, ErrNoMappedAddress
}

// wellFormed says whether m's first attribute t is an address of its
// family's exact length.
func wellFormed(m *stun.Message, t stun.AttrType) bool {
	v, err := m.Get(t)
	return err == nil && (len(v) == 8 && v[0] == 0 && v[1] == 1 || len(v) == 20 && v[0] == 0 && v[1] == 2)
}

func addrPort(ip net.IP, port int) netip.AddrPort {
	a, _ := netip.AddrFromSlice(ip)
	return netip.AddrPortFrom(a.Unmap(), uint16(port))
}
