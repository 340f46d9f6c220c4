package signal

import (
	"bytes"
	"testing"
)

func TestFrameClass(t *testing.T) {
	for _, tc := range []struct{ n, class, size int }{
		{0, 0, 256}, {1, 0, 256}, {256, 0, 256}, {257, 1, 512}, {4096, 4, 4096},
		{4097, 5, 8192}, {64 << 10, 8, 64 << 10}, {64<<10 + 1, -1, 0},
	} {
		c := frameClass(tc.n)
		if c != tc.class {
			t.Errorf("frameClass(%d) = %d, want %d", tc.n, c, tc.class)
			continue
		}
		fb := newFrameBuf(make([]byte, tc.n))
		if len(fb.b) != tc.n || c >= 0 && cap(fb.b) != tc.size {
			t.Errorf("newFrameBuf(%d bytes): len %d cap %d, want cap %d", tc.n, len(fb.b), cap(fb.b), tc.size)
		}
		fb.release()
	}
}

// TestFrameBufShared: a frame stays intact until its last holder lets go,
// and a holder letting go twice is caught rather than corrupting the next
// frame to use the buffer.
func TestFrameBufShared(t *testing.T) {
	msg := []byte(`{"id":"WsSDPOffer","data":"x"}`)
	fb := newFrameBuf(msg)
	msg[0] = 'X' // the frame is a copy
	fb.hold()    // a receiver's queue
	fb.hold()    // a backlog
	fb.release() // the forwarder
	fb.release() // the queue, written
	if !bytes.Equal(fb.b, []byte(`{"id":"WsSDPOffer","data":"x"}`)) {
		t.Fatalf("shared frame became %q", fb.b)
	}
	fb.release() // the backlog: back to the pool
	defer func() {
		if recover() == nil {
			t.Error("releasing a frame once too often did not panic")
		}
	}()
	fb.release()
}
