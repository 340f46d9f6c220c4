package attack

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/pion/logging"
	"github.com/pion/stun/v3"
	"github.com/pion/turn/v4"

	"icebox/internal/credentials"
)

// legit is the legitimate client that keeps calling while an attack runs:
// STUN Bindings (a transaction is up to 3 tries, 300 ms apart, as a real
// client retransmits), a relayed media stream between two allocations
// (500 packets/s, counted by sequence number), a fresh allocation every
// 500 ms, and a WebSocket handshake (dial, WsInit, WsIceServers) every
// 250 ms.
type legit struct {
	t    *testing.T
	d    *daemon
	stop chan struct{}
	wg   sync.WaitGroup

	stunTx, stunOK   atomic.Int64
	relaySent        atomic.Int64
	allocTx, allocOK atomic.Int64
	wsTx, wsOK       atomic.Int64
	wsMax            atomic.Int64 // nanoseconds
	mu               sync.Mutex
	received         map[uint32]bool
	relayA, relayB   net.PacketConn
	errs             []string
}

// report is what the legitimate client saw.
type report struct {
	stunTx, stunOK, relaySent, relayRecv, allocTx, allocOK, wsTx, wsOK int
	wsMax                                                              time.Duration
	errs                                                               []string
	took                                                               time.Duration // how long the attack ran
}

func (r report) String() string {
	return fmt.Sprintf("STUN %d/%d answered, relayed %d/%d packets, allocations %d/%d, WebSocket handshakes %d/%d (slowest %v)",
		r.stunOK, r.stunTx, r.relayRecv, r.relaySent, r.allocOK, r.allocTx, r.wsOK, r.wsTx, r.wsMax.Round(time.Millisecond))
}

func loss(ok, tried int) float64 {
	if tried == 0 {
		return 1
	}
	return 1 - float64(ok)/float64(tried)
}

// check asserts the promise: loss ≤ maxLoss everywhere, handshakes under
// maxHandshake, and enough samples that the figures mean something.
func (r report) check(t *testing.T) {
	t.Helper()
	t.Logf("legitimate client: %v", r)
	for _, c := range []struct {
		what      string
		ok, tried int
		min       int
	}{
		{"STUN transactions", r.stunOK, r.stunTx, minSTUN},
		{"relayed packets", r.relayRecv, r.relaySent, minRelayed},
		{"allocations", r.allocOK, r.allocTx, minAllocs},
		{"WebSocket handshakes", r.wsOK, r.wsTx, minHandshakes},
	} {
		if c.tried < c.min {
			t.Errorf("only %d %s tried, want at least %d", c.tried, c.what, c.min)
		}
		if l := loss(c.ok, c.tried); l > maxLoss {
			t.Errorf("%s: %d of %d lost (%.1f %%), want at most %.0f %%", c.what, c.tried-c.ok, c.tried, 100*l, 100*maxLoss)
		}
	}
	if r.wsMax > maxHandshake {
		t.Errorf("slowest WebSocket handshake %v, want under %v", r.wsMax, maxHandshake)
	}
	for i, e := range r.errs {
		if i == 5 {
			break
		}
		t.Logf("legitimate client error: %s", e)
	}
}

func quietPion() logging.LoggerFactory {
	lf := logging.NewDefaultLoggerFactory()
	lf.DefaultLogLevel = logging.LogLevelDisabled
	return lf
}

// allocateFrom allocates a relay with a pion client on a UDP socket bound
// to ip. close releases both.
func allocateFrom(server, ip, user string) (relay net.PacketConn, close func(), err error) {
	conn, err := net.ListenPacket("udp4", ip+":0")
	if err != nil {
		return nil, nil, err
	}
	// As a client process of its own would ride out the test process's
	// pauses (the attack runs in it too).
	conn.(*net.UDPConn).SetReadBuffer(4 << 20)
	u, p, _ := credentials.Mint([]byte(testSecret), user, time.Hour, time.Now())
	c, err := turn.NewClient(&turn.ClientConfig{
		STUNServerAddr: server, TURNServerAddr: server, Conn: conn,
		Username: u, Password: p, LoggerFactory: quietPion(), RTO: 200 * time.Millisecond,
	})
	if err != nil {
		conn.Close()
		return nil, nil, err
	}
	if err := c.Listen(); err != nil {
		c.Close()
		conn.Close()
		return nil, nil, err
	}
	relay, err = c.Allocate()
	if err != nil {
		c.Close()
		conn.Close()
		return nil, nil, err
	}
	return relay, func() { relay.Close(); c.Close(); conn.Close() }, nil
}

// startLegit sets up the legitimate client's call and starts its loops.
func startLegit(t *testing.T, d *daemon) *legit {
	t.Helper()
	l := &legit{t: t, d: d, stop: make(chan struct{}), received: map[uint32]bool{}}
	a, closeA, err := allocateFrom(d.stun, "127.0.0.1", "legit")
	if err != nil {
		t.Fatalf("legitimate allocation before the attack: %v", err)
	}
	b, closeB, err := allocateFrom(d.stun, "127.0.0.1", "legit")
	if err != nil {
		t.Fatalf("legitimate allocation before the attack: %v", err)
	}
	t.Cleanup(func() { closeA(); closeB() })
	l.relayA, l.relayB = a, b
	// Permissions both ways, then one packet through, before the clock
	// starts: what is measured is the call in progress.
	perm := func(r net.PacketConn, peer net.Addr) {
		if err := r.(interface{ CreatePermissions(...net.Addr) error }).CreatePermissions(peer); err != nil {
			t.Fatalf("permission: %v", err)
		}
	}
	perm(a, b.LocalAddr())
	perm(b, a.LocalAddr())
	b.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 1500)
	for {
		if _, err := a.WriteTo([]byte("warm-up"), b.LocalAddr()); err != nil {
			t.Fatal(err)
		}
		n, _, err := b.ReadFrom(buf)
		if err != nil {
			t.Fatalf("legitimate relay before the attack: %v", err)
		}
		if string(buf[:n]) == "warm-up" {
			break
		}
	}
	l.wg.Add(5)
	go l.stunLoop()
	go l.relaySend()
	go l.relayRecv()
	go l.allocLoop()
	go l.wsLoop()
	return l
}

func (l *legit) stopped() bool {
	select {
	case <-l.stop:
		return true
	default:
		return false
	}
}

func (l *legit) fail(format string, args ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.errs) < 100 {
		l.errs = append(l.errs, fmt.Sprintf(format, args...))
	}
}

func (l *legit) stunLoop() {
	defer l.wg.Done()
	c, err := net.Dial("udp4", l.d.stun)
	if err != nil {
		l.fail("stun dial: %v", err)
		return
	}
	defer c.Close()
	buf := make([]byte, 1500)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for !l.stopped() {
		<-tick.C
		req := stun.MustBuild(stun.TransactionID, stun.BindingRequest, stun.Fingerprint)
		l.stunTx.Add(1)
		ok := false
		// Retransmit as RFC 8489 §6.2.1 says a client does (RTO doubling
		// from 250 ms, five requests, about 8 s in all), not fewer: a
		// daemon descheduled for a second on a loaded CI machine is not
		// a lost transaction, one that stops answering is.
		for try, rto := 0, 250*time.Millisecond; try < 5 && !ok; try, rto = try+1, 2*rto {
			c.Write(req.Raw)
			c.SetReadDeadline(time.Now().Add(rto))
			for {
				n, err := c.Read(buf)
				if err != nil {
					break
				}
				m := &stun.Message{Raw: buf[:n]}
				if m.Decode() == nil && m.TransactionID == req.TransactionID && m.Type == stun.BindingSuccess {
					ok = true
					break
				}
			}
		}
		if ok {
			l.stunOK.Add(1)
		} else {
			l.fail("STUN Binding unanswered after 5 tries (about 8 s)")
		}
	}
}

func (l *legit) relaySend() {
	defer l.wg.Done()
	tick := time.NewTicker(2 * time.Millisecond)
	defer tick.Stop()
	pkt := make([]byte, 160) // a 20 ms Opus frame
	for seq := uint32(0); !l.stopped(); seq++ {
		<-tick.C
		binary.BigEndian.PutUint32(pkt, seq)
		if _, err := l.relayA.WriteTo(pkt, l.relayB.LocalAddr()); err != nil {
			l.fail("relay send: %v", err)
		}
		l.relaySent.Add(1)
	}
}

func (l *legit) relayRecv() {
	defer l.wg.Done()
	buf := make([]byte, 1500)
	for {
		l.relayB.SetReadDeadline(time.Now().Add(time.Second))
		n, _, err := l.relayB.ReadFrom(buf)
		if err != nil {
			if l.stopped() {
				return // a second of silence after the end: drained
			}
			var ne net.Error
			if !errors.As(err, &ne) || !ne.Timeout() {
				l.fail("relay read: %v", err)
				return
			}
			continue
		}
		if n == 160 {
			l.mu.Lock()
			l.received[binary.BigEndian.Uint32(buf)] = true
			l.mu.Unlock()
		}
	}
}

func (l *legit) allocLoop() {
	defer l.wg.Done()
	tick := time.NewTicker(500 * time.Millisecond)
	defer tick.Stop()
	for !l.stopped() {
		<-tick.C
		l.allocTx.Add(1)
		_, closeIt, err := allocateFrom(l.d.stun, "127.0.0.1", "legit")
		if err != nil {
			l.fail("allocation: %v", err)
			continue
		}
		closeIt()
		l.allocOK.Add(1)
	}
}

func (l *legit) wsLoop() {
	defer l.wg.Done()
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	for i := 0; !l.stopped(); i++ {
		<-tick.C
		l.wsTx.Add(1)
		t0 := time.Now()
		if err := handshake(l.d.signal, fmt.Sprintf("legit-%d", i)); err != nil {
			l.fail("WebSocket handshake: %v", err)
			continue
		}
		took := time.Since(t0)
		l.wsOK.Add(1)
		for {
			old := l.wsMax.Load()
			if int64(took) <= old || l.wsMax.CompareAndSwap(old, int64(took)) {
				break
			}
		}
	}
}

// handshake is the talk's app connecting: dial /connect, WsInit "",
// WsIceServers back.
func handshake(addr, room string) error {
	d := websocket.Dialer{HandshakeTimeout: 2 * maxHandshake}
	ws, resp, err := d.Dial("ws://"+addr+"/connect?controllerId="+room, nil)
	if resp != nil && resp.Body != nil {
		resp.Body.Close()
	}
	if err != nil {
		return err
	}
	defer ws.Close()
	ws.SetReadDeadline(time.Now().Add(2 * maxHandshake))
	if err := ws.WriteMessage(websocket.TextMessage, []byte(`{"id":"WsInit","data":""}`)); err != nil {
		return err
	}
	var f struct{ ID string }
	if err := ws.ReadJSON(&f); err != nil {
		return err
	}
	if f.ID != "WsIceServers" {
		return fmt.Errorf("answer to WsInit: %s", f.ID)
	}
	return nil
}

// Samples the legitimate client must have tried for its figures to mean
// something: well below what its loops try in attackTime (200, 1,000, 4,
// 8), since a loaded machine slows the client; underAttack keeps the attack
// going until they are reached.
const (
	minSTUN       = 20
	minRelayed    = 100
	minAllocs     = 2
	minHandshakes = 2
)

// enough says whether the client has tried the minimum samples.
func (l *legit) enough() bool {
	return l.stunTx.Load() >= minSTUN && l.relaySent.Load() >= minRelayed &&
		l.allocTx.Load() >= minAllocs && l.wsTx.Load() >= minHandshakes
}

// finish stops the loops, lets the relay drain and returns the report.
func (l *legit) finish() report {
	close(l.stop)
	l.wg.Wait()
	l.mu.Lock()
	defer l.mu.Unlock()
	return report{
		stunTx: int(l.stunTx.Load()), stunOK: int(l.stunOK.Load()),
		relaySent: int(l.relaySent.Load()), relayRecv: len(l.received),
		allocTx: int(l.allocTx.Load()), allocOK: int(l.allocOK.Load()),
		wsTx: int(l.wsTx.Load()), wsOK: int(l.wsOK.Load()), wsMax: time.Duration(l.wsMax.Load()),
		errs: l.errs,
	}
}

// underAttack runs attack for attackTime (it must return when stop
// closes) while the legitimate client calls, then checks the daemon and
// the client's report. It returns the report for the README table.
func underAttack(t *testing.T, d *daemon, attack func(stop <-chan struct{})) report {
	t.Helper()
	l := startLegit(t, d)
	rssBefore, cpuBefore := d.rss(), d.cpu()
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() { defer close(done); attack(stop) }()
	// The attack runs attackTime, then on until the client has tried
	// enough to judge by (on a loaded machine it may be slow to), up to
	// maxAttackTime; check then says if it still has not.
	start := time.Now()
	tick := time.NewTicker(50 * time.Millisecond)
	for range tick.C {
		if since := time.Since(start); since >= maxAttackTime || since >= attackTime && l.enough() {
			break
		}
	}
	tick.Stop()
	close(stop)
	<-done
	cpu := d.cpu() - cpuBefore
	r := l.finish()
	r.took = time.Since(start)
	d.alive()
	rss := d.rss()
	t.Logf("daemon RSS %d → %d MiB; daemon CPU %v during the %v attack", rssBefore>>20, rss>>20, cpu, r.took.Round(time.Millisecond))
	if rss > maxRSS {
		t.Errorf("daemon RSS %d MiB, want at most %d MiB", rss>>20, maxRSS>>20)
	}
	r.check(t)
	return r
}
