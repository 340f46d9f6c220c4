package stunclient

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"syscall"
	"testing"
	"time"

	"github.com/pion/stun/v3"

	"icebox/internal/stuntest"
)

// TestMappedAddressFromIceboxResponder: icebox's own responder on
// loopback tells the client the address its packets came from.
func TestMappedAddressFromIceboxResponder(t *testing.T) {
	got, err := MappedAddress(t.Context(), stuntest.Responder(t))
	if err != nil {
		t.Fatal(err)
	}
	if got.Addr() != netip.MustParseAddr("127.0.0.1") || got.Port() == 0 {
		t.Errorf("mapped address %v, want 127.0.0.1 and our port", got)
	}
}

// TestMappedAddressNobodyListens: a closed port is reported as refused,
// not as a timeout.
func TestMappedAddressNobodyListens(t *testing.T) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := pc.LocalAddr().String()
	pc.Close()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	if _, err := MappedAddress(ctx, addr); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("closed port: %v, want ECONNREFUSED", err)
	}
}

// TestMappedAddressSkipsOthersAndReadsRefusal: a server that first sends
// an answer to another transaction and then a Binding error response gets
// the error reported, with its code; and one that never answers times out
// at the context's deadline.
func TestMappedAddressSkipsOthersAndReadsRefusal(t *testing.T) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	// One answer is enough: the client retransmits until it has its own.
	go func() {
		buf := make([]byte, 1500)
		n, from, err := pc.ReadFrom(buf)
		req := &stun.Message{Raw: buf[:n]}
		if err != nil || req.Decode() != nil {
			return
		}
		other := stun.MustBuild(stun.TransactionID, stun.BindingSuccess,
			&stun.XORMappedAddress{IP: net.IPv4(203, 0, 113, 9), Port: 9})
		pc.WriteTo(other.Raw, from)
		refusal := stun.MustBuild(stun.NewTransactionIDSetter(req.TransactionID), stun.BindingError, stun.CodeBadRequest)
		pc.WriteTo(refusal.Raw, from)
	}()
	_, err = MappedAddress(t.Context(), pc.LocalAddr().String())
	var refused *RefusedError
	if !errors.As(err, &refused) || refused.Code != 400 {
		t.Errorf("error response: %v, want a RefusedError with code 400", err)
	}

	silent, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { silent.Close() })
	ctx, cancel := context.WithTimeout(t.Context(), 600*time.Millisecond)
	defer cancel()
	_, err = MappedAddress(ctx, silent.LocalAddr().String())
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Errorf("silent server: %v, want a timeout", err)
	}
}
