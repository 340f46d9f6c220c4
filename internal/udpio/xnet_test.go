//go:build linux

package udpio

import (
	"net"
	"testing"

	"golang.org/x/net/ipv4"
)

// The issue asks for golang.org/x/net's ReadBatch over our recvmmsg code
// unless a measurement says otherwise. These two benchmarks read the same
// loopback traffic, 32 datagrams per syscall, and report per datagram:
//
//	go test -run - -bench BatchRead -benchmem -benchtime 200000x ./internal/udpio
//
// x/net builds a net.IP and a *net.UDPAddr for every datagram (2
// allocations), where the relay's hot path must allocate nothing.

func benchBatchRead(b *testing.B, read func(*net.UDPConn) func() int) {
	rx, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		b.Fatal(err)
	}
	defer rx.Close()
	rx.SetReadBuffer(4 << 20)
	tx, err := net.DialUDP("udp4", nil, rx.LocalAddr().(*net.UDPAddr))
	if err != nil {
		b.Fatal(err)
	}
	defer tx.Close()
	next := read(rx)
	payload := make([]byte, 160)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; {
		b.StopTimer()
		for range BatchSize {
			tx.Write(payload)
		}
		b.StartTimer()
		for got := 0; got < BatchSize; {
			n := next()
			got += n
			i += n
		}
	}
}

func BenchmarkBatchReadOurs(b *testing.B) {
	benchBatchRead(b, func(c *net.UDPConn) func() int {
		rc, err := c.SyscallConn()
		if err != nil {
			b.Fatal(err)
		}
		r, err := NewReader(rc, 0, 1600, 0, BatchSize)
		if err != nil {
			b.Fatal(err)
		}
		n := 0
		// Serve hands each batch to take and returns after it: the
		// benchmark's loop decides when to read again.
		take := func() bool {
			for _, _, _, ok := r.Next(); ok; _, _, _, ok = r.Next() {
				n++
			}
			return false
		}
		return func() int {
			n = 0
			if err := r.Serve(take, nil); err != nil {
				b.Fatal(err)
			}
			return n
		}
	})
}

func BenchmarkBatchReadXNet(b *testing.B) {
	benchBatchRead(b, func(c *net.UDPConn) func() int {
		pc := ipv4.NewPacketConn(c)
		ms := make([]ipv4.Message, BatchSize)
		for i := range ms {
			ms[i].Buffers = [][]byte{make([]byte, 1600)}
		}
		return func() int {
			n, err := pc.ReadBatch(ms, 0)
			if err != nil {
				b.Fatal(err)
			}
			for i := range n {
				_ = ms[i].Addr.(*net.UDPAddr).AddrPort()
			}
			return n
		}
	})
}
