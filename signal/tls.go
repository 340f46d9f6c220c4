package signal

import (
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"sync"
	"time"
)

// certReloader serves the certificate from the configured files and
// re-reads them when they change, so that a renewal (certbot, ACME
// clients) needs no restart. A pair that fails to load, e.g. the key
// written but not yet the certificate, keeps the old one in service.
type certReloader struct {
	log   *slog.Logger
	every time.Duration // how often the files are looked at

	mu       sync.Mutex
	certFile string
	keyFile  string
	cert     *tls.Certificate
	stamp    string // size and mtime of both files when cert was loaded
	checked  time.Time
}

func (r *certReloader) setFiles(cert, key string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if cert != r.certFile || key != r.keyFile {
		r.certFile, r.keyFile = cert, key
		r.stamp, r.checked = "", time.Time{}
	}
}

func (r *certReloader) config() *tls.Config {
	return &tls.Config{
		GetCertificate: r.get,
		MinVersion:     tls.VersionTLS12,
		// No h2: WebSockets here are HTTP/1.1 upgrades.
		NextProtos: []string{"http/1.1"},
	}
}

func (r *certReloader) get(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if now := time.Now(); r.checked.IsZero() || now.Sub(r.checked) >= r.every {
		r.checked = now
		if err := r.reloadLocked(); err != nil {
			if r.cert == nil {
				return nil, err
			}
			r.log.Warn("signal: keeping the current TLS certificate", "err", err)
		}
	}
	return r.cert, nil
}

func (r *certReloader) reloadLocked() error {
	stamp, err := fileStamp(r.certFile, r.keyFile)
	if err != nil {
		return fmt.Errorf("TLS certificate: %w", err)
	}
	if stamp == r.stamp {
		return nil
	}
	cert, err := tls.LoadX509KeyPair(r.certFile, r.keyFile)
	if err != nil {
		return fmt.Errorf("TLS certificate: %w", err)
	}
	r.cert, r.stamp = &cert, stamp
	r.log.Info("signal: TLS certificate loaded", "cert", r.certFile)
	return nil
}

func fileStamp(names ...string) (string, error) {
	var stamp string
	for _, n := range names {
		fi, err := os.Stat(n)
		if err != nil {
			return "", err
		}
		stamp += fmt.Sprintf("%d/%d;", fi.Size(), fi.ModTime().UnixNano())
	}
	return stamp, nil
}

// sniffListener lets one port speak TLS and, for health probes, plain
// HTTP: a connection whose first byte starts a TLS handshake record (0x16)
// gets TLS, any other is handed over as it is.
type sniffListener struct {
	net.Listener
	conf  *tls.Config
	conns chan net.Conn
	errs  chan error
	done  chan struct{}
	once  sync.Once
}

// sniffTimeout bounds how long a silent client holds a sniffing goroutine.
const sniffTimeout = 10 * time.Second

func newSniffListener(ln net.Listener, conf *tls.Config) *sniffListener {
	l := &sniffListener{Listener: ln, conf: conf, conns: make(chan net.Conn), errs: make(chan error), done: make(chan struct{})}
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
		go l.sniff(c)
	}
}

func (l *sniffListener) sniff(c net.Conn) {
	var first [1]byte
	c.SetReadDeadline(time.Now().Add(sniffTimeout))
	if _, err := io.ReadFull(c, first[:]); err != nil {
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
