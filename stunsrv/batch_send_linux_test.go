package stunsrv

import (
	"errors"
	"net"
	"net/netip"
	"slices"
	"syscall"
	"testing"
	"time"
)

// TestBatchSendSkipsARefusedDatagram sends batches with a destination the
// kernel refuses (port 0: sendmmsg fails with EINVAL) at the start, in the
// middle, at the end and twice in a row, on a real UDP socket: every other
// datagram must arrive, and flush must report exactly the refused ones.
// It does so for the front door's answers (queue, whose last call sends a
// full batch) and for SocketWriter, the TURN relay's writer.
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
			{"full batch", batchSize, []int{5, 20}},
		} {
			writers := []string{"answers"}
			if fam.network == "udp4" { // relay sockets are IPv4
				writers = append(writers, "SocketWriter")
			}
			for _, writer := range writers {
				t.Run(fam.network+"/"+tc.name+"/"+writer, func(t *testing.T) {
					tx, rx := listen(t), listen(t)
					rc, err := tx.SyscallConn()
					if err != nil {
						t.Fatal(err)
					}
					to := rx.LocalAddr().(*net.UDPAddr).AddrPort()
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

					var failed, failedBytes int
					switch writer {
					case "answers":
						b := newMMsgBatch(rc, fam.network == "udp6")
						for i, p := range payloads {
							failed += b.queue(p, dest(i), netip.Addr{}, 0)
							if b.pending == 0 { // queue sent the full batch
								failedBytes += b.failedBytes
							}
						}
						if tc.count == batchSize && b.pending != 0 {
							t.Fatalf("a full batch left %d answers queued", b.pending)
						}
						failed += b.flush()
						failedBytes += b.failedBytes
					case "SocketWriter":
						w := NewSocketWriter(tc.count)
						w.Use(rc)
						for i, p := range payloads {
							w.Queue(p, dest(i))
						}
						failed, failedBytes = w.Flush()
					}
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
