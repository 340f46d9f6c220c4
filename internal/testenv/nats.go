package testenv

import (
	"strconv"
	"testing"
	"time"

	natsserver "github.com/nats-io/nats-server/v2/server"
)

// NATS is a real nats-server, from its Go module, on a free loopback port
// with token authentication. Stop and Start keep the port, so clients
// can reconnect to the same URL.
type NATS struct {
	t     testing.TB
	Port  int
	Token string
	srv   *natsserver.Server
}

// StartNATS runs a nats-server until the test ends.
func StartNATS(t testing.TB, token string) *NATS {
	t.Helper()
	n := &NATS{t: t, Port: FreePort(t), Token: token}
	n.Start()
	t.Cleanup(n.Stop)
	return n
}

// URL is the server's client URL.
func (n *NATS) URL() string { return "nats://127.0.0.1:" + strconv.Itoa(n.Port) }

// Start starts the server again after Stop.
func (n *NATS) Start() {
	n.t.Helper()
	s, err := natsserver.NewServer(&natsserver.Options{
		Host: "127.0.0.1", Port: n.Port, Authorization: n.Token, NoLog: true, NoSigs: true,
	})
	if err != nil {
		n.t.Fatal(err)
	}
	go s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		n.t.Fatal("nats-server did not start")
	}
	n.srv = s
}

// Stop shuts the server down; its clients see the connection drop.
func (n *NATS) Stop() {
	if n.srv != nil {
		n.srv.Shutdown()
		n.srv.WaitForShutdown()
		n.srv = nil
	}
}
