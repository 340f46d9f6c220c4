package udpio

import (
	"errors"
	"net"
	"net/netip"
	"slices"
	"syscall"
	"testing"
	"time"
)

// deadline bounds a wait for what loopback delivers at once; only a bug
// reaches it.
const deadline = 5 * time.Second

// TestBatchSendSkipsARefusedDatagram sends batches with a destination the
// kernel refuses (port 0: sendmmsg fails with EINVAL) at the start, in the
// middle, at the end and twice in a row, on a real UDP socket: every other
// datagram must arrive, and flush must report exactly the refused ones.
// It does so on IPv4 and IPv6 sockets, from the kernel's choice of source
// and from a chosen one (IP_PKTINFO).
func TestBatchSendSkipsARefusedDatagram(t *testing.T) {
	for _, fam := range []struct{ network, loopback string }{{"udp4", "127.0.0.1"}, {"udp6", "::1"}} {
		ip := netip.MustParseAddr(fam.loopback)
		listen := func(t *testing.T) *net.UDPConn {
			c, err := net.ListenUDP(fam.network, net.UDPAddrFromAddrPort(netip.AddrPortFrom(ip, 0)))
			if err != nil {
				t.Skipf("%s: %v", fam.network, err)
			}
			t.Cleanup(func() { c.Close() })
			return c
		}
		for _, tc := range []struct {
			name    string
			count   int
			refused []int // indexes of the datagrams sent to port 0
		}{
			{"first", 8, []int{0}},
			{"middle", 8, []int{3}},
			{"last", 8, []int{7}},
			{"two in a row", 8, []int{2, 3}},
			{"full batch", BatchSize, []int{5, 20}},
		} {
			for _, from := range []string{"kernel's", "chosen"} {
				t.Run(fam.network+"/"+tc.name+"/"+from+" source", func(t *testing.T) {
					tx, rx := listen(t), listen(t)
					rc, err := tx.SyscallConn()
					if err != nil {
						t.Fatal(err)
					}
					to := rx.LocalAddr().(*net.UDPAddr).AddrPort()
					var src Local
					if from == "chosen" {
						src.IP = ip
					}
					refusedTo := netip.AddrPortFrom(ip, 0)
					payloads := make([][]byte, tc.count)
					var wantBytes int
					for i := range payloads {
						// Lengths differ, so that failedBytes is checked.
						payloads[i] = append([]byte{byte(i)}, make([]byte, i)...)
						if slices.Contains(tc.refused, i) {
							wantBytes += len(payloads[i])
						}
					}
					dest := func(i int) netip.AddrPort {
						if slices.Contains(tc.refused, i) {
							return refusedTo
						}
						return to
					}

					w := NewWriter(rc, fam.network == "udp6", tc.count)
					for i, p := range payloads {
						w.Queue(p, dest(i), src)
					}
					if w.Pending() != tc.count || w.Cap() != tc.count {
						t.Fatalf("queued %d of %d, room for %d", w.Pending(), tc.count, w.Cap())
					}
					failed, failedBytes := w.Flush()
					if failed != len(tc.refused) || failedBytes != wantBytes {
						t.Errorf("flush reported %d refused (%d bytes), want %d (%d bytes)", failed, failedBytes, len(tc.refused), wantBytes)
					}

					// Loopback keeps order: the datagrams that were not
					// refused arrive, in order.
					buf := make([]byte, 1500)
					rx.SetReadDeadline(time.Now().Add(deadline))
					for i, p := range payloads {
						if dest(i) == refusedTo {
							continue
						}
						n, err := rx.Read(buf)
						if err != nil {
							t.Fatalf("datagram %d of %d: %v", i, tc.count, err)
						}
						if string(buf[:n]) != string(p) {
							t.Fatalf("got datagram %d, want %d", buf[0], i)
						}
					}
				})
			}
		}
	}
}

// TestPortZeroIsRefused: the kernel refuses a datagram to port 0 with
// EINVAL, which TestBatchSendSkipsARefusedDatagram relies on.
func TestPortZeroIsRefused(t *testing.T) {
	c, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.MustParseAddrPort("127.0.0.1:0")))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.WriteToUDPAddrPort([]byte{1}, netip.MustParseAddrPort("127.0.0.1:0")); !errors.Is(err, syscall.EINVAL) {
		t.Fatalf("send to port 0: %v, want EINVAL", err)
	}
}
