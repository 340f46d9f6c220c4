//go:build !race

package signal

import (
	"bytes"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"icebox/internal/testenv"
)

// What gorilla/websocket v1.5.3 allocates per message, whatever icebox
// does; see TestForwardAllocs.
const (
	// NextReader allocates the io.Reader it returns (&messageReader{c},
	// conn.go:1016): one per message read, ReadMessage included.
	gorillaReadAllocs = 1
	// WriteMessage boxes writePoolData{buf} into an interface to put the
	// write buffer back into Upgrader.WriteBufferPool (conn.go:548): one
	// per message written. Without a pool every connection would hold its
	// write buffer while idle, and a frame larger than it would cost two
	// allocations in writeBufs instead.
	gorillaWriteAllocs = 1
)

// TestForwardAllocs fails if forwarding a frame allocates anything beyond
// gorilla's own per-message allocations: reading, checking, copying the
// frame into each receiver's queue, starting their writers and counting
// must all be free once warm. The clients are raw sockets that allocate
// nothing, so every allocation counted is the server's. The race detector
// allocates on its own, hence the build tag.
func TestForwardAllocs(t *testing.T) {
	sdp := strings.Repeat("a=candidate:1 1 udp 2122260223 192.0.2.1 54321 typ host generation 0\r\n", 40)
	for _, tc := range []struct {
		name      string
		frame     []byte
		receivers int
		cluster   bool // the node is in a cluster; the pairing's members are all on it
	}{
		{"candidate", candidates("allocs", "candidate:1 1 udp 2122260223 192.0.2.1 54321 typ host generation 0 ufrag abcd"), 1, false},
		{"offer", offer("allocs", sdp), 1, false},
		{"fan-out", candidates("allocs", "candidate:1 1 udp 2122260223 192.0.2.1 54321 typ host"), 3, false},
		{"clustered", candidates("allocs", "candidate:1 1 udp 2122260223 192.0.2.1 54321 typ host generation 0 ufrag abcd"), 1, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testConfig()
			cfg.OpenRoom = tc.receivers > 1 // the only room with more than two members
			cfg.PingInterval = time.Hour    // no pings during the measurement
			cfg.FramesPerSecond, cfg.FrameBurst = 1e6, 100000
			var ts *testServer
			if tc.cluster {
				// The node is alone: a pairing with no member elsewhere
				// must pay nothing for the cluster. (Its few heartbeats
				// in the measurement are far below one per frame.)
				cc := fastCluster(testenv.StartNATS(t, natsToken), "alone")
				ts = startNode(t, cc, Options{}, func(c *Config) { *c = cfg }).testServer
			} else {
				ts = startServer(t, cfg, Options{})
			}
			room := "allocs"
			if cfg.OpenRoom {
				room = ""
			}
			from, err := rawJoin(ts.addr, room)
			if err != nil {
				t.Fatal(err)
			}
			defer from.Close()
			to := make([]*rawConn, tc.receivers)
			for i := range to {
				if to[i], err = rawJoin(ts.addr, room); err != nil {
					t.Fatal(err)
				}
				defer to[i].Close()
			}

			out := clientFrame(tc.frame)
			want := tc.frame
			// The whole server frame is read at once: rawConn.readFrame's
			// header array would escape and count.
			buf := make([]byte, serverFrameLen(len(want)))
			payload := buf[len(buf)-len(want):]
			var failed error
			forward := func() {
				if failed != nil {
					return
				}
				if _, err := from.Write(out); err != nil {
					failed = err
					return
				}
				for _, c := range to {
					if _, err := io.ReadFull(c, buf); err != nil {
						failed = err
						return
					}
					if buf[0] != 0x81 || !bytes.Equal(payload, want) {
						failed = fmt.Errorf("forwarded %q, want %q", buf, want)
						return
					}
				}
			}
			for _, c := range append(to, from) {
				c.SetDeadline(time.Now().Add(time.Minute))
			}
			for range 200 { // warm the pools and the writer goroutines' stacks
				forward()
			}
			allocs := testing.AllocsPerRun(1000, forward)
			if failed != nil {
				t.Fatal(failed)
			}
			budget := float64(gorillaReadAllocs + tc.receivers*gorillaWriteAllocs)
			t.Logf("%.0f allocations per forwarded frame to %d receivers, of which gorilla's %.0f", allocs, tc.receivers, budget)
			if allocs > budget {
				t.Errorf("forwarding a frame to %d receivers allocates %.0f times, want at most gorilla's %.0f", tc.receivers, allocs, budget)
			}
		})
	}
}
