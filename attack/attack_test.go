package attack

import (
	"bufio"
	"crypto/rand"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/pion/stun/v3"

	"icebox/internal/credentials"
	"icebox/internal/testenv"
)

// Each test is one attack class against a fresh daemon, with the
// legitimate client calling throughout (underAttack). Attackers use
// 127.0.0.2 and up unless the class is about the victim's own address.
//
// Packet floods are paced: on loopback the attacker, the daemon and the
// legitimate client share one kernel backlog queue and two cores, and a
// flood at the sender's full rate measures the kernel dropping everyone's
// packets, not icebox. The rates here are what this machine carries
// beside the daemon; the README table gives them.
const (
	garbageRate = 40000 // datagrams/s
	authRate    = 10000 // signed requests/s per kind (three kinds at once)
	reflectRate = 20000 // unsigned requests/s
)

// flood runs send on n goroutines until stop closes, at most rate
// packets per second in all (0: as fast as they can), and returns how many
// went out. Pacing is a ticker, 1 ms a slot.
func flood(stop <-chan struct{}, n, rate int, send func(r *mrand.Rand) bool) int64 {
	var sent atomic.Int64
	var wg sync.WaitGroup
	perSlot := rate / n / 1000
	for i := range n {
		wg.Go(func() {
			r := mrand.New(mrand.NewPCG(uint64(i), 7))
			var tick *time.Ticker
			if rate > 0 {
				tick = time.NewTicker(time.Millisecond)
				defer tick.Stop()
			}
			for {
				select {
				case <-stop:
					return
				default:
				}
				burst := 1
				if tick != nil {
					<-tick.C
					burst = max(perSlot, 1)
				}
				for range burst {
					if send(r) {
						sent.Add(1)
					}
				}
			}
		})
	}
	wg.Wait()
	return sent.Load()
}

// every calls fn each period until stop closes.
func every(stop <-chan struct{}, period time.Duration, fn func()) {
	tick := time.NewTicker(period)
	defer tick.Stop()
	for {
		select {
		case <-stop:
			return
		case <-tick.C:
		}
		fn()
	}
}

func udpFrom(t *testing.T, ip, to string) *net.UDPConn {
	t.Helper()
	raddr, _ := net.ResolveUDPAddr("udp4", to)
	c, err := net.DialUDP("udp4", &net.UDPAddr{IP: net.ParseIP(ip)}, raddr)
	if err != nil {
		t.Fatalf("socket on %s: %v", ip, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// drain reads and discards what c gets, counting bytes, until stop.
func drain(c net.Conn, stop <-chan struct{}, bytes *atomic.Int64) {
	buf := make([]byte, 2048)
	for {
		c.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
		n, err := c.Read(buf)
		bytes.Add(int64(n))
		if err != nil {
			select {
			case <-stop:
				return
			default:
			}
		}
	}
}

func TestBaseline(t *testing.T) {
	d := start(t, config(t))
	underAttack(t, d, func(stop <-chan struct{}) { <-stop })
}

// TestGarbageUDP: random datagrams, truncated STUN headers and ChannelData
// for channels nobody bound, at full rate on the shared port.
func TestGarbageUDP(t *testing.T) {
	d := start(t, config(t))
	conns := []*net.UDPConn{udpFrom(t, "127.0.0.2", d.stun), udpFrom(t, "127.0.0.3", d.stun)}
	// 512 garbage datagrams made up front and sent round: making each one
	// would cost the test process more than icebox reading it.
	r := mrand.New(mrand.NewPCG(1, 2))
	pool := make([][]byte, 512)
	for i := range pool {
		b := make([]byte, r.IntN(1500))
		rand.Read(b)
		n := len(b)
		switch i % 3 {
		case 0: // a STUN header claiming more than it has
			if n >= 20 {
				binary.BigEndian.PutUint16(b[0:], uint16(r.IntN(0x3FFF)))
				binary.BigEndian.PutUint16(b[2:], uint16(r.IntN(0xFFFF)))
				binary.BigEndian.PutUint32(b[4:], 0x2112A442)
			}
		case 1: // ChannelData for an unbound channel
			if n >= 4 {
				binary.BigEndian.PutUint16(b[0:], 0x4000|uint16(r.IntN(0x3FFF)))
				binary.BigEndian.PutUint16(b[2:], uint16(n-4))
			}
		}
		pool[i] = b
	}
	var sent int64
	rep := underAttack(t, d, func(stop <-chan struct{}) {
		sent = flood(stop, len(conns), garbageRate, func(r *mrand.Rand) bool {
			_, err := conns[r.IntN(len(conns))].Write(pool[r.IntN(len(pool))])
			return err == nil
		})
	})
	t.Logf("attack: %d garbage datagrams in %v (%.0f/s)", sent, rep.took.Round(time.Millisecond), float64(sent)/rep.took.Seconds())
}

// TestGarbageTCP: connections to the shared port that send garbage,
// truncated frames or nothing, 400 of them over the attack.
func TestGarbageTCP(t *testing.T) {
	d := start(t, config(t))
	var opened atomic.Int64
	underAttack(t, d, func(stop <-chan struct{}) {
		flood(stop, 4, 0, func(r *mrand.Rand) bool {
			if opened.Add(1) > 400 {
				opened.Add(-1)
				<-stop
				return false
			}
			c, err := (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 4)}, Timeout: time.Second}).Dial("tcp4", d.stun)
			if err != nil {
				return false
			}
			defer c.Close()
			var b [4096]byte
			rand.Read(b[:])
			switch r.IntN(3) {
			case 0:
				c.Write(b[:r.IntN(len(b))])
			case 1: // a STUN header promising 64 KiB that never comes
				binary.BigEndian.PutUint16(b[0:], 0x0003)
				binary.BigEndian.PutUint16(b[2:], 0xFFFC)
				binary.BigEndian.PutUint32(b[4:], 0x2112A442)
				c.Write(b[:24])
			}
			return true
		})
	})
	t.Logf("attack: %d TCP connections with garbage", opened.Load())
}

// signedFlood sends TURN requests from conns at authRate: 256 built by
// build up front and sent round, as an attacker would replay them.
func signedFlood(stop <-chan struct{}, conns []*net.UDPConn, build func(r *mrand.Rand) []byte) int64 {
	r := mrand.New(mrand.NewPCG(3, 4))
	pool := make([][]byte, 256)
	for i := range pool {
		pool[i] = build(r)
	}
	return flood(stop, 1, authRate, func(r *mrand.Rand) bool {
		_, err := conns[r.IntN(len(conns))].Write(pool[r.IntN(len(pool))])
		return err == nil
	})
}

func signed(method stun.Method, user, pass, nonce string, extra ...stun.Setter) []byte {
	s := []stun.Setter{stun.TransactionID, stun.NewType(method, stun.ClassRequest)}
	s = append(s, extra...)
	s = append(s, stun.NewUsername(user), stun.NewRealm("icebox"), stun.NewNonce(nonce),
		stun.NewLongTermIntegrity(user, "icebox", pass), stun.Fingerprint)
	return stun.MustBuild(s...).Raw
}

func transport() stun.Setter {
	return stun.RawAttribute{Type: stun.AttrRequestedTransport, Value: []byte{17, 0, 0, 0}}
}

// TestAuthFlood: bad MACs from the victim's own address (127.0.0.1, many
// ports), forged usernames from another address, and one valid signed
// request replayed from 64 ports of a third (finding 1: it used to fill
// the key store and take 90 % of the CPU).
func TestAuthFlood(t *testing.T) {
	d := start(t, config(t))
	var victim, forged, replay []*net.UDPConn
	for range 16 {
		victim = append(victim, udpFrom(t, "127.0.0.1", d.stun))
		forged = append(forged, udpFrom(t, "127.0.0.5", d.stun))
	}
	for range 64 {
		replay = append(replay, udpFrom(t, "127.0.0.6", d.stun))
	}
	// A nonce the server handed out, as an attacker would fetch one first:
	// then only the MESSAGE-INTEGRITY check stands between a forged
	// request and a success answer.
	var nonce stun.Nonce
	probe := dialRawTURN(t, "udp", d.stun)
	if err := nonce.GetFrom(probe.roundTrip(stun.MustBuild(stun.TransactionID, stun.NewType(stun.MethodAllocate, stun.ClassRequest), transport()))); err != nil {
		t.Fatalf("no nonce in the answer to an unsigned Allocate: %v", err)
	}
	u, p, _ := credentials.Mint([]byte(testSecret), "mallory", time.Hour, time.Now())
	replayed := signed(stun.MethodRefresh, u, p, nonce.String())
	var a, b, c int64
	kinds := []struct {
		name  string
		conns []*net.UDPConn
		sent  *int64
		got   *stunAnswers
		// wantCode is the one error a bad credential gets (0: any
		// error; a replayed Refresh from a new port has no allocation).
		wantCode int
	}{
		{"bad MACs from the victim's address", victim, &a, &stunAnswers{}, 401},
		{"forged usernames", forged, &b, &stunAnswers{}, 401},
		{"replays of a valid request", replay, &c, &stunAnswers{}, 0},
	}
	var readers sync.WaitGroup
	underAttack(t, d, func(stop <-chan struct{}) {
		for i := range kinds {
			for _, conn := range kinds[i].conns {
				readers.Go(func() { kinds[i].got.read(conn, stop) })
			}
		}
		var wg sync.WaitGroup
		wg.Go(func() {
			a = signedFlood(stop, victim, func(r *mrand.Rand) []byte {
				return signed(stun.MethodRefresh, u, "wrong-password", nonce.String())
			})
		})
		wg.Go(func() {
			b = signedFlood(stop, forged, func(r *mrand.Rand) []byte {
				user := fmt.Sprintf("%d:user%d", time.Now().Unix()+int64(r.IntN(3600)), r.IntN(1e6))
				return signed(stun.MethodAllocate, user, "guess", nonce.String(), transport())
			})
		})
		wg.Go(func() {
			c = signedFlood(stop, replay, func(*mrand.Rand) []byte { return replayed })
		})
		wg.Wait()
	})
	readers.Wait()
	// Every attacker request gets an error answer or none: a success
	// would be a request past authentication (a refreshed allocation on
	// the victim's 5-tuple, one made with a guessed username, or a replay
	// taken as new).
	for _, k := range kinds {
		t.Logf("attack: %d %s: answered %v", *k.sent, k.name, k.got)
		if n := k.got.success.Load(); n > 0 {
			t.Errorf("%s: %d success answers, want none", k.name, n)
		}
		if k.wantCode != 0 {
			k.got.mu.Lock()
			for c, n := range k.got.errors {
				if c != k.wantCode {
					t.Errorf("%s: %d answered with error %d, want %d", k.name, n, c, k.wantCode)
				}
			}
			k.got.mu.Unlock()
		}
		if n := k.got.other.Load(); n > 0 {
			t.Errorf("%s: %d answers that are neither a STUN error response nor a success, want none", k.name, n)
		}
		if n := k.got.total(); n > *k.sent {
			t.Errorf("%s: %d answers to %d requests", k.name, n, *k.sent)
		}
	}
}

// stunAnswers counts what an attacker's sockets got back.
type stunAnswers struct {
	success, other atomic.Int64
	mu             sync.Mutex
	errors         map[int]int64 // by error code
}

func (a *stunAnswers) total() int64 {
	a.mu.Lock()
	defer a.mu.Unlock()
	n := a.success.Load() + a.other.Load()
	for _, c := range a.errors {
		n += c
	}
	return n
}

func (a *stunAnswers) String() string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return fmt.Sprintf("errors by code %v, %d successes, %d other", a.errors, a.success.Load(), a.other.Load())
}

// read counts the messages c gets until stop has closed and c has then
// been quiet for a second (answers still queued are counted).
func (a *stunAnswers) read(c *net.UDPConn, stop <-chan struct{}) {
	buf := make([]byte, 2048)
	for {
		wait := 100 * time.Millisecond
		select {
		case <-stop:
			wait = time.Second
		default:
		}
		c.SetReadDeadline(time.Now().Add(wait))
		n, err := c.Read(buf)
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() && wait < time.Second {
				continue
			}
			return
		}
		m := &stun.Message{Raw: append([]byte(nil), buf[:n]...)}
		switch {
		case m.Decode() != nil:
			a.other.Add(1)
		case m.Type.Class == stun.ClassSuccessResponse:
			a.success.Add(1)
		case m.Type.Class == stun.ClassErrorResponse:
			a.mu.Lock()
			if a.errors == nil {
				a.errors = map[int]int64{}
			}
			a.errors[code(m)]++
			a.mu.Unlock()
		default:
			a.other.Add(1)
		}
	}
}

// TestReflection: unsigned 20-byte requests from a forged (here: another)
// address at full rate. icebox answers at most quotas.answer_rate per
// second per source, so what it reflects is a small fraction of what it
// receives.
func TestReflection(t *testing.T) {
	d := start(t, config(t))
	c := udpFrom(t, "127.0.0.7", d.stun)
	req := stun.MustBuild(stun.TransactionID, stun.NewType(stun.MethodAllocate, stun.ClassRequest)).Raw
	var in, out atomic.Int64
	underAttack(t, d, func(stop <-chan struct{}) {
		done := make(chan struct{})
		go func() { drain(c, stop, &out); close(done) }()
		n := flood(stop, 1, reflectRate, func(*mrand.Rand) bool {
			binary.BigEndian.PutUint64(req[8:], mrand.Uint64())
			_, err := c.Write(req)
			return err == nil
		})
		in.Store(n * int64(len(req)))
		<-done
	})
	ratio := float64(out.Load()) / float64(in.Load())
	t.Logf("attack: %d B of %d-byte unsigned Allocates in, %d B out: ratio %.4f", in.Load(), len(req), out.Load(), ratio)
	if ratio > 0.05 {
		t.Errorf("bytes out / bytes in = %.3f for unsigned Allocates, want at most 0.05", ratio)
	}
}

// TestAllocationExhaustion: eight addresses grab every allocation and
// relay port they can (total 200, a 300-port range); the legitimate
// client keeps allocating.
func TestAllocationExhaustion(t *testing.T) {
	cfg := config(t)
	set(cfg, "turn.quotas.total", 200)
	set(cfg, "turn.relay.ports", testenv.FreeRelayRange(t, 300))
	d := start(t, cfg)
	var held atomic.Int64
	var closers []func()
	var mu sync.Mutex
	underAttack(t, d, func(stop <-chan struct{}) {
		var wg sync.WaitGroup
		for i := range 8 {
			wg.Go(func() {
				ip := fmt.Sprintf("127.0.0.%d", 10+i)
				for range 64 {
					select {
					case <-stop:
						return
					default:
					}
					_, closeIt, err := allocateFrom(d.stun, ip, fmt.Sprintf("grabber%d", i))
					if err != nil {
						continue
					}
					held.Add(1)
					mu.Lock()
					closers = append(closers, closeIt)
					mu.Unlock()
				}
			})
		}
		wg.Wait()
	})
	t.Logf("attack: 8 addresses hold %d of 200 allocations", held.Load())
	for _, c := range closers {
		c()
	}
}

// withTLS turns on TURN over TLS in cfg, with a fresh self-signed
// certificate, and returns its address.
func withTLS(t *testing.T, cfg map[string]any) string {
	dir := t.TempDir()
	cert, key := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	testenv.WriteCert(t, cert, key, time.Time{})
	tlsAddr := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	set(cfg, "turn.tls", map[string]any{"listen": tlsAddr, "cert": cert, "key": key})
	return tlsAddr
}

// TestSlowloris: 200 connections each to signaling (a request header a
// byte at a time), to the shared TURN port (half a STUN header) and to
// TURN over TLS (a ClientHello a byte at a time), held open through the
// attack.
func TestSlowloris(t *testing.T) {
	cfg := config(t)
	tlsAddr := withTLS(t, cfg)
	d := start(t, cfg)
	// One goroutine feeds every connection its next byte each 100 ms, so
	// the attack costs the test process little beside its client.
	type slow struct {
		c   net.Conn
		msg []byte
		at  int
	}
	var conns []*slow
	t.Cleanup(func() {
		for _, sc := range conns {
			sc.c.Close()
		}
	})
	underAttack(t, d, func(stop <-chan struct{}) {
		for i := range 600 {
			target, ip := []string{d.signal, d.stun, tlsAddr}[i%3], net.IPv4(127, 0, 0, byte(20+i%8))
			c, err := (&net.Dialer{LocalAddr: &net.TCPAddr{IP: ip}, Timeout: time.Second}).Dial("tcp4", target)
			if err != nil {
				continue
			}
			msg := []byte("GET /connect HTTP/1.1\r\nHost: x\r\nX-Slow: " + strings.Repeat("a", 1000))
			switch target {
			case d.stun:
				msg = []byte{0x00, 0x03, 0x00}
			case tlsAddr: // a TLS record header promising a 512-byte ClientHello
				msg = []byte{0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03}
			}
			conns = append(conns, &slow{c: c, msg: msg})
		}
		every(stop, 100*time.Millisecond, func() {
			for _, sc := range conns {
				if sc.at < len(sc.msg) {
					sc.c.SetWriteDeadline(time.Now().Add(10 * time.Millisecond))
					sc.c.Write(sc.msg[sc.at : sc.at+1])
					sc.at++
				}
			}
		})
	})
	t.Logf("attack: %d slow connections opened (signaling, TURN TCP, TURN TLS)", len(conns))
}

// TestWebSocketFloods: from one address, as many WebSockets as it can
// open (80 tried; max_conns_per_ip holds), each flooding frames at twice
// frames_per_second; pairings whose device never reads, fed 600 KB each;
// requests with 256 KiB of headers where 16 KiB are read.
func TestWebSocketFloods(t *testing.T) {
	d := start(t, config(t))
	var opened, frames, bigHeaders atomic.Int64
	dialFrom := func(ip string, room string) (*websocket.Conn, error) {
		dl := websocket.Dialer{HandshakeTimeout: 2 * time.Second,
			NetDialContext: (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}}).DialContext}
		ws, resp, err := dl.Dial("ws://"+d.signal+"/connect?controllerId="+room, nil)
		if resp != nil && resp.Body != nil {
			resp.Body.Close()
		}
		return ws, err
	}
	underAttack(t, d, func(stop <-chan struct{}) {
		var wg sync.WaitGroup
		// 80 connections from one address in 40 pairings; one goroutine
		// sends every admitted one a frame each 25 ms (40 frames/s, twice
		// frames_per_second), so the attack costs the test process little.
		var flooders []*websocket.Conn
		var offers [][]byte
		for i := range 80 {
			room := fmt.Sprintf("flood-%d", i%40)
			ws, err := dialFrom("127.0.0.30", room)
			if err != nil {
				continue
			}
			t.Cleanup(func() { ws.Close() })
			ws.WriteMessage(websocket.TextMessage, []byte(`{"id":"WsInit","data":""}`))
			ws.SetReadDeadline(time.Now().Add(5 * time.Second))
			if _, first, err := ws.ReadMessage(); err != nil || !strings.Contains(string(first), "WsIceServers") {
				continue // refused: max_conns_per_ip
			}
			ws.SetReadDeadline(time.Time{})
			opened.Add(1)
			go func() { // keep reading so only the frame limits act
				for {
					if _, _, err := ws.ReadMessage(); err != nil {
						return
					}
				}
			}()
			flooders = append(flooders, ws)
			offers = append(offers, []byte(`{"id":"WsSDPOffer","data":"{\"type\":\"offer\",\"sdp\":\"`+strings.Repeat("x", 300)+`\",\"controllerId\":\"`+room+`\"}"}`))
		}
		wg.Go(func() {
			every(stop, 25*time.Millisecond, func() {
				for k, ws := range flooders {
					ws.SetWriteDeadline(time.Now().Add(10 * time.Millisecond))
					if ws.WriteMessage(websocket.TextMessage, offers[k]) == nil {
						frames.Add(1)
					}
				}
			})
		})
		// Slow readers: a pairing whose device never reads while its
		// controller sends.
		wg.Go(func() {
			for k := 0; ; k++ {
				select {
				case <-stop:
					return
				default:
				}
				room := fmt.Sprintf("slow-%d", k)
				reader, err := dialFrom("127.0.0.31", room)
				if err != nil {
					return
				}
				reader.WriteMessage(websocket.TextMessage, []byte(`{"id":"WsInit","data":""}`))
				sender, err := dialFrom("127.0.0.31", room)
				if err != nil {
					reader.Close()
					return
				}
				sender.WriteMessage(websocket.TextMessage, []byte(`{"id":"WsInit","data":""}`))
				big := []byte(`{"id":"WsSDPOffer","data":"{\"type\":\"offer\",\"sdp\":\"` + strings.Repeat("y", 60000) + `\",\"controllerId\":\"` + room + `\"}"}`)
				for range 10 {
					sender.SetWriteDeadline(time.Now().Add(time.Second))
					if sender.WriteMessage(websocket.TextMessage, big) != nil {
						break
					}
				}
				reader.Close()
				sender.Close()
			}
		})
		// Oversized headers: 256 KiB where signaling reads 16 KiB.
		for range 2 {
			wg.Go(func() {
				for range 20 {
					select {
					case <-stop:
						return
					default:
					}
					c, err := net.DialTimeout("tcp4", d.signal, time.Second)
					if err != nil {
						continue
					}
					c.SetDeadline(time.Now().Add(2 * time.Second))
					go func() {
						w := bufio.NewWriter(c)
						fmt.Fprintf(w, "GET /connect HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n")
						line := "X-Big: " + strings.Repeat("z", 1000) + "\r\n"
						for range 256 {
							w.WriteString(line)
						}
						w.WriteString("\r\n")
						w.Flush()
					}()
					status, _ := bufio.NewReader(c).ReadString('\n')
					if strings.Contains(status, " 431 ") {
						bigHeaders.Add(1)
					}
					c.Close()
				}
			})
		}
		wg.Wait()
	})
	t.Logf("attack: %d WebSockets admitted from one address (80 tried), %d 0.4 KB frames sent, %d requests with 256 KiB of headers answered 431",
		opened.Load(), frames.Load(), bigHeaders.Load())
}

// TestOpenRoomFanout: with open_room on, 40 members, one of them sending
// 6 KB frames (an SDP) as fast as it can; the others keep reading, none is
// disconnected, and what goes out stays within open_room_fanout.
func TestOpenRoomFanout(t *testing.T) {
	cfg := config(t)
	set(cfg, "signal.open_room", true)
	d := start(t, cfg)
	var members []*websocket.Conn
	var got atomic.Int64
	var readers sync.WaitGroup
	for range 40 {
		ws, _, err := websocket.DefaultDialer.Dial("ws://"+d.signal+"/connect", nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ws.Close() })
		ws.WriteMessage(websocket.TextMessage, []byte(`{"id":"WsInit","data":""}`))
		members = append(members, ws)
	}
	var dropped atomic.Int64
	for _, ws := range members[1:] {
		readers.Go(func() {
			for {
				_, msg, err := ws.ReadMessage()
				if err != nil {
					var ce *websocket.CloseError
					if errors.As(err, &ce) {
						dropped.Add(1)
					}
					return
				}
				got.Add(int64(len(msg)))
			}
		})
	}
	var sent atomic.Int64
	r := underAttack(t, d, func(stop <-chan struct{}) {
		big := []byte(`{"id":"WsSDPOffer","data":"{\"type\":\"offer\",\"sdp\":\"` + strings.Repeat("y", 6000) + `\",\"controllerId\":\"any\"}"}`)
		go func() { // the sender reads its WsErrors
			for {
				if _, _, err := members[0].ReadMessage(); err != nil {
					return
				}
			}
		}()
		for {
			select {
			case <-stop:
				return
			default:
			}
			members[0].SetWriteDeadline(time.Now().Add(time.Second))
			if members[0].WriteMessage(websocket.TextMessage, big) != nil {
				return
			}
			sent.Add(int64(len(big)))
		}
	})
	for _, ws := range members {
		ws.Close()
	}
	readers.Wait()
	t.Logf("attack: one member sent %d KiB; the 39 others received %d KiB in all", sent.Load()>>10, got.Load()>>10)
	if n := dropped.Load(); n > 0 {
		t.Errorf("%d members were disconnected by the server", n)
	}
	// open_room_fanout's default, 256 KiB/s in bursts of 1 MiB, over the
	// attack and the drain.
	if limit := int64(4<<20 + (r.took+2*time.Second).Seconds()*(256<<10)); got.Load() > limit {
		t.Errorf("%d B went out to the open room, want at most %d", got.Load(), limit)
	}
	if got.Load() == 0 {
		t.Error("nothing was forwarded at all")
	}
}

// TestSIGHUPStorm: SIGHUPs at up to 500/s without waiting for any
// reload, each after the config was rewritten (turn.credential_ttl 1h to
// 5h in turn), while the client calls; no reload may fail. A SIGHUP that
// arrives during a reload must not be lost: the storm ends with a config
// whose turn.secret_file is a FIFO, so that its reload holds until the
// test writes the secret; meanwhile the last config is written and
// SIGHUP sent. That config (credential_ttl 7h, and admin.pprof off,
// logged as needing a restart, which marks the reload that read it) must
// be the one in force.
func TestSIGHUPStorm(t *testing.T) {
	fifo := filepath.Join(t.TempDir(), "secret")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	// Unblocks a writer still waiting for a reader when the test ends.
	t.Cleanup(func() {
		if f, err := os.OpenFile(fifo, os.O_RDONLY|syscall.O_NONBLOCK, 0); err == nil {
			f.Close()
		}
	})
	d := start(t, config(t))
	var signals, reloads atomic.Int64
	// Restart-only settings are named at every reload until the restart,
	// so the first reload that names admin.pprof is the one that read the last
	// config.
	lastRead, applied := false, false
	lastApplied := make(chan struct{})
	lines := d.consumeLogs(func(line map[string]any) {
		switch line["msg"] {
		case "setting changed; it takes effect on restart":
			lastRead = lastRead || line["key"] == "admin.pprof"
		case "config reloaded":
			reloads.Add(1)
			if lastRead && !applied {
				applied = true
				close(lastApplied)
			}
			lastRead = false
		case "reload refused, the running config stays", "reload failed, the running config stays":
			t.Errorf("a reload during the storm: %v: %v", line["msg"], line["err"])
		}
	})
	hup := func() {
		signals.Add(1)
		if err := d.cmd.Process.Signal(syscall.SIGHUP); err != nil {
			t.Error(err)
		}
	}
	underAttack(t, d, func(stop <-chan struct{}) {
		flood(stop, 1, 500, func(*mrand.Rand) bool {
			set(d.cfg, "turn.credential_ttl", fmt.Sprintf("%dh", 1+signals.Load()%5))
			d.writeConfig()
			hup()
			return true
		})
		set(d.cfg, "turn.credential_ttl", "3h")
		set(d.cfg, "turn.secret_file", fifo)
		d.writeConfig()
		hup()
		// Opening the FIFO to write returns once a reload has opened it
		// to read: that reload now waits for the secret.
		opened := make(chan *os.File, 1)
		go func() {
			f, err := os.OpenFile(fifo, os.O_WRONLY, 0)
			if err != nil {
				t.Error(err)
			}
			opened <- f
		}()
		var f *os.File
		select {
		case f = <-opened:
		case <-d.exited:
			return
		case <-time.After(20 * time.Second): // guards against hanging only
			t.Error("no reload read turn.secret_file")
			return
		}
		set(d.cfg, "turn.credential_ttl", "7h")
		set(d.cfg, "admin.pprof", false)
		delete(d.cfg["turn"].(map[string]any), "secret_file")
		d.writeConfig()
		hup()
		f.WriteString(testSecret + "\n")
		f.Close()
	})
	select {
	case <-lastApplied:
	case <-d.exited:
		t.Fatal("icebox exited")
	case <-time.After(20 * time.Second): // guards against hanging only
		t.Fatal("the last config written was never reloaded: the SIGHUP sent during a reload was lost")
	}
	lines.stop()
	t.Logf("storm: %d SIGHUPs, each after a rewrite; %d reloads done", signals.Load(), reloads.Load())
	if ttl := iceServersTTL(t, d.signal); ttl != 7*time.Hour {
		t.Errorf("after the storm WsIceServers mints credentials for %v, want the last config's 7h", ttl)
	}
}

// iceServersTTL does the app's handshake and returns how long the TURN
// credential in WsIceServers is valid, to the hour.
func iceServersTTL(t *testing.T, addr string) time.Duration {
	t.Helper()
	ws, resp, err := (&websocket.Dialer{HandshakeTimeout: 10 * time.Second}).Dial("ws://"+addr+"/connect", nil)
	if resp != nil && resp.Body != nil {
		resp.Body.Close()
	}
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	ws.SetReadDeadline(time.Now().Add(10 * time.Second))
	if err := ws.WriteMessage(websocket.TextMessage, []byte(`{"id":"WsInit","data":""}`)); err != nil {
		t.Fatal(err)
	}
	var f struct{ ID, Data string }
	if err := ws.ReadJSON(&f); err != nil || f.ID != "WsIceServers" {
		t.Fatalf("answer to WsInit: %v %q", err, f.ID)
	}
	var list struct {
		IceServers []struct{ Username string } `json:"iceServers"`
	}
	if err := json.Unmarshal([]byte(f.Data), &list); err != nil {
		t.Fatal(err)
	}
	for _, s := range list.IceServers {
		if exp, _, ok := credentials.ParseUsername(s.Username); ok {
			return time.Until(exp).Round(time.Hour)
		}
	}
	t.Fatalf("no TURN credential in WsIceServers: %s", f.Data)
	return 0
}

// TestKill9Restart: kill -9 under a call, restart at once on the same
// ports with the same secret: the credential minted before works, the
// old allocation's Refresh gets 437 at once (so the client re-allocates
// instead of waiting), and the legitimate client's checks pass again.
func TestKill9Restart(t *testing.T) {
	d := start(t, config(t))
	// An allocation made before the kill, by hand so its 5-tuple survives.
	old := dialRawTURN(t, "udp", d.stun)
	if res := old.do(stun.MethodAllocate, transport()); res.Type.Class != stun.ClassSuccessResponse {
		t.Fatalf("allocate: %v", res)
	}
	d.cmd.Process.Kill()
	<-d.exited
	t0 := time.Now()
	d.run() // same config: same ports, same secret
	t.Logf("restarted on the same ports in %v", time.Since(t0).Round(time.Millisecond))
	if res := old.do(stun.MethodRefresh, stun.RawAttribute{Type: stun.AttrLifetime, Value: []byte{0, 0, 2, 0x58}}); code(res) != 437 {
		t.Errorf("Refresh of an allocation lost in the restart: %v, want 437", res)
	}
	if res := old.do(stun.MethodAllocate, transport()); res.Type.Class != stun.ClassSuccessResponse {
		t.Errorf("re-allocating with the credential minted before the restart: %v", res)
	}
	underAttack(t, d, func(stop <-chan struct{}) { <-stop })
}
