package main

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"syscall"
)

// listenTCP opens the listener the config key (e.g. "admin.listen") names.
// The parts listen at start-up, so that a taken port stops icebox with
// what to do about it rather than failing later; off says how to turn the
// part off, when it can be ("" if not).
func listenTCP(key, addr, off string) (net.Listener, error) {
	ln, err := net.Listen("tcp", addr)
	switch {
	case errors.Is(err, syscall.EADDRINUSE):
		_, port, _ := net.SplitHostPort(addr)
		return nil, fmt.Errorf("%s: tcp port %s is already in use (another icebox or web server may be running; `ss -tlnp 'sport = :%s'` shows which process; or set %s to another address%s): %w",
			key, port, port, key, off, err)
	case err != nil:
		return nil, fmt.Errorf("%s: listen %s: %w", key, addr, err)
	}
	return ln, nil
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
