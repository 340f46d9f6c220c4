package signal

import (
	"time"

	"github.com/gorilla/websocket"
)

// outQueue is frames waiting for a connection's writer, copied back to
// back into bytes the connection owns: no frame buffer is shared with
// another connection, so none can be handed back too early.
type outQueue struct {
	buf  []byte // the frames
	ends []int  // where each frame ends in buf
}

func (q *outQueue) reset() { q.buf, q.ends = q.buf[:0], q.ends[:0] }

// send copies msg into the client's queue; the caller keeps msg. A client
// whose queue is full is disconnected at once: waiting for it would hold
// up the sender.
func (c *conn) send(msg []byte, k kind) {
	set := c.s.settings()
	c.mu.Lock()
	if c.dead || c.closeCode != 0 {
		c.mu.Unlock()
		return
	}
	if len(c.out.ends) >= set.SendQueue || len(c.out.buf)+len(msg) > set.SendQueueBytes {
		c.mu.Unlock()
		c.s.log.Debug("signal: slow reader", "conn", c.id)
		c.setWhy(bySlowness)
		c.kill()
		return
	}
	c.out.buf = append(c.out.buf, msg...)
	c.out.ends = append(c.out.ends, len(c.out.buf))
	c.sentSinceTick = true
	c.startWriterLocked()
	c.mu.Unlock()
	c.s.cm.framesOut[k].Inc()
}

// closeWith sends a close frame after what is queued.
func (c *conn) closeWith(code int, text string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closeCode != 0 || c.dead {
		return
	}
	c.closeCode, c.closeText = code, text
	c.flushed = make(chan struct{})
	c.startWriterLocked()
}

func (c *conn) closing() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closeCode != 0 || c.dead
}

func (c *conn) setWhy(r disconnectReason) {
	c.mu.Lock()
	if c.why == byClient {
		c.why = r
	}
	c.mu.Unlock()
}

func (c *conn) startWriterLocked() {
	if !c.writing {
		c.writing = true
		go c.writeFn() // go c.write() would allocate a closure each time
	}
}

// write is the writer goroutine: it drains the queue, then the pending
// control frames, and exits when nothing is left. It swaps the queue with
// its previous batch, so senders fill one while it writes the other.
func (c *conn) write() {
	for {
		c.mu.Lock()
		batch := c.out
		ping, pong, pongData := c.pingDue, c.pongDue, c.pongData
		closeCode, closeText := 0, ""
		if !c.closeSent {
			closeCode, closeText = c.closeCode, c.closeText
		}
		if c.dead || len(batch.ends) == 0 && !ping && !pong && closeCode == 0 {
			c.writing = false
			c.mu.Unlock()
			return
		}
		c.out, c.spare = c.spare, outQueue{}
		c.out.reset()
		c.pingDue, c.pongDue = false, false
		c.mu.Unlock()

		err := c.writeBatch(&batch, ping, pong, pongData, closeCode, closeText)

		c.mu.Lock()
		// The batch is kept for the next one, so that a steady flow of
		// frames, or a burst within send_queue / send_queue_bytes,
		// allocates nothing; a connection that queues nothing for a
		// ping interval gives both buffers back (pingTick).
		if !c.dead {
			c.spare = batch
		}
		if closeCode != 0 {
			c.closeDoneLocked()
			if err == nil {
				c.closeGraceLocked() // the client answers our close frame, or gets closeGrace to
			}
		}
		c.mu.Unlock()
		if err != nil {
			c.s.log.Debug("signal: write failed", "conn", c.id, "err", err)
			c.setWhy(bySlowness)
			c.kill()
		}
	}
}

func (c *conn) writeBatch(batch *outQueue, ping, pong bool, pongData string, closeCode int, closeText string) error {
	deadline := time.Now().Add(c.s.settings().WriteTimeout)
	c.ws.SetWriteDeadline(deadline)
	start := 0
	for _, end := range batch.ends {
		if err := c.ws.WriteMessage(websocket.TextMessage, batch.buf[start:end]); err != nil {
			return err
		}
		start = end
	}
	if pong {
		if err := c.ws.WriteControl(websocket.PongMessage, []byte(pongData), deadline); err != nil {
			return err
		}
	}
	if ping {
		if err := c.ws.WriteControl(websocket.PingMessage, nil, deadline); err != nil {
			return err
		}
	}
	if closeCode != 0 {
		return c.ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(closeCode, closeText), deadline)
	}
	return nil
}

// kill closes the socket at once. The reader goroutine then fails and
// cleans up; a running writer stops at its next write.
func (c *conn) kill() {
	c.mu.Lock()
	if c.dead {
		c.mu.Unlock()
		return
	}
	c.dead = true
	c.out, c.spare = outQueue{}, outQueue{}
	c.closeDoneLocked() // a close frame still queued will never go out
	c.mu.Unlock()
	c.ws.NetConn().Close()
}

// closeDoneLocked marks the close frame as sent or given up, releasing
// finish from waiting for it.
func (c *conn) closeDoneLocked() {
	if c.flushed != nil && !c.closeSent {
		c.closeSent = true
		close(c.flushed)
	}
}

// onPing queues the pong for the writer, so that only it writes. gorilla
// calls it on the reader goroutine. A ping costs a frame of the rate limit
// like a data frame, as each costs a pong write: without that, 20,000
// pings in 0.38 s were all answered. One over the rate is refused, toward
// max_errors, and gets no pong; once closing, pings are ignored as data
// frames are.
func (c *conn) onPing(data string) error {
	if c.closing() || !c.charge(c.s.settings()) {
		return nil
	}
	c.mu.Lock()
	c.pongDue, c.pongData = true, data
	if !c.dead {
		c.startWriterLocked()
	}
	c.mu.Unlock()
	return nil
}

// onClose answers the client's close frame with the same code, which ends
// the closing handshake.
func (c *conn) onClose(code int, text string) error {
	if code == websocket.CloseNoStatusReceived {
		code = websocket.CloseNormalClosure
	}
	c.closeWith(code, "")
	return nil
}
