package signal

import (
	"time"

	"github.com/gorilla/websocket"
)

// send queues fb for the client, taking a reference to it for the
// writer; the caller keeps its own. A client whose queue is full is
// disconnected at once: waiting for it would hold up the sender.
func (c *conn) send(fb *frameBuf, k kind) {
	set := c.s.settings()
	c.mu.Lock()
	if c.dead || c.closeCode != 0 {
		c.mu.Unlock()
		return
	}
	if len(c.queue) >= set.SendQueue || c.queued+len(fb.b) > set.SendQueueBytes {
		c.mu.Unlock()
		c.s.log.Debug("signal: slow reader", "conn", c.id)
		c.setWhy(bySlowness)
		c.kill()
		return
	}
	fb.hold()
	c.queue = append(c.queue, fb)
	c.queued += len(fb.b)
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

// maxSpare bounds the batch slice a connection keeps for its next batch:
// a full default send queue, so that a steady flow of frames allocates
// nothing, and at most 512 bytes for an idle connection to hold.
const maxSpare = 64

// write is the writer goroutine: it drains the queue, then the pending
// control frames, and exits when nothing is left.
func (c *conn) write() {
	for {
		c.mu.Lock()
		batch := c.queue
		ping, pong, pongData := c.pingDue, c.pongDue, c.pongData
		closeCode, closeText := 0, ""
		if !c.closeSent {
			closeCode, closeText = c.closeCode, c.closeText
		}
		if c.dead || len(batch) == 0 && !ping && !pong && closeCode == 0 {
			c.writing = false
			c.mu.Unlock()
			return
		}
		c.queue, c.spare = c.spare[:0], nil
		c.queued = 0
		c.pingDue, c.pongDue = false, false
		c.mu.Unlock()

		err := c.writeBatch(batch, ping, pong, pongData, closeCode, closeText)
		for i, fb := range batch {
			fb.release()
			batch[i] = nil
		}

		c.mu.Lock()
		if cap(batch) <= maxSpare {
			c.spare = batch[:0]
		}
		if closeCode != 0 {
			c.closeDoneLocked()
		}
		c.mu.Unlock()
		if err != nil {
			c.s.log.Debug("signal: write failed", "conn", c.id, "err", err)
			c.setWhy(bySlowness)
			c.kill()
		}
		if closeCode != 0 {
			// The client answers our close frame, or gets closeGrace to.
			c.ws.SetReadDeadline(time.Now().Add(closeGrace))
		}
	}
}

func (c *conn) writeBatch(batch []*frameBuf, ping, pong bool, pongData string, closeCode int, closeText string) error {
	deadline := time.Now().Add(c.s.settings().WriteTimeout)
	c.ws.SetWriteDeadline(deadline)
	for _, fb := range batch {
		if err := c.ws.WriteMessage(websocket.TextMessage, fb.b); err != nil {
			return err
		}
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
	for _, fb := range c.queue {
		fb.release()
	}
	c.queue, c.spare, c.queued = nil, nil, 0
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

// onPing queues the pong for the writer, so that only it writes.
func (c *conn) onPing(data string) error {
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
