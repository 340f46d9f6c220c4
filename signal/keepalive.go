package signal

import "time"

// The timers a connection runs: WebSocket pings, whose pongs keep its read
// deadline moving, and the re-sending of TURN credentials before they
// expire.

// onPong: the client is alive.
func (c *conn) onPong(string) error {
	if c.inited {
		c.keepReading(c.s.settings())
	}
	return nil
}

// keepReading gives the client ping_interval + pong_timeout more to send
// something, unless c is closing: then the closeGrace that the writer
// gives it after the close frame stands (closeGraceLocked). Both run under c.mu,
// and closeWith marks c closing under it, so a long deadline can never be
// set after the short one.
func (c *conn) keepReading(set *settings) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closeCode != 0 || c.dead {
		return
	}
	c.ws.SetReadDeadline(time.Now().Add(set.PingInterval + set.PongTimeout))
}

// closeGraceLocked gives the client closeGrace to answer the close frame
// just written, and no more: keepReading no longer moves the deadline.
func (c *conn) closeGraceLocked() {
	c.ws.SetReadDeadline(time.Now().Add(c.s.closeGrace))
}

// pingTick runs on the ping timer.
func (c *conn) pingTick() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.dead || c.closeCode != 0 {
		return
	}
	c.pingDue = true
	if !c.sentSinceTick && !c.writing {
		c.out, c.spare = outQueue{}, outQueue{} // idle: hold no buffers
	}
	c.sentSinceTick = false
	c.startWriterLocked()
	c.ping.Reset(c.s.settings().PingInterval)
}

// scheduleRefresh arranges for fresh credentials to be sent before the
// ones that expire at exp run out.
func (c *conn) scheduleRefresh(set *settings, exp time.Time) {
	if exp.IsZero() {
		return
	}
	d := refreshDelay(time.Now(), exp, set.CredentialRefresh)
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.dead || c.closeCode != 0 {
		return
	}
	if c.refresh == nil {
		c.refresh = time.AfterFunc(d, c.refreshTick)
	} else {
		c.refresh.Reset(d)
	}
}

// minRefresh keeps credentials that come back already expired from
// turning the refresh timer into a busy loop.
const minRefresh = time.Second

// refreshDelay is when to re-send credentials expiring at exp: margin
// before, but not before half their remaining life, so that short-lived
// credentials are still used a while.
func refreshDelay(now, exp time.Time, margin time.Duration) time.Duration {
	left := exp.Sub(now)
	return max(left-margin, left/2, minRefresh)
}

func (c *conn) refreshTick() {
	greeting, exp, err := c.s.iceFrame(c.turnUser)
	if err != nil {
		c.s.log.Error("signal: ICE servers", "err", err)
		return
	}
	c.s.cm.refreshes.Inc() // first, so that it is counted once the client has it
	c.send(greeting, kindIceServers)
	c.scheduleRefresh(c.s.settings(), exp)
}
