package main

import (
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sync/atomic"
	"syscall"
	"testing"
)

// failingOnce is a real listener whose next Accept fails once with an
// error net/http does not retry (the kernel's ENOBUFS): no loopback socket
// can be made to return it on demand.
type failingOnce struct {
	net.Listener
	failed atomic.Bool
}

func (l *failingOnce) Accept() (net.Conn, error) {
	if !l.failed.Swap(true) {
		return nil, &net.OpError{Op: "accept", Net: "tcp", Err: os.NewSyscallError("accept4", syscall.ENOBUFS)}
	}
	return l.Listener.Accept()
}

// TestListenerKeepsAcceptingAfterAnError: an accept error that net/http's
// Serve would end on is logged and waited out, and the part keeps
// answering on the same port.
func TestListenerKeepsAcceptingAfterAnError(t *testing.T) {
	ln, err := listenTCP("signal.listen", "127.0.0.1:0", "", slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	ka := ln.(*keepAccepting)
	ka.Listener = &failingOnce{Listener: ka.Listener}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ok") })}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	resp, err := http.Get("http://" + ln.Addr().String() + "/")
	if err != nil {
		t.Fatalf("after an accept error: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(body) != "ok" {
		t.Fatalf("after an accept error: %q", body)
	}
	if !ka.Listener.(*failingOnce).failed.Load() {
		t.Fatal("the injected error was never returned")
	}
	srv.Close()
	if err := <-served; !errors.Is(err, http.ErrServerClosed) {
		t.Fatalf("Serve: %v, want ErrServerClosed", err)
	}
}
