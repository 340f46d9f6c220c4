package signal

import (
	"time"

	"github.com/gorilla/websocket"
)

// send queues b for the client. A client whose queue is full is
// disconnected at once: waiting for it would hold up the sender.
func (c *conn) send(b []byte, k kind) {
	set := c.s.settings()
	c.mu.Lock()
	if c.dead || c.closeCode != 0 {
		c.mu.Unlock()
		return
	}
	if len(c.queue) >= set.SendQueue || c.queued+len(b) > set.SendQueueBytes {
		c.mu.Unlock()
		c.s.log.Debug("signal: slow reader", "conn", c.id)
		c.setWhy(bySlowness)
		c.kill()
		return
	}
	c.queue = append(c.queue, b)
	c.queued += len(b)
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
		go c.write()
	}
}

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
		clear(batch)

		c.mu.Lock()
		if cap(batch) <= 16 {
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

func (c *conn) writeBatch(batch [][]byte, ping, pong bool, pongData string, closeCode int, closeText string) error {
	deadline := time.Now().Add(c.s.settings().WriteTimeout)
	c.ws.SetWriteDeadline(deadline)
	for _, b := range batch {
		if err := c.ws.WriteMessage(websocket.TextMessage, b); err != nil {
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
