package stunsrv

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"
)

// SelfCheck sends one Binding request to each UDP address the server
// listens on and waits for the answer: a server whose sockets are open but
// whose readers are stuck fails it. The systemd watchdog and /readyz use it.
// Wildcard addresses are checked over loopback.
func (s *Server) SelfCheck(ctx context.Context) error {
	seen := map[netip.AddrPort]bool{}
	for _, pc := range s.udp {
		ap := pc.LocalAddr().(*net.UDPAddr).AddrPort()
		if seen[ap] {
			continue
		}
		seen[ap] = true
		addr := ap.Addr().Unmap()
		if addr.IsUnspecified() {
			addr = netip.MustParseAddr("127.0.0.1")
		}
		if err := bindOnce(ctx, netip.AddrPortFrom(addr, ap.Port())); err != nil {
			return fmt.Errorf("stun self-check on %v: %w", ap, err)
		}
	}
	return nil
}

func bindOnce(ctx context.Context, to netip.AddrPort) error {
	c, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(to))
	if err != nil {
		return err
	}
	defer c.Close()
	dl, ok := ctx.Deadline()
	if !ok {
		dl = time.Now().Add(2 * time.Second)
	}
	c.SetDeadline(dl)
	req := make([]byte, headerSize)
	binary.BigEndian.PutUint16(req, typeBindingRequest)
	binary.BigEndian.PutUint32(req[4:], magicCookie)
	rand.Read(req[8:])
	if _, err := c.Write(req); err != nil {
		return err
	}
	buf := make([]byte, 128)
	for {
		n, err := c.Read(buf)
		if err != nil {
			return err
		}
		if n >= headerSize && binary.BigEndian.Uint16(buf) == typeBindingResponse && string(buf[8:20]) == string(req[8:20]) {
			return nil
		}
		if ctx.Err() != nil {
			return errors.New("no answer")
		}
	}
}
