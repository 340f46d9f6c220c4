// Package stuntest starts icebox's own STUN responder on loopback for the
// tests of the packages that ask one (stunclient, publicip).
package stuntest

import (
	"testing"

	"icebox/stunsrv"
)

// Responder starts a UDP-only responder on 127.0.0.1 and returns its
// address; it closes when the test ends.
func Responder(t testing.TB) string {
	t.Helper()
	cfg := stunsrv.DefaultConfig()
	cfg.Listen = []string{"127.0.0.1:0"}
	cfg.TCP = false
	srv, err := stunsrv.New(cfg, stunsrv.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	return srv.PacketConns()[0].LocalAddr().String()
}
