package stunsrv

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"testing"
	"time"
)

// rawStreamPair is a loopback TCP connection: a rawStream on the accepted
// side, a plain net.Conn on the dialling side.
func rawStreamPair(t *testing.T) (*rawStream, net.Conn, net.Conn) {
	t.Helper()
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	other, err := net.Dial("tcp4", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { other.Close() })
	c, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	s := newRawStream(c)
	if s == nil {
		t.Fatal("no rawStream on a TCP connection")
	}
	return s, c, other
}

// TestRawStreamWritesWholeFramesFromManyWriters: writes larger than the
// socket buffer wait for room and go out whole, and frames from writers
// at once never interleave (pion's answers and the data plane's frames
// share a client's stream).
func TestRawStreamWritesWholeFramesFromManyWriters(t *testing.T) {
	s, _, other := rawStreamPair(t)
	const writers, frames, size = 4, 4, 1 << 20 // each write more than the socket holds
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			frame := bytes.Repeat([]byte{byte(w)}, size)
			for range frames {
				if n, err := s.Write(frame); n != size || err != nil {
					t.Errorf("wrote %d of %d: %v", n, size, err)
					return
				}
			}
		})
	}
	buf := make([]byte, size)
	count := make([]int, writers)
	other.SetReadDeadline(time.Now().Add(time.Minute))
	for range writers * frames {
		if _, err := io.ReadFull(other, buf); err != nil {
			t.Fatal(err)
		}
		w := buf[0]
		if int(w) >= writers || !bytes.Equal(buf, bytes.Repeat([]byte{w}, size)) {
			t.Fatalf("frame mixes writers: starts %d", w)
		}
		count[w]++
	}
	wg.Wait()
	for w, n := range count {
		if n != frames {
			t.Errorf("writer %d: %d frames arrived, want %d", w, n, frames)
		}
	}
}

// TestRawStreamReads: bytes in order, the read deadline as a timeout, and
// io.EOF once the other side closes.
func TestRawStreamReads(t *testing.T) {
	s, c, other := rawStreamPair(t)
	go func() {
		for i := range uint32(10000) {
			other.Write(binary.BigEndian.AppendUint32(nil, i))
		}
	}()
	buf := make([]byte, 4)
	c.SetReadDeadline(time.Now().Add(time.Minute))
	for i := range uint32(10000) {
		if _, err := io.ReadFull(s, buf); err != nil {
			t.Fatal(err)
		}
		if got := binary.BigEndian.Uint32(buf); got != i {
			t.Fatalf("read %d, want %d", got, i)
		}
	}
	c.SetReadDeadline(time.Now().Add(10 * time.Millisecond))
	if _, err := s.Read(buf); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read past the deadline: %v, want a timeout", err)
	}
	c.SetReadDeadline(time.Now().Add(time.Minute))
	other.Close()
	if n, err := s.Read(buf); n != 0 || err != io.EOF {
		t.Fatalf("read after close: %d, %v, want io.EOF", n, err)
	}
}
