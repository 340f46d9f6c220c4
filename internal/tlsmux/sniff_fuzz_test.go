package tlsmux

import (
	"bytes"
	"crypto/tls"
	"io"
	"net"
	"regexp"
	"testing"
	"time"

	"github.com/pion/stun/v3"
	"github.com/prometheus/client_golang/prometheus"

	"icebox/internal/testenv"
)

// httpRequestLine is how an HTTP/1.x request starts (RFC 9112 §3: an
// upper-case method token, here 3 to 7 letters as the methods browsers
// and curl send, then a space).
var httpRequestLine = regexp.MustCompile(`^[A-Z]{3,7} `)

// referenceRoute is where the first bytes of a connection without ALPN
// should go, written from the RFCs rather than from the mux's code: a STUN
// header (top two bits 0, the magic cookie at bytes 4-7, RFC 8489 §5) to
// TURN; an HTTP request line to HTTP, even though its first letter is
// also a ChannelData channel number; other ChannelData (first two bits
// 01, channels 0x4000-0x7FFF, RFC 8656 §12.4) to TURN; anything else, and
// fewer than sniffLen bytes, refused.
func referenceRoute(b []byte) string {
	switch {
	case len(b) < sniffLen:
		return "refused"
	case b[0] < 0x40 && bytes.Equal(b[4:8], []byte{0x21, 0x12, 0xA4, 0x42}):
		return "turn"
	case httpRequestLine.Match(b[:sniffLen]):
		return "http"
	case b[0] >= 0x40 && b[0] <= 0x7F:
		return "turn"
	}
	return "refused"
}

// taken is what a route's taker read from a connection it was handed.
type taken struct {
	route string
	bytes []byte
}

// FuzzSniff sends any bytes over TLS without ALPN to a real mux whose
// TURN and HTTP takers read everything they are handed: the connection
// must reach the route referenceRoute names, with every byte it sent
// (the sniffed ones too) intact and in order, or be refused and counted.
func FuzzSniff(f *testing.F) {
	f.Add(stun.MustBuild(stun.TransactionID, stun.BindingRequest).Raw)
	f.Add([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"))
	f.Add([]byte("OPTIONS * HTTP/1.1\r\n\r\n"))
	f.Add([]byte("get / HTTP/1.1\r\n\r\n"))
	f.Add([]byte("GE / HTTP/1.1"))
	f.Add([]byte{0x40, 0x00, 0x00, 0x04, 1, 2, 3, 4})
	f.Add([]byte{0x7F, 0xFF, 0x00, 0x04, 'G', 'E', 'T', ' '})
	f.Add([]byte("\x16\x03\x01\x00\x00\x00\x00\x00"))
	f.Add([]byte("\x00\x01\x00\x00\x21\x12"))

	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		f.Fatal(err)
	}
	m, err := New(ln, Options{
		TURN: true, HTTP: true, Registerer: prometheus.NewRegistry(), GetCertificate: testenv.SelfSigned(f),
		Timeout: 5 * time.Second, MaxPending: 256, MaxPendingPerSource: 64,
	})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { m.Close() })
	got := make(chan taken, 1)
	for name, l := range map[string]net.Listener{"turn": m.TURN(), "http": m.HTTP()} {
		go func() {
			for {
				c, err := l.Accept()
				if err != nil {
					return
				}
				b, _ := io.ReadAll(c)
				// Reported before the close, so the client that sees the
				// close finds the report.
				got <- taken{name, b}
				c.Close()
			}
		}()
	}
	// Resumed sessions over plain X25519: the handshake is not what is
	// fuzzed, and a cheaper one buys more inputs in make fuzz's budget.
	client := &tls.Config{
		InsecureSkipVerify: true,
		CurvePreferences:   []tls.CurveID{tls.X25519},
		ClientSessionCache: tls.NewLRUClientSessionCache(1),
	}

	f.Fuzz(func(t *testing.T, b []byte) {
		refusedBefore := testenv.MetricValue(t, m.routed["refused"])
		c, err := tls.Dial("tcp4", ln.Addr().String(), client)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		// A refused connection may be closed while the rest is still
		// being written: a write error is judged with the route below.
		_, writeErr := c.Write(b)
		if writeErr == nil {
			writeErr = c.CloseWrite()
		}
		// The takers answer nothing: the read ends when the connection
		// is closed, by the taker or by the mux refusing it.
		if n, err := io.Copy(io.Discard, c); n != 0 || isTimeout(err) {
			t.Fatalf("% x: read %d bytes back, %v; want the connection closed", b, n, err)
		}
		want := referenceRoute(b)
		select {
		case tk := <-got:
			if tk.route != want {
				t.Fatalf("% x went to %s, want %s", b, tk.route, want)
			}
			if writeErr != nil {
				t.Fatalf("% x, routed to %s: %v", b, tk.route, writeErr)
			}
			if !bytes.Equal(tk.bytes, b) {
				t.Fatalf("%s taker got % x, want % x as sent", tk.route, tk.bytes, b)
			}
		default:
			if want != "refused" {
				t.Fatalf("% x refused, want it routed to %s", b, want)
			}
			if n := testenv.MetricValue(t, m.routed["refused"]); n != refusedBefore+1 {
				t.Fatalf("% x refused but counted %v times", b, n-refusedBefore)
			}
		}
	})
}

func isTimeout(err error) bool {
	ne, ok := err.(net.Error)
	return ok && ne.Timeout()
}
