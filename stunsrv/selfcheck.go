package stunsrv

import (
	"context"
	"fmt"
	"net"
	"net/netip"
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
		if _, err := MappedAddress(ctx, netip.AddrPortFrom(addr, ap.Port()).String()); err != nil {
			return fmt.Errorf("stun self-check on %v: %w", ap, err)
		}
	}
	return nil
}
