package main

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"icebox/internal/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// startIcebox runs the icebox daemon as make bench runs it
// (bench/icebox.yaml) and returns its address (UDP and TCP share the port).
func startIcebox(t *testing.T) string {
	t.Helper()
	port, _ := testenv.StartBenchIcebox(t, exec.Command)
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
}

// TestLoadAgainstIcebox runs every load mode briefly against a real icebox
// on loopback: operations complete and nothing is lost or late (the
// timeout is far longer than any stall).
func TestLoadAgainstIcebox(t *testing.T) {
	addr := startIcebox(t)
	for _, c := range []struct {
		mode string
		tcp  bool
	}{
		{"binding", false}, {"binding", true},
		{"channel", false}, {"channel", true},
		{"send", false}, {"send", true},
		{"alloc", false},
	} {
		name := c.mode + "/udp"
		if c.tcp {
			name = c.mode + "/tcp"
		}
		t.Run(name, func(t *testing.T) {
			res, err := load(options{
				mode: c.mode, addr: addr, flows: 2, window: 8, size: 160, tcp: c.tcp,
				duration: 200 * time.Millisecond, timeout: 10 * time.Second,
				secret: testenv.BenchSecret, realm: "icebox", peerIP: "127.0.0.1",
			})
			if err != nil {
				t.Fatal(err)
			}
			t.Log(res)
			if res.ops == 0 || res.lost != 0 || res.late != 0 {
				t.Errorf("%v: want ops > 0, lost = late = 0", res)
			}
		})
	}
}

// proxy sits between stunload and icebox and passes answers back as its
// policy says.
type proxy struct {
	mu       sync.Mutex
	requests int
	answers  int
	// forward, if > 0: pass only this many answers and then none (a server
	// that stops answering).
	forward int
	// hold, if > 0: keep this many first answers back until twice as many
	// requests came, that is until stunload refilled the window it counted
	// as lost (a server that stalls).
	hold int
	held [][]byte
}

// request notes one request; send passes held answers on.
func (p *proxy) request(send func([]byte) error) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.requests++
	if p.hold > 0 && p.requests == 2*p.hold {
		for _, b := range p.held {
			if err := send(b); err != nil {
				return err
			}
		}
		p.held = nil
	}
	return nil
}

// answer passes b on with send, keeps it back or drops it.
func (p *proxy) answer(b []byte, send func([]byte) error) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.answers++
	switch {
	case p.forward > 0 && p.answers > p.forward:
		return nil
	case p.hold > 0 && p.answers <= p.hold:
		p.held = append(p.held, append([]byte(nil), b...))
		return nil
	}
	return send(b)
}

// serveUDP relays datagrams from one client to server and back.
func (p *proxy) serveUDP(t *testing.T, server string) string {
	front, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	back, err := net.Dial("udp", server)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { front.Close(); back.Close() })
	var mu sync.Mutex
	var client net.Addr
	toClient := func(b []byte) error {
		mu.Lock()
		defer mu.Unlock()
		_, err := front.WriteTo(b, client)
		return err
	}
	go func() {
		buf := make([]byte, 2048)
		for {
			n, from, err := front.ReadFrom(buf)
			if err != nil {
				return
			}
			mu.Lock()
			client = from
			mu.Unlock()
			if _, err := back.Write(buf[:n]); err != nil {
				return
			}
			if p.request(toClient) != nil {
				return
			}
		}
	}()
	go func() {
		buf := make([]byte, 2048)
		for {
			n, err := back.Read(buf)
			if err != nil {
				return
			}
			if p.answer(buf[:n], toClient) != nil {
				return
			}
		}
	}()
	return front.LocalAddr().String()
}

// serveTCP relays frames of one connection to server and back.
func (p *proxy) serveTCP(t *testing.T, server string) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		front, err := l.Accept()
		if err != nil {
			return
		}
		back, err := net.Dial("tcp", server)
		if err != nil {
			front.Close()
			return
		}
		t.Cleanup(func() { front.Close(); back.Close() })
		var mu sync.Mutex
		toClient := func(b []byte) error {
			mu.Lock()
			defer mu.Unlock()
			_, err := front.Write(b)
			return err
		}
		frameByFrame := func(from io.Reader, each func([]byte) error) {
			r := bufio.NewReader(from)
			for {
				b, err := peekFrame(r)
				if err == nil {
					err = each(b)
				}
				if err != nil {
					return
				}
				r.Discard(len(b))
			}
		}
		go frameByFrame(front, func(b []byte) error {
			if _, err := back.Write(b); err != nil {
				return err
			}
			return p.request(toClient)
		})
		frameByFrame(back, func(b []byte) error { return p.answer(b, toClient) })
	}()
	return l.Addr().String()
}

func (p *proxy) serve(t *testing.T, tcp bool, server string) string {
	if tcp {
		return p.serveTCP(t, server)
	}
	return p.serveUDP(t, server)
}

// proxiedBinding runs Binding load with window through p, over UDP and
// over TCP, and hands check each result.
func proxiedBinding(t *testing.T, newProxy func() *proxy, window int, check func(*testing.T, result)) {
	addr := startIcebox(t)
	for _, tcp := range []bool{false, true} {
		t.Run(map[bool]string{false: "udp", true: "tcp"}[tcp], func(t *testing.T) {
			res, err := load(options{
				mode: "binding", addr: newProxy().serve(t, tcp, addr), flows: 1, window: window, tcp: tcp,
				duration: time.Second, timeout: 100 * time.Millisecond,
			})
			if err != nil {
				t.Fatal(err)
			}
			t.Log(res)
			check(t, res)
		})
	}
}

// TestSilentServerLosesWhatItOwes: a server that stops answering mid-run
// leaves every window after that lost, none late.
func TestSilentServerLosesWhatItOwes(t *testing.T) {
	const answered, window = 20, 4
	proxiedBinding(t, func() *proxy { return &proxy{forward: answered} }, window, func(t *testing.T, res result) {
		if res.ops != answered || res.lost < window || res.lost%window != 0 || res.late != 0 {
			t.Errorf("%v: want ops = %d, lost a multiple of %d, late = 0", res, answered, window)
		}
	})
}

// TestStalledServerAnswersLate: answers that come after stunload counted
// their window lost are late, not lost.
func TestStalledServerAnswersLate(t *testing.T) {
	const window = 4
	proxiedBinding(t, func() *proxy { return &proxy{hold: window} }, window, func(t *testing.T, res result) {
		if res.ops <= window || res.lost != 0 || res.late < window {
			t.Errorf("%v: want ops > %d, lost = 0, late >= %d", res, window, window)
		}
	})
}

// TestGoneServerIsLostNotTheEnd: datagrams to a closed port come back as
// ICMP errors (ECONNREFUSED on the next read); the flow counts its windows
// lost and goes on rather than stopping at the first error.
func TestGoneServerIsLostNotTheEnd(t *testing.T) {
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	gone := c.LocalAddr().String()
	c.Close()
	const window = 4
	res, err := load(options{mode: "binding", addr: gone, flows: 1, window: window,
		duration: 500 * time.Millisecond, timeout: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if res.ops != 0 || res.lost < 2*window || res.late != 0 {
		t.Errorf("%v: want ops = 0, lost >= %d, late = 0", res, 2*window)
	}
}

// TestWindowOverSendErrors drives window over a transport that fails one
// send with the ICMP error of an earlier datagram: the flow goes on and
// the window stays full, whether the answers come a whole window per read
// or one per read (then no window ever times out, and requests held back
// by the failed send must go out with the next one).
func TestWindowOverSendErrors(t *testing.T) {
	const n = 4
	for _, perRead := range []int{0, 1} {
		t.Run(fmt.Sprintf("answers per read %d", perRead), func(t *testing.T) {
			tr := &echoTransport{failSend: 3, perRead: perRead}
			done, lost, late := window(time.Now().Add(100*time.Millisecond), n, time.Millisecond, tr, epochOps{})
			if tr.sends <= tr.failSend {
				t.Fatalf("the flow ended at the failed send: %d sends", tr.sends)
			}
			if lost != 0 || late != 0 || done < 2*n {
				t.Errorf("done %d, lost %d, late %d: want lost 0 (nothing sent was dropped), late 0", done, lost, late)
			}
			if got := tr.inFlight(); got != n {
				t.Errorf("%d requests in flight at the end, want the window's %d", got, n)
			}
		})
	}
}

// TestWindowSendsNothingForLateAnswers: a read that brings only answers to
// a window already counted lost starts no operation and sends nothing.
func TestWindowSendsNothingForLateAnswers(t *testing.T) {
	const n = 4
	tr := &echoTransport{stallRecv: 1}
	done, lost, late := window(time.Now().Add(100*time.Millisecond), n, time.Millisecond, tr, epochOps{})
	if lost != 0 || late != n || done < 2*n {
		t.Errorf("done %d, lost %d, late %d: want lost 0, late %d", done, lost, late, n)
	}
	if tr.empty != 0 {
		t.Errorf("%d sends of no request", tr.empty)
	}
}

// epochOps' requests are their window's number, four bytes.
type epochOps struct{}

func (epochOps) appendRequest(b []byte, epoch uint32) []byte {
	return binary.BigEndian.AppendUint32(b, epoch)
}

func (epochOps) epochOf(answer []byte) (uint32, bool) {
	return binary.BigEndian.Uint32(answer), len(answer) == 4
}

// echoTransport answers requests in the order they were sent: each read
// brings one send's requests, or perRead requests when perRead > 0. Send
// number failSend fails with ECONNREFUSED instead of sending; read number
// stallRecv times out without answering, so its answers come late.
type echoTransport struct {
	failSend, stallRecv, perRead int
	sends, recvs, empty          int
	queued                       [][]byte // one send's requests each
}

func (e *echoTransport) send(o ops, n int, epoch uint32) error {
	e.sends++
	if n == 0 {
		e.empty++
	}
	if e.sends == e.failSend {
		return syscall.ECONNREFUSED
	}
	var b []byte
	for range n {
		b = o.appendRequest(b, epoch)
	}
	e.queued = append(e.queued, b)
	return nil
}

func (e *echoTransport) recv(_ time.Time, each func([]byte)) error {
	e.recvs++
	if len(e.queued) == 0 || e.recvs == e.stallRecv {
		return os.ErrDeadlineExceeded
	}
	answers := len(e.queued[0]) / 4
	if e.perRead > 0 {
		answers = e.perRead
	}
	for ; answers > 0 && len(e.queued) > 0; answers-- {
		each(e.queued[0][:4])
		if e.queued[0] = e.queued[0][4:]; len(e.queued[0]) == 0 {
			e.queued = e.queued[1:]
		}
	}
	return nil
}

// inFlight is how many requests await an answer.
func (e *echoTransport) inFlight() int {
	n := 0
	for _, b := range e.queued {
		n += len(b) / 4
	}
	return n
}
