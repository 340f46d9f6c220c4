// Package tlsmux serves TURN and HTTPS on one TLS port (443 on networks
// that pass nothing else): it terminates TLS once and hands each
// connection to TURN or to HTTP, by ALPN where the client sends one
// ("stun.turn", RFC 7443, or "http/1.1"), else by its first bytes: a STUN
// header or ChannelData goes to TURN, an HTTP request line to HTTP.
package tlsmux

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/mholt/acmez/v3"
	"github.com/prometheus/client_golang/prometheus"

	"icebox/internal/ipclass"
	"icebox/internal/persource"
	"icebox/internal/promset"
)

// ALPN protocol names the port answers to, besides acme-tls/1
// (acmez.ACMETLS1Protocol, RFC 8737) with Options.ACME.
const (
	ProtoTURN = "stun.turn" // RFC 7443
	ProtoHTTP = "http/1.1"
)

// Options configure a Mux.
type Options struct {
	// GetCertificate serves every handshake (certs.Source's). Required.
	GetCertificate func(*tls.ClientHelloInfo) (*tls.Certificate, error)
	// TURN and HTTP say which routes have a taker; a connection for a
	// route without one is closed and counted as refused.
	TURN, HTTP bool
	// ACME offers acme-tls/1: GetCertificate is an ACME source, which
	// answers the CA's TLS-ALPN-01 challenge in the handshake itself.
	// Without it a client asking only for acme-tls/1 fails the handshake.
	ACME bool
	// Timeout bounds the TLS handshake and the wait for the first bytes,
	// so a silent client holds a goroutine this long at most. Required
	// (icebox: stun.tls_handshake_timeout).
	Timeout time.Duration
	// MaxPending caps connections in handshake or sniffing at once; more
	// are closed on accept, so a flood of silent clients cannot pile up
	// goroutines. Required (icebox: stun.max_tls_handshakes).
	MaxPending int
	// MaxPendingPerSource caps those of one source (an IPv4 address or
	// an IPv6 /64); once half of MaxPending are taken, a source that has
	// any may have at most an eighth of what is free
	// (persource.FairShareFull), so that a few hosts holding silent
	// connections cannot lock everyone else out of the port. Required
	// (icebox: stun.max_tcp_connections_per_source).
	MaxPendingPerSource int
	// Logger gets refusals at debug. Default: discard.
	Logger *slog.Logger
	// Registerer gets icebox_tls_port_connections_total; nil: none.
	Registerer prometheus.Registerer
}

// Mux is one TLS port whose connections TURN() and HTTP() hand out.
type Mux struct {
	ln      net.Listener
	conf    *tls.Config
	opts    Options
	pending persource.Counter // connections in handshake or sniffing
	turn    *route
	http    *route
	routed  map[string]prometheus.Counter // by route
	metrics *promset.Set
	reg     prometheus.Registerer
	done    chan struct{}
	once    sync.Once
	wg      sync.WaitGroup

	mu       sync.Mutex
	inFlight map[net.Conn]struct{} // in handshake or sniffing
}

// New serves ln until Close; it owns ln from now on. The first error
// ln's Accept returns ends the port, so ln retries what is worth retrying
// itself (icebox's listeners do: cmd/icebox, keepAccepting).
func New(ln net.Listener, opts Options) (*Mux, error) {
	if opts.GetCertificate == nil {
		return nil, errors.New("tlsmux: no certificate source")
	}
	if opts.Timeout <= 0 || opts.MaxPending <= 0 || opts.MaxPendingPerSource <= 0 {
		return nil, errors.New("tlsmux: Timeout, MaxPending and MaxPendingPerSource are required")
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	// Server order: a client offering both gets TURN. No h2: the
	// WebSockets here are HTTP/1.1 upgrades.
	protos := []string{ProtoTURN, ProtoHTTP}
	if opts.ACME {
		protos = append(protos, acmez.ACMETLS1Protocol)
	}
	m := &Mux{
		ln:   ln,
		opts: opts,
		conf: &tls.Config{
			GetCertificate: opts.GetCertificate,
			MinVersion:     tls.VersionTLS12,
			NextProtos:     protos,
		},
		done:     make(chan struct{}),
		inFlight: make(map[net.Conn]struct{}),
		metrics:  promset.New("tls"),
		reg:      opts.Registerer,
	}
	m.routed = m.metrics.Counters("port_connections_total",
		"Connections to the shared TLS port (tls.listen), by where they went: turn, http, acme (a CA's challenge), or refused (failed handshake, silence, unknown first bytes, no taker, too many pending).",
		"route", "turn", "http", "acme", "refused")
	if err := m.metrics.Register(m.reg); err != nil {
		return nil, err
	}
	m.turn = &route{m: m, conns: make(chan net.Conn)}
	m.http = &route{m: m, conns: make(chan net.Conn)}
	m.wg.Add(1)
	go m.accept()
	return m, nil
}

// TURN is the listener of TURN connections: TLS already terminated, the
// first bytes a STUN or ChannelData message.
func (m *Mux) TURN() net.Listener { return m.turn }

// HTTP is the listener of HTTP connections. Those chosen by ALPN are
// *tls.Conn; those chosen by their first bytes are *Conn: both have
// ConnectionState.
func (m *Mux) HTTP() net.Listener { return m.http }

// Addr is the port's address.
func (m *Mux) Addr() net.Addr { return m.ln.Addr() }

// Close stops accepting and closes the connections not yet handed over.
func (m *Mux) Close() error {
	var err error
	m.once.Do(func() {
		close(m.done)
		err = m.ln.Close()
		m.mu.Lock()
		for c := range m.inFlight {
			c.Close()
		}
		m.mu.Unlock()
		m.wg.Wait()
		m.metrics.Unregister(m.reg)
	})
	return err
}

func (m *Mux) accept() {
	defer m.wg.Done()
	for {
		c, err := m.ln.Accept()
		if err != nil {
			return // closed, or an error ln does not retry itself (New)
		}
		src := ipclass.PeerAddrPort(c.RemoteAddr()).Addr()
		if why := m.admit(src); why != "" {
			m.refuse(c, why)
			c.Close()
			continue
		}
		m.mu.Lock()
		select {
		case <-m.done: // Close has already cut the others
			m.mu.Unlock()
			m.pending.Release(src)
			c.Close()
			return
		default:
		}
		m.inFlight[c] = struct{}{}
		m.mu.Unlock()
		m.wg.Add(1)
		go func() {
			defer m.wg.Done()
			m.handle(c, src)
		}()
	}
}

// admit counts a connection from src as pending, or says why it may not
// be.
func (m *Mux) admit(src netip.Addr) (why string) {
	limits := persource.Limits{Total: m.opts.MaxPending, PerSource: m.opts.MaxPendingPerSource, FairShare: true}
	switch m.pending.Take(src, limits) {
	case persource.Admitted:
		return ""
	case persource.OverTotal:
		return "too many connections in handshake"
	}
	return "too many connections in handshake from this source"
}

func (m *Mux) refuse(c net.Conn, why string) {
	m.routed["refused"].Inc()
	m.opts.Logger.Debug("tls port: connection refused", "client", c.RemoteAddr(), "why", why)
}

// handle terminates TLS, picks the route and hands the connection over.
func (m *Mux) handle(raw net.Conn, src netip.Addr) {
	tc := tls.Server(raw, m.conf)
	out, route, why := m.classify(tc)
	m.pending.Release(src)
	m.mu.Lock()
	delete(m.inFlight, raw)
	m.mu.Unlock()
	if route == nil {
		// Counted before the close, so that whoever sees the close also
		// sees the count.
		if why == "" {
			m.routed["acme"].Inc()
		} else {
			m.refuse(raw, why)
		}
		tc.Close()
		return
	}
	// Counted before the hand-over, so that whoever the taker answers
	// also sees the count (TestRoutes read it after the answer and, once
	// in a loaded run, before this increment). At shutdown a connection
	// may be counted and then closed instead.
	m.routed[route.name()].Inc()
	select {
	case route.conns <- out:
	case <-m.done:
		tc.Close()
	}
}

// classify returns the connection to hand over and its route, or no
// route and why not ("" for a finished ACME challenge).
func (m *Mux) classify(tc *tls.Conn) (net.Conn, *route, string) {
	tc.SetDeadline(time.Now().Add(m.opts.Timeout))
	if err := tc.Handshake(); err != nil {
		return nil, nil, "handshake: " + err.Error()
	}
	var out net.Conn = tc
	var to *route
	switch tc.ConnectionState().NegotiatedProtocol {
	case ProtoTURN:
		to = m.turn
	case ProtoHTTP:
		to = m.http
	case acmez.ACMETLS1Protocol:
		return nil, nil, ""
	default:
		br := bufio.NewReaderSize(tc, 16)
		head, err := br.Peek(sniffLen)
		if err != nil {
			return nil, nil, "first bytes: " + err.Error()
		}
		switch {
		case isSTUN(head) || isChannelData(head) && !isHTTP(head):
			to = m.turn
		case isHTTP(head):
			to = m.http
		default:
			return nil, nil, "first bytes are neither TURN nor HTTP"
		}
		out = &Conn{Conn: tc, r: br}
	}
	if (to == m.turn && !m.opts.TURN) || (to == m.http && !m.opts.HTTP) {
		return nil, nil, "nothing serves " + to.name() + " here"
	}
	tc.SetDeadline(time.Time{})
	return out, to, ""
}

// sniffLen is how many bytes tell TURN from HTTP: a STUN header's type,
// length and magic cookie, or an HTTP method and its space.
const sniffLen = 8

const stunMagicCookie = 0x2112A442

func isSTUN(b []byte) bool {
	return b[0]&0xC0 == 0 && binary.BigEndian.Uint32(b[4:8]) == stunMagicCookie
}

// isChannelData: channel numbers 0x4000-0x7FFF (RFC 8656).
func isChannelData(b []byte) bool { return b[0]&0xC0 == 0x40 }

// isHTTP: an upper-case method token of 3 to 7 letters and a space.
func isHTTP(b []byte) bool {
	i := bytes.IndexByte(b, ' ')
	if i < 3 {
		return false
	}
	for _, c := range b[:i] {
		if c < 'A' || c > 'Z' {
			return false
		}
	}
	return true
}

// Conn is a TLS connection whose first bytes were read to route it; Read
// gives them back first.
type Conn struct {
	*tls.Conn
	r *bufio.Reader
}

func (c *Conn) Read(p []byte) (int, error) { return c.r.Read(p) }

// route is one side of the mux, a net.Listener for its taker.
type route struct {
	m     *Mux
	conns chan net.Conn
}

func (r *route) name() string {
	if r == r.m.turn {
		return "turn"
	}
	return "http"
}

func (r *route) Accept() (net.Conn, error) {
	select {
	case c := <-r.conns:
		return c, nil
	case <-r.m.done:
		return nil, net.ErrClosed
	}
}

// Close closes the whole port: a taker that stops means icebox stops.
func (r *route) Close() error { return r.m.Close() }

func (r *route) Addr() net.Addr { return r.m.ln.Addr() }
