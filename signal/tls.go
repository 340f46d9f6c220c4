package signal

import (
	"crypto/tls"
	"errors"
	"io"
	"net"
	"sync"
	"time"

	"github.com/mholt/acmez/v3"
)

// tlsConfig is the TLS of signal's own listener.
func tlsConfig(get func(*tls.ClientHelloInfo) (*tls.Certificate, error)) *tls.Config {
	return &tls.Config{
		GetCertificate: get,
		MinVersion:     tls.VersionTLS12,
		// No h2: WebSockets here are HTTP/1.1 upgrades. acme-tls/1: an
		// ACME certificate source answers the CA's TLS-ALPN-01 challenge
		// in GetCertificate, when this is the port the CA reaches.
		NextProtos: []string{"http/1.1", acmez.ACMETLS1Protocol},
	}
}

// sniffListener lets one port speak TLS and, for health probes, plain
// HTTP: a connection whose first byte starts a TLS handshake record (0x16)
// gets TLS, any other is handed over as it is.
type sniffListener struct {
	net.Listener
	conf *tls.Config
	// hold admits a connection before it is sniffed, or closes it;
	// release gives its place back once sniffing is over.
	hold    func(net.Conn) bool
	release func(net.Conn)
	conns   chan net.Conn
	errs    chan error
	done    chan struct{}
	once    sync.Once
}

// sniffTimeout bounds how long a silent client holds a sniffing goroutine.
const sniffTimeout = 10 * time.Second

func newSniffListener(ln net.Listener, conf *tls.Config, hold func(net.Conn) bool, release func(net.Conn)) *sniffListener {
	l := &sniffListener{Listener: ln, conf: conf, hold: hold, release: release, conns: make(chan net.Conn), errs: make(chan error), done: make(chan struct{})}
	go l.acceptLoop()
	return l
}

func (l *sniffListener) acceptLoop() {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			select {
			case l.errs <- err:
			case <-l.done:
				return
			}
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		if l.hold(c) {
			go l.sniff(c)
		}
	}
}

func (l *sniffListener) sniff(c net.Conn) {
	var first [1]byte
	c.SetReadDeadline(time.Now().Add(sniffTimeout))
	_, err := io.ReadFull(c, first[:])
	// Given back before the hand-over, so that net/http's count of the
	// connection never finds the source holding it twice.
	l.release(c)
	if err != nil {
		c.Close()
		return
	}
	c.SetReadDeadline(time.Time{})
	var out net.Conn = &peekedConn{Conn: c, first: first[0], has: true}
	if first[0] == 0x16 {
		out = tls.Server(out, l.conf)
	}
	select {
	case l.conns <- out:
	case <-l.done:
		c.Close()
	}
}

func (l *sniffListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case err := <-l.errs:
		return nil, err
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *sniffListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return l.Listener.Close()
}

// peekedConn gives back the byte the sniffer read.
type peekedConn struct {
	net.Conn
	first byte
	has   bool
}

func (c *peekedConn) Read(p []byte) (int, error) {
	if c.has && len(p) > 0 {
		p[0], c.has = c.first, false
		return 1, nil
	}
	return c.Conn.Read(p)
}
