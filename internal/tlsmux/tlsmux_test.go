package tlsmux

import (
	"bufio"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/mholt/acmez/v3"
	"github.com/pion/stun/v3"
	"github.com/prometheus/client_golang/prometheus"

	"icebox/internal/testenv"
)

type port struct {
	m    *Mux
	addr string
	turn chan []byte // first message each TURN connection sent
}

// startPort serves a mux on 127.0.0.1 with a self-signed certificate: an
// HTTP server that says which kind of connection it got, and a TURN taker
// that records the first 20 bytes (a STUN header) and echoes them.
func startPort(t *testing.T, opts Options) *port {
	t.Helper()
	opts.GetCertificate = testenv.SelfSigned(t)
	// Bounds no test here reaches unless it sets its own.
	if opts.Timeout == 0 {
		opts.Timeout = 5 * time.Second
	}
	if opts.MaxPending == 0 {
		opts.MaxPending = 256
	}
	if opts.MaxPendingPerSource == 0 {
		opts.MaxPendingPerSource = 64
	}
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	m, err := New(ln, opts)
	if err != nil {
		t.Fatal(err)
	}
	p := &port{m: m, addr: ln.Addr().String(), turn: make(chan []byte, 16)}
	hs := &http.Server{
		ErrorLog: log.New(io.Discard, "", 0),
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			io.WriteString(w, "page for "+r.Method+" "+r.URL.Path)
		}),
	}
	go hs.Serve(m.HTTP())
	go func() {
		for {
			c, err := m.TURN().Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				b := make([]byte, 20)
				if _, err := io.ReadFull(c, b); err != nil {
					return
				}
				p.turn <- b
				c.Write(b)
			}()
		}
	}()
	t.Cleanup(func() { hs.Close(); m.Close() })
	return p
}

func (p *port) dial(t *testing.T, alpn ...string) *tls.Conn {
	t.Helper()
	return p.dialFrom(t, "127.0.0.1", alpn...)
}

// dialFrom is dial from the local address from.
func (p *port) dialFrom(t *testing.T, from string, alpn ...string) *tls.Conn {
	t.Helper()
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}}
	c, err := tls.DialWithDialer(d, "tcp4", p.addr, &tls.Config{InsecureSkipVerify: true, NextProtos: alpn})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(5 * time.Second))
	return c
}

func (p *port) routed(t *testing.T, route string) float64 {
	return testenv.MetricValue(t, p.m.routed[route])
}

// TestRoutes: TURN and HTTP each reach their taker both by ALPN and by
// their first bytes, which arrive intact; anything else is refused.
func TestRoutes(t *testing.T) {
	t.Parallel()
	p := startPort(t, Options{TURN: true, HTTP: true, Registerer: prometheus.NewRegistry()})
	binding := stun.MustBuild(stun.TransactionID, stun.BindingRequest).Raw
	for _, alpn := range [][]string{{ProtoTURN}, nil, {"h2", ProtoTURN}} {
		c := p.dial(t, alpn...)
		if _, err := c.Write(binding); err != nil {
			t.Fatal(err)
		}
		select {
		case got := <-p.turn:
			if string(got) != string(binding[:20]) {
				t.Fatalf("ALPN %v: TURN taker got % x, want % x", alpn, got, binding[:20])
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("ALPN %v: STUN never reached the TURN taker", alpn)
		}
		echo := make([]byte, 20)
		if _, err := io.ReadFull(c, echo); err != nil {
			t.Fatalf("ALPN %v: %v", alpn, err)
		}
	}
	for _, alpn := range [][]string{{ProtoHTTP}, nil, {"h2", ProtoHTTP}} {
		c := p.dial(t, alpn...)
		io.WriteString(c, "GET /hello HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatalf("ALPN %v: %v", alpn, err)
		}
		body, _ := io.ReadAll(resp.Body)
		if string(body) != "page for GET /hello" {
			t.Fatalf("ALPN %v: body %q", alpn, body)
		}
	}
	// A real HTTPS client (ALPN h2 and http/1.1).
	hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, ForceAttemptHTTP2: true}}
	resp, err := hc.Get("https://" + p.addr + "/x")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.Proto != "HTTP/1.1" {
		t.Errorf("negotiated %s, want HTTP/1.1", resp.Proto)
	}
	if got := p.routed(t, "turn"); got != 3 {
		t.Errorf("routed to turn %v times, want 3", got)
	}
	if got := p.routed(t, "http"); got != 4 {
		t.Errorf("routed to http %v times, want 4", got)
	}

	// Junk after the handshake is refused: the connection is closed.
	c := p.dial(t)
	io.WriteString(c, "\xff\xfejunk...")
	if _, err := c.Read(make([]byte, 1)); err == nil {
		t.Fatal("junk got an answer")
	}
	if got := p.routed(t, "refused"); got != 1 {
		t.Errorf("refused %v, want 1", got)
	}
}

// TestRouteWithoutTaker: with TURN off, a TURN client is closed and the
// page still loads.
func TestRouteWithoutTaker(t *testing.T) {
	t.Parallel()
	p := startPort(t, Options{HTTP: true})
	c := p.dial(t)
	c.Write(stun.MustBuild(stun.TransactionID, stun.BindingRequest).Raw)
	if _, err := c.Read(make([]byte, 1)); err == nil {
		t.Fatal("TURN connection answered with TURN off")
	}
	c = p.dial(t, ProtoHTTP)
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	if resp, err := http.ReadResponse(bufio.NewReader(c), nil); err != nil || resp.StatusCode != 200 {
		t.Fatalf("page with TURN off: %v", err)
	}
}

// TestSilentClients: an attacker's connections that never finish the
// handshake, or never send a byte after it, are cut after Timeout; past
// MaxPending they are closed at once; a legitimate client keeps getting
// the page meanwhile. Each refusal is logged after its pending slot is
// given back, so the test waits on those events, not on time.
func TestSilentClients(t *testing.T) {
	t.Parallel()
	const timeout = 300 * time.Millisecond
	refusals := make(chan slog.Record, 64)
	p := startPort(t, Options{TURN: true, HTTP: true, Timeout: timeout, MaxPending: 16, Logger: slog.New(testenv.NewLogChan(refusals, refusedMessage))})
	var silent []net.Conn
	for range 4 { // no handshake at all
		c, err := net.Dial("tcp4", p.addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		silent = append(silent, c)
	}
	for range 2 { // a handshake, then nothing
		silent = append(silent, p.dial(t))
	}
	legit := func(p *port, from string) {
		t.Helper()
		c := p.dialFrom(t, from, ProtoHTTP)
		io.WriteString(c, "GET /legit HTTP/1.1\r\nHost: x\r\n\r\n")
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("legitimate client: %v", err)
		}
	}
	legit(p, "127.0.0.1")
	start := time.Now()
	for i, c := range silent {
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, err := c.Read(make([]byte, 1))
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			t.Fatalf("silent connection %d still open after 5s", i)
		}
	}
	t.Logf("silent connections cut after %v (timeout %v)", time.Since(start).Round(time.Millisecond), timeout)
	refused(t, refusals, len(silent), "")
	if got := p.routed(t, "refused"); got != float64(len(silent)) {
		t.Errorf("refused counted %v, want %d", got, len(silent))
	}

	// Past its share or past MaxPending, a connection is closed straight
	// away. A timeout far beyond the test's waits: nothing here is cut by
	// it.
	refusals = make(chan slog.Record, 64)
	q := startPort(t, Options{TURN: true, HTTP: true, Timeout: time.Minute, MaxPending: 8, Logger: slog.New(testenv.NewLogChan(refusals, refusedMessage))})
	var flood []net.Conn
	hold := func(from string) { flood = append(flood, dialFrom(t, from, q.addr)) }
	closedAtOnce := func(from, why string) {
		t.Helper()
		c := dialFrom(t, from, q.addr)
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.Read(make([]byte, 1)); err == nil || strings.Contains(err.Error(), "timeout") {
			t.Fatalf("connection from %s: %v, want closed at once", from, err)
		}
		refused(t, refusals, 1, why)
	}
	// One source gets half of the slots: once half are taken, a source
	// holding any may hold an eighth of what is free.
	for range 8 {
		hold("127.0.0.1")
	}
	refused(t, refusals, 4, "too many connections in handshake from this source")
	// The front door takes connections in order: once this one is closed,
	// it has counted all the source's others.
	closedAtOnce("127.0.0.1", "too many connections in handshake from this source")
	// While that source holds its four, a client from elsewhere gets in.
	legit(q, "127.0.0.2")
	// Sources holding none get one each, until the port is full.
	for i := range 4 {
		hold(fmt.Sprintf("127.0.0.%d", 3+i))
	}
	closedAtOnce("127.0.0.7", "too many connections in handshake")
	for _, c := range flood {
		c.Close()
	}
	// Once the flood is gone, its handshakes fail and give back their
	// slots, and the legitimate client gets in again at once.
	refused(t, refusals, 8, "")
	if got := q.routed(t, "refused"); got != float64(2+len(flood)) {
		t.Errorf("refused counted %v, want %d", got, 2+len(flood))
	}
	legit(q, "127.0.0.1")
}

// dialFrom opens a TCP connection to addr from the local address from,
// closed when the test ends.
func dialFrom(t *testing.T, from, addr string) net.Conn {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}}
	c, err := d.Dial("tcp4", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// refusedMessage is what the mux logs for each connection it refuses,
// with why.
const refusedMessage = "tls port: connection refused"

// refused waits for n refusals logged to refusals, each for why (any
// reason when why is "").
func refused(t *testing.T, refusals <-chan slog.Record, n int, why string) {
	t.Helper()
	for i := range n {
		select {
		case r := <-refusals:
			if got := testenv.Attr(r, "why"); why != "" && got != why {
				t.Fatalf("refusal %d: %q, want %q", i, got, why)
			}
		case <-time.After(10 * time.Second): // guards against hanging only
			t.Fatalf("%d connections refused, want %d", i, n)
		}
	}
}

// TestBoundsAreRequired: the port's handshake bounds are the caller's
// settings (icebox's stun section); there are none to fall back on.
func TestBoundsAreRequired(t *testing.T) {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	if m, err := New(ln, Options{GetCertificate: testenv.SelfSigned(t), HTTP: true}); err == nil {
		m.Close()
		t.Fatal("New without Timeout, MaxPending and MaxPendingPerSource succeeded, want an error")
	}
}

// TestACMEProtocolOnlyWithACME: acme-tls/1 is offered only when the
// certificate source is ACME's. With certificate files, a client asking
// for it alone fails the handshake and is counted refused, not as a CA's
// challenge; with ACME it is negotiated and counted as one.
func TestACMEProtocolOnlyWithACME(t *testing.T) {
	t.Parallel()
	for _, acme := range []bool{false, true} {
		p := startPort(t, Options{HTTP: true, ACME: acme, Registerer: prometheus.NewRegistry()})
		d := &net.Dialer{Timeout: 5 * time.Second}
		c, err := tls.DialWithDialer(d, "tcp4", p.addr, &tls.Config{InsecureSkipVerify: true, NextProtos: []string{acmez.ACMETLS1Protocol}})
		if acme {
			if err != nil {
				t.Fatalf("ACME on: handshake offering acme-tls/1: %v", err)
			}
			if got := c.ConnectionState().NegotiatedProtocol; got != acmez.ACMETLS1Protocol {
				t.Errorf("ACME on: negotiated %q, want acme-tls/1", got)
			}
			c.SetReadDeadline(time.Now().Add(5 * time.Second))
			c.Read(make([]byte, 1)) // the port closes it, counted first
			c.Close()
		} else if err == nil {
			c.Close()
			t.Fatalf("ACME off: a handshake asking only for acme-tls/1 succeeded (negotiated %q)", c.ConnectionState().NegotiatedProtocol)
		}
		want := map[string]float64{"acme": 0, "refused": 1}
		if acme {
			want = map[string]float64{"acme": 1, "refused": 0}
		}
		for route, n := range want {
			testenv.WaitFor(t, 5*time.Second, fmt.Sprintf("acme=%v: %s counted %v", acme, route, n), func() bool { return p.routed(t, route) == n })
		}
	}
}
