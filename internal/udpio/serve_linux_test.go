package udpio

import (
	"encoding/binary"
	"net"
	"testing"
	"time"
)

// TestServeWakesForADatagramAfterAShortBatch: Serve waits without a
// further recvmmsg once a batch comes short. Each datagram here is sent
// from inside the handler of the one before, so it is queued on the socket
// after the recvmmsg that brought the short batch and before Serve waits:
// if that wait missed it, nothing else would ever arrive and the read
// deadline would end Serve with an error.
func TestServeWakesForADatagramAfterAShortBatch(t *testing.T) {
	rx, tx, r := batchReaderPair(t, 4)
	const total = 2000
	var got, handled uint32
	send := func(seq uint32) {
		if _, err := tx.Write(binary.BigEndian.AppendUint32(nil, seq)); err != nil {
			t.Fatal(err)
		}
	}
	h := func() bool {
		handled++
		for {
			slot, n, _, ok := r.Next()
			if !ok {
				break
			}
			if seq := binary.BigEndian.Uint32(slot[4 : 4+n]); n != 4 || seq != got {
				t.Fatalf("datagram %d: got %d bytes, sequence %d", got, n, seq)
			}
			got++
		}
		if got == total {
			return false
		}
		send(got)
		return true
	}
	// A deadline, not a sleep: it only ends a Serve that would hang.
	rx.SetReadDeadline(time.Now().Add(time.Minute))
	send(0)
	if err := r.Serve(h, nil); err != nil {
		t.Fatalf("after %d of %d datagrams: %v", got, total, err)
	}
	if handled != total {
		t.Errorf("handler called %d times for %d one-datagram batches", handled, total)
	}
	// Reading until EAGAIN before each wait made one empty read per
	// datagram; only a stale wake-up may cost one now.
	if r.empty >= total/2 {
		t.Errorf("%d empty reads for %d datagrams", r.empty, total)
	}
	t.Logf("%d empty reads for %d datagrams", r.empty, total)
}

// TestServeHandsBackWhereTheHandlerStopped: a handler that stops leaves
// the rest of the batch for Next, and the next Serve goes on from there.
func TestServeHandsBackWhereTheHandlerStopped(t *testing.T) {
	rx, tx, r := batchReaderPair(t, 0)
	const total = 20
	for i := range total {
		tx.Write([]byte{byte(i)})
	}
	var seen []byte
	h := func() bool {
		for {
			slot, n, _, ok := r.Next()
			if !ok {
				return true
			}
			seen = append(seen, slot[:n]...)
			if slot[0]%3 == 2 {
				return false // every third datagram is the caller's
			}
		}
	}
	rx.SetReadDeadline(time.Now().Add(time.Minute))
	for len(seen) < total {
		if err := r.Serve(h, nil); err != nil {
			t.Fatalf("after %d datagrams: %v", len(seen), err)
		}
		if last := seen[len(seen)-1]; last%3 != 2 {
			t.Fatalf("Serve returned after datagram %d, not one the handler stopped at", last)
		}
		if len(seen) == total-total%3 {
			break // the last two are taken but the handler never stops after them
		}
	}
	for i, b := range seen {
		if int(b) != i {
			t.Fatalf("datagrams in the order %v", seen)
		}
	}
}

// batchReaderPair returns a loopback socket, a Reader of it (8
// datagrams of up to 64 bytes, headroom bytes into their slots) and a
// socket connected to it.
func batchReaderPair(t *testing.T, headroom int) (rx, tx *net.UDPConn, r *Reader) {
	rx, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rx.Close() })
	tx, err = net.DialUDP("udp4", nil, rx.LocalAddr().(*net.UDPAddr))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tx.Close() })
	rc, err := rx.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	if r, err = NewReader(rc, headroom, 64, 0, 8); err != nil {
		t.Fatal(err)
	}
	return rx, tx, r
}

// TestServeUnderAFloodEndsOnCloseAndDeadline: with every batch full (the
// handler sends twice a batch for each one it reads), Serve never has to
// wait, yet a Close or a passed read deadline must still end it, or a
// flood could hold shutdown and reload forever.
func TestServeUnderAFloodEndsOnCloseAndDeadline(t *testing.T) {
	for _, end := range []string{"close", "deadline"} {
		t.Run(end, func(t *testing.T) {
			rx, tx, r := batchReaderPair(t, 0)
			batches := make(chan struct{}, 1)
			h := func() bool {
				for {
					if _, _, _, ok := r.Next(); !ok {
						break
					}
				}
				for range 16 {
					tx.Write([]byte{1})
				}
				select {
				case batches <- struct{}{}:
				default:
				}
				return true
			}
			for range 16 {
				tx.Write([]byte{1})
			}
			served := make(chan error, 1)
			go func() { served <- r.Serve(h, nil) }()
			<-batches // the flood is on
			if end == "close" {
				rx.Close()
			} else {
				rx.SetReadDeadline(time.Now())
			}
			select {
			case err := <-served:
				if err == nil {
					t.Fatal("Serve returned no error")
				}
			case <-time.After(time.Minute): // only a hang gets here
				t.Fatalf("Serve still running a minute after the %s", end)
			}
		})
	}
}
