package turnsrv

import (
	"errors"
	"net"
	"net/netip"
	"sync"
	"time"

	"icebox/stunsrv"
)

// relayReader reads every relay socket that carries a flow the data plane
// relays, with one goroutine: light flows bring one datagram per socket
// at a time, and a goroutine per socket paid a wake-up and a scheduler
// round for each; here one wake-up serves every socket that is ready, and
// the datagrams for UDP clients leave in one sendmmsg per front door
// socket at the end of the round. A relay socket joins once the data plane
// relayed a datagram of it (until then pion's goroutine reads it, one
// datagram at a time, as it reads relays the data plane knows nothing
// of); pion's goroutine then waits for the datagrams the data plane
// leaves to pion, handed over by the reader.
type relayReader struct {
	s      *Server
	poller *stunsrv.Poller

	mu     sync.Mutex
	relays map[int32]*relayConn // watched sockets by token
	token  int32                // the last token given out
	closed bool

	done chan struct{}

	// The reading goroutine's own.
	handleFn func([]int32) bool
	round    uint64
	ready    []*relayConn
	again    []*relayConn // read full: read again before waiting
	next     []*relayConn
	leaving  []*relayConn // failed: back to a goroutine of their own
	streams  []*relayConn // with stream frames queued
	writers  []clientWriter
	packets  int
	bytes    int
}

// clientWriter batches the round's datagrams to UDP clients on one front
// door socket.
type clientWriter struct {
	sock net.PacketConn
	w    *stunsrv.BatchWriter
}

// relayPollEvents is how many ready relay sockets one epoll call reports.
const relayPollEvents = 128

// clientBatch is how many datagrams to UDP clients one sendmmsg carries.
const clientBatch = 32

// pionQueue bounds the datagrams of one relay waiting for pion's
// goroutine; more are dropped and counted, as a full socket buffer would
// drop them. Their buffers (rtpMTU each) are made only when the data plane
// declines a peer's datagram on a relay the reader reads, which is rare:
// a relay joins the reader once the data plane relays its traffic.
const pionQueue = 64

func newRelayReader(s *Server) *relayReader {
	p, err := stunsrv.NewPoller(relayPollEvents)
	if err != nil {
		s.log.Debug("turn: relay sockets keep a goroutine each", "err", err)
		return nil
	}
	r := &relayReader{s: s, poller: p, relays: map[int32]*relayConn{}, done: make(chan struct{})}
	r.handleFn = r.handle
	go r.run()
	return r
}

func (r *relayReader) run() {
	defer close(r.done)
	backoff := time.Duration(0)
	for {
		err := r.poller.Wait(r.handleFn)
		r.mu.Lock()
		closed := r.closed
		r.mu.Unlock()
		if closed {
			return
		}
		// epoll_pwait failed: count it, back off briefly, go on.
		r.s.metrics.relayReadErrors.Inc()
		r.s.log.Debug("turn: waiting for relay sockets failed", "err", err)
		backoff = min(max(2*backoff, time.Millisecond), 100*time.Millisecond)
		time.Sleep(backoff)
	}
}

func (r *relayReader) close() {
	r.mu.Lock()
	r.closed = true
	r.mu.Unlock()
	r.poller.Close()
	<-r.done
}

// add hands c to the reader; called by pion's goroutine of c, which then
// waits for the datagrams left to pion. false: c stays with that goroutine.
func (r *relayReader) add(c *relayConn) bool {
	if c.batch == nil {
		b, err := stunsrv.NewBatchReader(c.udp, headroom, rtpMTU, tailroom, relayBatch)
		if err != nil {
			return false
		}
		c.batch = b
		c.toPion = make(chan pionDatagram, pionQueue)
		c.free = make(chan []byte, pionQueue)
		c.leave = make(chan struct{}, 1)
	}
	r.mu.Lock()
	if r.closed || c.closed {
		r.mu.Unlock()
		return false
	}
	for {
		if r.token++; r.token <= 0 {
			r.token = 1
		}
		if r.relays[r.token] == nil {
			break
		}
	}
	c.token = r.token
	r.relays[c.token] = c
	// Added under the lock: remove, under it too, then knows the socket
	// is watched. A socket already readable is reported at once.
	err := r.poller.Add(c.raw, c.token)
	if err != nil {
		delete(r.relays, c.token)
	}
	r.mu.Unlock()
	return err == nil
}

// remove stops watching c before its socket closes; c never joins again.
func (r *relayReader) remove(c *relayConn) {
	r.mu.Lock()
	defer r.mu.Unlock()
	c.closed = true
	if c.token != 0 && r.relays[c.token] == c {
		delete(r.relays, c.token)
		r.poller.Remove(c.raw)
	}
}

// handle is one round: it reads every ready socket (and those whose last
// read came full) once, relays what the data plane knows, hands the rest
// to pion, then sends the round's datagrams to clients. It reports
// whether a socket wants reading again before the reader may sleep.
func (r *relayReader) handle(tokens []int32) bool {
	r.round++
	r.ready = r.ready[:0]
	r.mu.Lock()
	for _, t := range tokens {
		if c := r.relays[t]; c != nil {
			r.ready = append(r.ready, c)
		}
	}
	r.mu.Unlock()
	r.again, r.next = r.next[:0], r.again
	for _, c := range r.next {
		r.read(c)
	}
	for _, c := range r.ready {
		r.read(c)
	}
	r.flush()
	for _, c := range r.leaving {
		r.mu.Lock()
		if r.relays[c.token] == c {
			delete(r.relays, c.token)
			r.poller.Remove(c.raw)
		}
		r.mu.Unlock()
		c.leave <- struct{}{}
	}
	clear(r.leaving)
	r.leaving = r.leaving[:0]
	clear(r.ready)
	clear(r.next)
	return len(r.again) > 0
}

// read reads c once. The datagrams of a read stay in c's batch until the
// end of the round, so a socket is read at most once per round.
func (r *relayReader) read(c *relayConn) {
	if c.round == r.round {
		return
	}
	c.round = r.round
	full, err := c.batch.ReadNow()
	if err != nil {
		if !errors.Is(err, net.ErrClosed) {
			// The socket's own goroutine retries it, with a backoff the
			// reader cannot afford.
			r.s.metrics.relayReadErrors.Inc()
			r.leaving = append(r.leaving, c)
		}
		return
	}
	if full {
		r.again = append(r.again, c)
	}
	d := r.s.dp
	a := c.alloc.Load()
	for slot, n, from, ok := c.batch.Next(); ok; slot, n, from, ok = c.batch.Next() {
		r.packets++
		r.bytes += n
		from = netip.AddrPortFrom(from.Addr().Unmap(), from.Port())
		if a != nil && d.fromPeer(c, a, slot, n, from, r) {
			continue
		}
		if reason := r.s.live.Load().policy.refusal(from.Addr().AsSlice()); reason != "" {
			r.s.metrics.peerRefusals[reason].Inc()
			continue
		}
		c.handToPion(slot[headroom:headroom+n], from, r.s.metrics)
	}
}

// queueUDP queues a datagram for a UDP client on the writer of its front
// door socket; false when that socket has none (not the front door's).
func (r *relayReader) queueUDP(out *clientOut, frame []byte) bool {
	var w *stunsrv.BatchWriter
	for i := range r.writers {
		if r.writers[i].sock == out.udp {
			w = r.writers[i].w
			break
		}
	}
	if w == nil {
		if w = stunsrv.NewBatchWriter(out.udp, clientBatch); w == nil {
			return false
		}
		r.writers = append(r.writers, clientWriter{sock: out.udp, w: w})
	}
	if w.Pending() == clientBatch-1 {
		// Queue sends a full batch itself: count it here.
		r.countUDP(w.Queue(frame, out.toAP), clientBatch)
		return true
	}
	w.Queue(frame, out.toAP)
	return true
}

func (r *relayReader) countUDP(err error, n int) {
	if err != nil {
		r.s.metrics.fastDrops[dropWrite].Add(float64(n))
		return
	}
	r.s.metrics.fastFromPeer.Add(float64(n))
}

// queueStream notes that c holds stream frames to write this round.
func (r *relayReader) queueStream(c *relayConn) {
	if c.wcount == 0 {
		r.streams = append(r.streams, c)
	}
}

// flush sends the round's datagrams and frames and counts the round's
// reads, once per round rather than per datagram.
func (r *relayReader) flush() {
	for i := range r.writers {
		if w := r.writers[i].w; w.Pending() > 0 {
			n := w.Pending()
			r.countUDP(w.Flush(), n)
		}
	}
	for _, c := range r.streams {
		c.flushStream()
	}
	clear(r.streams)
	r.streams = r.streams[:0]
	if r.packets > 0 {
		m := r.s.metrics
		m.fromPeerBytes.Add(float64(r.bytes))
		m.fromPeerPackets.Add(float64(r.packets))
		r.packets, r.bytes = 0, 0
	}
}

// pionDatagram is a peer's datagram the data plane left to pion.
type pionDatagram struct {
	buf  []byte
	n    int
	from netip.AddrPort
}

// handToPion copies p for pion's goroutine, which reads it in ReadFrom.
// Buffers are made on demand, up to pionQueue, and reused.
func (c *relayConn) handToPion(p []byte, from netip.AddrPort, m *metrics) {
	var buf []byte
	select {
	case buf = <-c.free:
	default:
		if c.pionBufs == pionQueue {
			m.fastDrops[dropPionBusy].Inc()
			return
		}
		c.pionBufs++
		buf = make([]byte, rtpMTU)
	}
	c.toPion <- pionDatagram{buf: buf, n: copy(buf, p), from: from}
}
