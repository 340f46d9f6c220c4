package signal

import (
	"math/bits"
	"sync"
	"sync/atomic"
)

// frameBuf is one frame on its way to clients. A forwarded frame is copied
// once into a pooled frameBuf, which every receiver's queue and the room's
// backlog then share; each holds a reference, and the last to let go puts
// it back in its pool. The bytes must not change while it is shared.
type frameBuf struct {
	b     []byte
	refs  atomic.Int32
	class int8 // index in framePools; -1: not pooled
}

// Pooled frame buffers come in powers of two from 256 bytes to 64 KiB (the
// default max_frame_size), so that a candidate does not pin an SDP-sized
// buffer; larger frames get a buffer of their own.
const (
	minFrameShift   = 8
	maxFrameShift   = 16
	numFrameClasses = maxFrameShift - minFrameShift + 1
)

var framePools [numFrameClasses]sync.Pool // *frameBuf

// frameClass is the pool for a frame of n bytes, or -1.
func frameClass(n int) int {
	if n <= 1<<minFrameShift {
		return 0
	}
	c := bits.Len(uint(n-1)) - minFrameShift
	if c >= numFrameClasses {
		return -1
	}
	return c
}

// newFrameBuf returns a copy of msg, holding one reference for the caller.
func newFrameBuf(msg []byte) *frameBuf {
	c := frameClass(len(msg))
	if c < 0 {
		return ownFrame(append([]byte(nil), msg...))
	}
	fb, _ := framePools[c].Get().(*frameBuf)
	if fb == nil {
		fb = &frameBuf{b: make([]byte, 0, 1<<(minFrameShift+c)), class: int8(c)}
	}
	fb.b = append(fb.b[:0], msg...)
	fb.refs.Store(1)
	return fb
}

// ownFrame wraps b, which is not pooled, holding one reference for the
// caller; a frame built once and never released (a WsError) can be shared
// for ever.
func ownFrame(b []byte) *frameBuf {
	fb := &frameBuf{b: b, class: -1}
	fb.refs.Store(1)
	return fb
}

func (fb *frameBuf) hold() { fb.refs.Add(1) }

// release drops a reference; fb must not be used after.
func (fb *frameBuf) release() {
	switch n := fb.refs.Add(-1); {
	case n < 0:
		// Another connection may already be sending the buffer's next
		// frame: better to stop than to leak one pairing's SDP to another.
		panic("signal: frame buffer released once too often")
	case n == 0 && fb.class >= 0:
		framePools[fb.class].Put(fb)
	}
}
