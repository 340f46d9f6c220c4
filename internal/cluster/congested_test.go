package cluster

import (
	"bytes"
	"io"
	"net"
	"strconv"
	"sync"
	"testing"
	"time"

	"icebox/internal/testenv"
)

// stallProxy relays TCP between nodes and nats-server on loopback until
// stall: then it stops reading what the nodes send, as a congested link
// would, and the nodes' socket buffers fill.
type stallProxy struct {
	ln      net.Listener
	stalled chan struct{}
	closed  chan struct{} // at the test's end
	once    sync.Once
}

func startStallProxy(t *testing.T, upstream string) *stallProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &stallProxy{ln: ln, stalled: make(chan struct{}), closed: make(chan struct{})}
	var conns sync.WaitGroup
	t.Cleanup(func() { ln.Close(); close(p.closed); conns.Wait() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			// A small receive buffer: the link fills after little.
			c.(*net.TCPConn).SetReadBuffer(4096)
			up, err := net.Dial("tcp", upstream)
			if err != nil {
				c.Close()
				continue
			}
			conns.Add(2)
			go func() { defer conns.Done(); io.Copy(c, up); c.Close() }()
			go func() {
				defer conns.Done()
				defer up.Close()
				buf := make([]byte, 4096)
				for {
					select {
					case <-p.stalled:
						<-p.closed // c stays open, unread
						return
					default:
					}
					n, err := c.Read(buf)
					if n > 0 {
						up.Write(buf[:n])
					}
					if err != nil {
						return
					}
				}
			}()
		}
	}()
	return p
}

func (p *stallProxy) url() string {
	return "nats://127.0.0.1:" + strconv.Itoa(p.ln.Addr().(*net.TCPAddr).Port)
}

func (p *stallProxy) stall() { p.once.Do(func() { close(p.stalled) }) }

// TestCongestedLinkBlocksNoCaller: when the link to NATS stops taking
// bytes, a frame sent to another node (which holds the node's lock, as
// every join, leave and delivery needs it) waits at most about
// claim_timeout for the socket, not nats.go's default minute: the
// connection is given up, and frames meanwhile are dropped and counted.
func TestCongestedLinkBlocksNoCaller(t *testing.T) {
	srv := testenv.StartNATS(t, "congested-token")
	proxy := startStallProxy(t, "127.0.0.1:"+strconv.Itoa(srv.Port))
	n1, _, _, _ := pairedVia(t, srv, proxy.url(), "congested", nil)
	proxy.stall()

	frame := bytes.Repeat([]byte("x"), 60<<10)
	const frames = 400 // 24 MiB: more than loopback's socket buffers hold
	done := make(chan struct{})
	go func() {
		defer close(done)
		for range frames {
			n1.Forward("congested", "member-1", 3, frame)
		}
	}()
	select {
	case <-done:
	case <-time.After(20 * time.Second): // a third of nats.go's default write timeout
		t.Fatal("Forward still blocked on the congested link after 20s")
	}
	if dropped := testenv.MetricValue(t, n1.m.framesDropped); dropped == 0 {
		t.Error("no frame was dropped although the link took none")
	}
}
