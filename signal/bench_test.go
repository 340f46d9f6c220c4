package signal

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"runtime"
	"strings"
	"testing"
	"time"

	"icebox/internal/testenv"
)

// The benchmarks and the memory test drive the server with hand-made
// WebSocket clients that own nothing but a socket, so that what is
// measured is the server: a gorilla client would add its own buffers,
// goroutines and allocations to the figures.

// rawConn is a minimal WebSocket client.
type rawConn struct {
	net.Conn
}

// rawDial connects and upgrades, reading the response byte by byte to
// keep no buffer.
func rawDial(addr, path string) (*rawConn, error) {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return nil, err
	}
	c.SetDeadline(time.Now().Add(readTimeout))
	req := "GET " + path + " HTTP/1.1\r\nHost: " + addr + "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
	if _, err := io.WriteString(c, req); err != nil {
		c.Close()
		return nil, err
	}
	var resp []byte
	var b [1]byte
	for !bytes.HasSuffix(resp, []byte("\r\n\r\n")) {
		if _, err := c.Read(b[:]); err != nil {
			c.Close()
			return nil, err
		}
		resp = append(resp, b[0])
	}
	if !bytes.HasPrefix(resp, []byte("HTTP/1.1 101")) {
		c.Close()
		return nil, fmt.Errorf("upgrade refused: %s", resp)
	}
	c.SetDeadline(time.Time{})
	return &rawConn{c}, nil
}

// clientFrame encodes a masked text frame. The mask key is zero, which
// RFC 6455 allows, so the payload goes out as it is.
func clientFrame(payload []byte) []byte {
	var h []byte
	switch n := len(payload); {
	case n < 126:
		h = []byte{0x81, 0x80 | byte(n)}
	case n < 1<<16:
		h = []byte{0x81, 0x80 | 126, byte(n >> 8), byte(n)}
	default:
		h = binary.BigEndian.AppendUint64([]byte{0x81, 0x80 | 127}, uint64(n))
	}
	return append(append(h, 0, 0, 0, 0), payload...)
}

// serverFrameLen is the size of the unmasked frame the server sends for
// a payload of n bytes.
func serverFrameLen(n int) int {
	switch {
	case n < 126:
		return 2 + n
	case n < 1<<16:
		return 4 + n
	}
	return 10 + n
}

// readFrame reads one unfragmented server frame into buf.
func (c *rawConn) readFrame(buf []byte) ([]byte, error) {
	var h [10]byte
	if _, err := io.ReadFull(c, h[:2]); err != nil {
		return nil, err
	}
	if h[0]&0x0f == 0x8 {
		return nil, errors.New("close frame")
	}
	n := int(h[1] & 0x7f)
	switch n {
	case 126:
		if _, err := io.ReadFull(c, h[2:4]); err != nil {
			return nil, err
		}
		n = int(binary.BigEndian.Uint16(h[2:4]))
	case 127:
		if _, err := io.ReadFull(c, h[2:10]); err != nil {
			return nil, err
		}
		n = int(binary.BigEndian.Uint64(h[2:10]))
	}
	if cap(buf) < n {
		buf = make([]byte, n)
	}
	buf = buf[:n]
	_, err := io.ReadFull(c, buf)
	return buf, err
}

// rawJoin dials, sends WsInit and reads the WsIceServers answer.
func rawJoin(addr, room string) (*rawConn, error) {
	c, err := rawDial(addr, "/connect?controllerId="+room)
	if err != nil {
		return nil, err
	}
	if _, err := c.Write(clientFrame(frameOf("WsInit", ""))); err != nil {
		c.Close()
		return nil, err
	}
	c.SetReadDeadline(time.Now().Add(readTimeout))
	msg, err := c.readFrame(nil)
	c.SetReadDeadline(time.Time{})
	if err != nil || !bytes.Contains(msg, []byte(`"WsIceServers"`)) {
		c.Close()
		return nil, fmt.Errorf("WsInit answered %q: %v", msg, err)
	}
	return c, nil
}

// BenchmarkForward measures the relay path: frames from one client of a
// pairing to the other over loopback, read, checked, queued and written by
// the server. Allocations per op are the server's alone.
func BenchmarkForward(b *testing.B) {
	sdp := strings.Repeat("a=candidate:1 1 udp 2122260223 192.0.2.1 54321 typ host generation 0\r\n", 40)
	for _, bc := range []struct {
		name  string
		frame []byte
	}{
		{"candidate", candidates("bench", "candidate:1 1 udp 2122260223 192.0.2.1 54321 typ host generation 0 ufrag abcd")},
		{"offer", offer("bench", sdp)},
	} {
		b.Run(bc.name, func(b *testing.B) {
			cfg := testConfig()
			cfg.FramesPerSecond, cfg.FrameBurst = 1e6, 100000
			cfg.SendQueue = 1024
			cfg.SendQueueBytes = 64 << 20
			ts := startServer(b, cfg, Options{})
			from, err := rawJoin(ts.addr, "bench")
			if err != nil {
				b.Fatal(err)
			}
			defer from.Close()
			to, err := rawJoin(ts.addr, "bench")
			if err != nil {
				b.Fatal(err)
			}
			defer to.Close()

			// Frames go out in batches of one write; the next batch waits
			// for the previous one to arrive, keeping the queue short.
			const batch = 64
			out := bytes.Repeat(clientFrame(bc.frame), batch)
			per := serverFrameLen(len(bc.frame))
			arrived := make(chan error, 1)
			go func() {
				buf := make([]byte, per*batch)
				for sent := 0; sent < b.N; sent += batch {
					n := min(batch, b.N-sent)
					if _, err := io.ReadFull(to, buf[:n*per]); err != nil {
						arrived <- err
						return
					}
					arrived <- nil
				}
			}()
			b.SetBytes(int64(len(bc.frame)))
			b.ReportAllocs()
			cpu0 := cpuTime()
			b.ResetTimer()
			for sent := 0; sent < b.N; sent += batch {
				n := min(batch, b.N-sent)
				if _, err := from.Write(out[:n*len(out)/batch]); err != nil {
					b.Fatal(err)
				}
				if err := <-arrived; err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "frames/s")
			// Unlike frames/s, CPU time per frame holds on a busy machine.
			b.ReportMetric(float64(cpuTime()-cpu0)/float64(b.N), "cpu-ns/frame")
		})
	}
}

func BenchmarkDecodeFrame(b *testing.B) {
	msg := offer("bench", strings.Repeat("a=candidate:1 1 udp 2122260223 192.0.2.1 54321 typ host\r\n", 40))
	var d frameDecoder
	b.SetBytes(int64(len(msg)))
	b.ReportAllocs()
	cpu0 := cpuTime()
	for b.Loop() {
		if _, code := d.decode(msg); code != 0 {
			b.Fatal(code)
		}
	}
	// Unlike ns/op, CPU time per frame holds on a busy machine; getrusage
	// counts in scheduler ticks, so give it 20000 frames or more.
	b.ReportMetric(float64(cpuTime()-cpu0)/float64(b.N), "cpu-ns/op")
}

// TestIdleConnMemory measures what an idle, paired connection costs the
// server: 1000 connections in 500 pairings, each past its handshake.
func TestIdleConnMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("opens 1000 connections")
	}
	const n = 1000
	cfg := testConfig()
	cfg.PingInterval = time.Hour // idle means idle
	ts := startServer(t, cfg, Options{})

	before := liveMemory()
	conns := make([]*rawConn, 0, n)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for i := range n {
		c, err := rawJoin(ts.addr, fmt.Sprintf("pair-%d", i/2))
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
	}
	eventually(t, "all connections to be counted", func() bool { return testenv.MetricValue(t, ts.cm.active) == n })
	after := liveMemory()
	per := float64(after-before) / n
	t.Logf("%.0f bytes per idle connection (heap in use + stacks, %d connections, race detector %v)", per, n, raceEnabled)
	if !raceEnabled && per > 10<<10 {
		t.Errorf("%.0f bytes per idle connection, want under 10 KiB", per)
	}
}

// liveMemory is the heap in use plus goroutine stacks, after the pools
// and the GC have let go of everything they can.
func liveMemory() uint64 {
	var m runtime.MemStats
	for range 3 {
		runtime.GC()
	}
	runtime.ReadMemStats(&m)
	return m.HeapInuse + m.StackInuse
}
