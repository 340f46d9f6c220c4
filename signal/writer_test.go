package signal

import (
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// TestIdleConnGivesBuffersBack: the bytes a connection's queue grew to
// for an SDP are kept while frames flow, and given back once it has
// queued nothing for a ping interval, so that idle phones cost no buffer.
func TestIdleConnGivesBuffersBack(t *testing.T) {
	cfg := testConfig()
	cfg.PingInterval = 100 * time.Millisecond
	cfg.PongTimeout = time.Hour // the clients below do not read, so never pong
	ts := startServer(t, cfg, Options{})
	caller := join(t, ts.url("room=idle"))
	device := join(t, ts.url("room=idle"))
	caller.sendRaw(websocket.TextMessage, offer("idle", "v=0\r\n"+strings.Repeat("a=x\r\n", 2<<10)))
	device.expect("WsSDPOffer")

	held := func() (n int) {
		ts.mu.Lock()
		defer ts.mu.Unlock()
		for c := range ts.conns {
			c.mu.Lock()
			n += cap(c.out.buf) + cap(c.out.ends) + cap(c.spare.buf) + cap(c.spare.ends)
			c.mu.Unlock()
		}
		return n
	}
	eventually(t, "idle connections to hold no queue buffer", func() bool { return held() == 0 })
}
