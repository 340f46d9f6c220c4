package signal

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/gorilla/websocket"

	"icebox/internal/tokenbucket"
)

// conn is one client WebSocket.
//
// Its reader goroutine runs for the connection's life and owns the fields
// above mu. Writing is done by one goroutine at a time, started when there
// is something to send and gone when the queue is empty: an idle connection
// costs one goroutine, which is what keeps many idle phones cheap. Nobody
// else writes to ws, so a slow client only ever slows its own writer, and
// its queue overflowing disconnects it.
type conn struct {
	s       *Server
	ws      *websocket.Conn
	id      string       // random; names the connection in logs and TURN usernames
	peer    netip.Prefix // per-IP accounting key
	writeFn func()       // c.write, bound once: see startWriterLocked

	// Owned by the reader goroutine.
	queryRoom  string // ?controllerId= or ?room=
	queryToken string // ?token=
	token      string // the join token, checked when the pairing is known
	turnUser   string // whom its TURN credentials name; set at WsInit, then read-only
	inited     bool
	presence   bool // opted in to WsPresence; set before joining, never after
	lastDesc   kind // the kind of the last SDP this client sent, 0 before any
	room       *room
	refused    int // frames refused so far, toward max_errors
	bucket     tokenbucket.Bucket
	fanout     tokenbucket.Bucket // bytes sent on its behalf in the open room

	mu      sync.Mutex
	out     outQueue // frames waiting for the writer
	spare   outQueue // the writer's previous batch, reused for the next
	writing bool     // a writer goroutine is running
	// sentSinceTick: a frame was queued since the last ping tick; an idle
	// connection gives its queue's buffers back.
	sentSinceTick bool
	pingDue       bool
	pongDue       bool
	pongData      string
	closeCode     int // non-zero: send a close frame after the queue, then stop
	closeText     string
	closeSent     bool
	flushed       chan struct{} // closed once the close frame is out; made with closeCode
	dead          bool          // socket closed: nothing more is sent
	why           disconnectReason
	ping          *time.Timer
	refresh       *time.Timer
}

// closeGrace is how long the client has to answer our close frame
// (Server.closeGrace, which tests lengthen).
const closeGrace = 2 * time.Second

// disconnectReason labels icebox_signal_disconnects_total.
type disconnectReason uint8

const (
	byClient   disconnectReason = iota // the client closed or went away
	byTimeout                          // no WsInit, or silent past the pong timeout
	byRefusal                          // closed after a fatal WsError
	bySlowness                         // send queue overflowed or a write timed out
	byShutdown                         // Shutdown
	numReasons
)

func (r disconnectReason) String() string {
	return [numReasons]string{"client", "timeout", "refused", "slow", "shutdown"}[r]
}

// run is the reader goroutine.
func (c *conn) run() {
	defer c.finish()
	set := c.s.settings()
	c.ws.SetPingHandler(c.onPing)
	c.ws.SetPongHandler(c.onPong)
	c.ws.SetCloseHandler(c.onClose)
	c.mu.Lock()
	if c.closeCode == 0 { // else Shutdown has begun closing it: closeGrace stands
		c.ws.SetReadDeadline(time.Now().Add(set.InitTimeout))
	}
	c.ping = time.AfterFunc(set.PingInterval, c.pingTick)
	c.mu.Unlock()
	for {
		typ, r, err := c.ws.NextReader()
		if err != nil {
			c.readFailed(err)
			return
		}
		if c.closing() {
			continue // NextReader discards what is left unread
		}
		if c.inited {
			set = c.s.settings()
			c.keepReading(set)
		}
		limit := set.MaxFrameSize
		if !c.inited {
			limit = min(limit, maxInitFrame)
		}
		rb := c.s.bufs.Get().(*readBuf)
		var tooLarge bool
		rb.msg, tooLarge, err = readMessage(r, rb.msg, limit)
		switch {
		case tooLarge && !c.inited:
			c.refuse(errNoInit) // the first frame must be a WsInit, and this cannot be one
		case tooLarge:
			c.refuse(errTooLarge)
		case err != nil:
			c.s.bufs.Put(rb)
			c.readFailed(err)
			return
		default:
			c.handle(typ, rb)
		}
		c.s.bufs.Put(rb)
	}
}

// maxInitFrame bounds the first frame, which must be a WsInit: the largest
// one icebox accepts (a controllerId and a token at their limits, every
// character \u-escaped, then escaped again as the frame's data, and no
// padding whitespace, which no client writes) is under 6 KiB. Without it,
// each connection that has not said who it is could make icebox buffer
// max_frame_size bytes until init_timeout.
const maxInitFrame = 8 << 10

// readBuf is a pooled message buffer with the decoder that checks it. An
// idle connection holds none.
type readBuf struct {
	msg []byte
	dec frameDecoder
}

// readMessage reads one message into buf, up to max bytes; tooLarge
// reports that there was more.
func readMessage(r io.Reader, buf []byte, max int) (_ []byte, tooLarge bool, _ error) {
	buf = buf[:0]
	for {
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)]
		}
		n, err := r.Read(buf[len(buf):min(cap(buf), max+1)])
		buf = buf[:len(buf)+n]
		if len(buf) > max {
			return buf, true, nil
		}
		if err == io.EOF {
			return buf, false, nil
		}
		if err != nil {
			return buf, false, err
		}
	}
}

func (c *conn) readFailed(err error) {
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() && !c.closing() {
		if !c.inited {
			c.refuse(errNoInit)
		}
		c.setWhy(byTimeout)
	}
	c.s.log.Debug("signal: connection ended", "conn", c.id, "err", err)
}

// handle acts on one complete message.
func (c *conn) handle(typ int, rb *readBuf) {
	set := c.s.settings()
	if !c.charge(set) {
		return
	}
	if typ != websocket.TextMessage {
		c.s.cm.framesIn[kindInvalid].Inc()
		c.refuse(errBadFrame)
		return
	}
	f, code := rb.dec.decode(rb.msg)
	c.s.cm.framesIn[f.kind].Inc()
	switch {
	case !c.inited && (code != 0 || f.kind != kindInit):
		c.refuse(errNoInit)
	case code != 0:
		c.refuse(code)
	case f.kind == kindInit && c.inited:
		c.refuse(errDuplicateInit)
	case f.kind == kindInit:
		c.init(set, f)
	case f.kind == kindIceServers || f.kind == kindError || f.kind == kindPresence:
		c.refuse(errForbiddenKind)
	default:
		c.forward(set, f, rb.msg)
	}
}

// charge spends one frame of c's frames_per_second budget, data or ping,
// and refuses the frame when none is left. Only the reader goroutine
// calls it: it owns c.bucket.
func (c *conn) charge(set *settings) bool {
	if c.bucket.Allow(time.Now(), set.FramesPerSecond, set.FrameBurst) {
		return true
	}
	c.refuse(errRateLimited)
	return false
}

// init answers WsInit with the ICE servers and joins the pairing if it is
// already known.
func (c *conn) init(set *settings, f frame) {
	c.inited = true
	c.presence = f.presence
	now := time.Now()
	c.token = c.queryToken
	if f.token != nil {
		c.token = string(f.token)
	}
	name, wrong := c.queryRoom, false
	if name == "" && f.controllerID != nil {
		name = string(f.controllerID)
	} else if name != "" && f.controllerID != nil && string(f.controllerID) != name {
		wrong = true
	}
	if code := c.admitInit(set, name, now); code != 0 {
		c.refuse(code)
		return
	}
	c.keepReading(set)

	greeting, expires, err := c.s.iceFrame(c.turnUser)
	if err != nil {
		c.s.log.Error("signal: ICE servers", "err", err)
		c.refuse(errInternal)
		return
	}
	switch {
	case name != "":
		if !c.join(set, name, greeting) {
			return
		}
	case set.OpenRoom:
		if !c.join(set, openRoom, greeting) {
			return
		}
	default:
		c.send(greeting, kindIceServers)
	}
	if wrong {
		c.refuse(errWrongPairing)
	}
	c.scheduleRefresh(set, expires)
}

// join puts c in the pairing name, checking the capacity. c's token has
// been checked for name: at WsInit (admitInit) or by tokenAllows.
func (c *conn) join(set *settings, name string, greeting []byte) bool {
	r, code := c.s.joinRoom(c, name, set.capacity(name), greeting)
	if code != 0 {
		c.refuse(code)
		return false
	}
	c.room = r
	c.s.log.Debug("signal: joined", "conn", c.id)
	return true
}

// tokenAllows checks c's token against a pairing first named after
// WsInit, where admitInit could check its form only, and refuses c if it
// does not admit to name.
func (c *conn) tokenAllows(set *settings, name string) bool {
	if c.token == "" && !set.RequireToken {
		return true
	}
	if !c.tokenValid(name, time.Now()) {
		c.refuse(errNotAuthorised)
		return false
	}
	return true
}

// tokenValid verifies c's token for the pairing name, logging why at
// debug when it is refused.
func (c *conn) tokenValid(name string, now time.Time) bool {
	err := VerifyToken(c.s.tokenKeys(), name, c.token, now)
	if err != nil {
		c.s.log.Debug("signal: token refused", "conn", c.id, "err", err)
	}
	return err == nil
}

// forward sends an offer, answer or candidates to the rest of the pairing.
func (c *conn) forward(set *settings, f frame, msg []byte) {
	switch {
	case c.room == nil && f.controllerID == nil:
		c.refuse(errNoPairing)
		return
	case c.room == nil:
		if name := string(f.controllerID); !c.tokenAllows(set, name) || !c.join(set, name, nil) {
			return
		}
	case !c.room.open && f.controllerID != nil && string(f.controllerID) != c.room.name:
		c.refuse(errWrongPairing)
		return
	}
	if c.s.log.Enabled(context.Background(), slog.LevelDebug) {
		// Only at debug: SDPs and candidates carry the users' addresses.
		c.s.log.Debug("signal: forward", "conn", c.id, "kind", f.kind, "frame", string(msg))
	}
	if c.room.open && !c.fanoutAllowed(set, len(msg)) {
		c.refuse(errRateLimited)
		return
	}
	if f.kind == kindOffer || f.kind == kindAnswer {
		c.lastDesc = f.kind
	}
	c.s.hub.forward(set, c.room, c, msg, f.kind)
}

// refuse answers with a WsError, closing the connection when the code says
// so or when the client has been refused too often.
func (c *conn) refuse(code errCode) {
	c.s.em.inc(code)
	c.send(c.s.errFrames.get(code), kindError)
	closeCode := code.info().close
	c.refused++
	if closeCode == 0 && c.refused >= c.s.settings().MaxErrors {
		code = errTooManyErrors
		closeCode = code.info().close
		c.s.em.inc(code)
		c.send(c.s.errFrames.get(code), kindError)
	}
	if closeCode != 0 {
		c.s.log.Debug("signal: closing", "conn", c.id, "code", int(code), "reason", code.info().name)
		c.setWhy(byRefusal)
		c.closeWith(closeCode, code.info().name)
	}
}

// finish runs when the reader goroutine ends: it leaves the room, lets the
// writer get a pending close frame out, and releases the connection.
func (c *conn) finish() {
	if c.room != nil {
		c.s.hub.leave(c, c.room)
	}
	c.mu.Lock()
	if c.ping != nil {
		c.ping.Stop()
	}
	if c.refresh != nil {
		c.refresh.Stop()
	}
	flushed := c.flushed
	c.mu.Unlock()
	if flushed != nil {
		t := time.NewTimer(c.s.settings().WriteTimeout)
		select {
		case <-flushed:
		case <-t.C:
		}
		t.Stop()
	}
	c.kill()
	c.mu.Lock()
	why := c.why
	c.mu.Unlock()
	c.s.forget(c, why)
}
