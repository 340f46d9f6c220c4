package main

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"syscall"
	"time"

	"icebox/internal/ipclass"
)

// listenTCP opens the listener the config key (e.g. "admin.listen") names.
// The parts listen at start-up, so that a taken port stops icebox with
// what to do about it rather than failing later; off says how to turn the
// part off, when it can be ("" if not).
// The listener keeps accepting through errors (keepAccepting).
func listenTCP(key, addr, off string, log *slog.Logger) (net.Listener, error) {
	ln, err := net.Listen(ipclass.ListenNetwork("tcp", addr), addr)
	switch {
	case errors.Is(err, syscall.EADDRINUSE):
		_, port, _ := net.SplitHostPort(addr)
		return nil, fmt.Errorf("%s: tcp port %s is already in use (another icebox or web server may be running; `ss -tlnp 'sport = :%s'` shows which process; or set %s to another address%s): %w",
			key, port, port, key, off, err)
	case err != nil:
		return nil, fmt.Errorf("%s: listen %s: %w", key, addr, err)
	}
	return &keepAccepting{Listener: ln, key: key, log: log, closed: make(chan struct{})}, nil
}

// keepAccepting retries every accept error but the listener's close,
// after a pause that doubles up to a second. net/http's Serve retries
// only the errors it deems temporary and returns on any other (ENOBUFS,
// ENOMEM, EPERM from a firewall hook), which would leave that part of
// icebox deaf while the process looks well.
type keepAccepting struct {
	net.Listener
	key    string
	log    *slog.Logger
	closed chan struct{} // closed by Close, which ends a pause at once
	once   sync.Once
}

func (l *keepAccepting) Accept() (net.Conn, error) {
	var delay time.Duration
	for {
		c, err := l.Listener.Accept()
		if err == nil || errors.Is(err, net.ErrClosed) {
			return c, err
		}
		delay = min(max(2*delay, 5*time.Millisecond), time.Second)
		l.log.Warn(l.key+": accept failed; retrying", "err", err, "in", delay)
		select {
		case <-time.After(delay): // a pause: the error may last
		case <-l.closed:
			return nil, net.ErrClosed
		}
	}
}

func (l *keepAccepting) Close() error {
	l.once.Do(func() { close(l.closed) })
	return l.Listener.Close()
}

// serveHTTP runs serve on a goroutine of its own until the server is shut
// down, logs any other end as "<what> failed", and closes done (unless
// nil) when serve returns.
func serveHTTP(log *slog.Logger, what string, done chan struct{}, serve func() error) {
	go func() {
		if done != nil {
			defer close(done)
		}
		if err := serve(); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error(what+" failed", "err", err)
		}
	}()
}
