package main

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"icebox/internal/stunclient"
)

// testConfig is the default config on loopback ports the kernel picks,
// with its own state directory and relays on 127.0.0.1.
func testConfig(t *testing.T) Config {
	cfg := DefaultConfig()
	cfg.STUN.Listen = []string{"127.0.0.1:0"}
	cfg.Admin.Listen = "127.0.0.1:0"
	cfg.Signal.Listen = "127.0.0.1:0"
	cfg.StateDir = t.TempDir()
	cfg.PublicIP = "127.0.0.1"
	cfg.TURN.Relay.Address = "127.0.0.1"
	return cfg
}

// TestSystemdNotifyProtocol runs serve under a fake systemd: a unixgram
// socket in NOTIFY_SOCKET, a watchdog of 200 ms. icebox must say READY,
// ping the watchdog, and say STOPPING when stopped.
func TestSystemdNotifyProtocol(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "notify")
	l, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	t.Setenv("NOTIFY_SOCKET", sock)
	t.Setenv("WATCHDOG_USEC", "200000")

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- serve(ctx, testConfig(t), slog.New(slog.DiscardHandler), reloader{}) }()

	l.SetReadDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, 256)
	next := func() string {
		n, err := l.Read(buf)
		if err != nil {
			t.Fatalf("waiting for systemd notification: %v", err)
		}
		return string(buf[:n])
	}
	if got := next(); got != "READY=1" {
		t.Fatalf("first notification %q, want READY=1", got)
	}
	for range 2 {
		if got := next(); got != "WATCHDOG=1" {
			t.Fatalf("notification %q, want WATCHDOG=1", got)
		}
	}
	cancel()
	for {
		if got := next(); got == "STOPPING=1" {
			break
		} else if got != "WATCHDOG=1" {
			t.Fatalf("notification %q, want STOPPING=1", got)
		}
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func TestAdminEndpoints(t *testing.T) {
	d, _ := startDaemon(t, testConfig(t))
	base := "http://" + d.admin.addr()
	if _, err := stunclient.MappedAddress(t.Context(), d.stun.PacketConns()[0].LocalAddr().String()); err != nil {
		t.Fatal(err)
	}
	// The Binding above is the only one: /readyz asks the read loops, it
	// sends none.
	for _, tc := range []struct{ path, want string }{
		{"/metrics", `icebox_stun_requests_total{family="ipv4",outcome="answered",transport="udp"} 1` + "\n"},
		{"/healthz", "ok"},
		{"/readyz", "ready"},
		{"/metrics", `icebox_stun_requests_total{family="ipv4",outcome="answered",transport="udp"} 1` + "\n"},
		{"/debug/pprof/", "goroutine"},
	} {
		path, want := tc.path, tc.want
		resp, err := http.Get(base + path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || !strings.Contains(string(body), want) {
			t.Errorf("GET %s: %d, body lacks %q:\n%.500s", path, resp.StatusCode, want, body)
		}
	}
}

func TestAdminIsLoopbackByDefault(t *testing.T) {
	host, _, _ := net.SplitHostPort(DefaultConfig().Admin.Listen)
	if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
		t.Errorf("admin.listen defaults to %q, want a loopback address", DefaultConfig().Admin.Listen)
	}
}
