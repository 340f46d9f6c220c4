package main

import (
	"bufio"
	"encoding/binary"
	"errors"
	"net"
	"os"
	"syscall"
	"time"

	"golang.org/x/net/ipv4"
)

// ops makes one flow's requests and recognises its answers. Every request
// carries the number of the window it was sent in (its epoch), so that an
// answer can be told apart from one to a window already counted as lost.
type ops interface {
	// appendRequest appends one request of window epoch to b.
	appendRequest(b []byte, epoch uint32) []byte
	// epochOf is the window of the request that answer answers; false:
	// not an answer of this flow.
	epochOf(answer []byte) (epoch uint32, ok bool)
}

// transport carries a flow's requests and answers in batches.
type transport interface {
	// send sends n requests of window epoch at once.
	send(o ops, n int, epoch uint32) error
	// recv waits until deadline for answers and passes every answer
	// that one read brings to each; an error only when none came.
	recv(deadline time.Time, each func(answer []byte)) error
}

// window keeps n operations in flight over t until stop and returns the
// operations answered, lost and late.
//
// Every answer starts one new operation, all that a read brings in one
// write. A window that stays silent for timeout is counted lost and sent
// afresh as the next window. An answer to a window already counted lost
// arrives late: nothing was dropped, a process (the server, or stunload
// itself on a busy machine) stalled longer than timeout. It counts as done
// and late, not lost, and starts nothing (the window was refilled). After
// stop, answers still owed to lost windows are awaited for timeout more.
func window(stop time.Time, n int, timeout time.Duration, t transport, o ops) (done, lost, late int64) {
	epoch := uint32(1)
	answered := 0 // in the current window, by the read at hand
	count := func(b []byte) {
		e, ok := o.epochOf(b)
		switch {
		case !ok:
		case e == epoch:
			answered++
		case lost > 0:
			done++
			late++
			lost--
		}
	}
	// send sends k new requests and any a failed send kept back. An ICMP
	// error for an earlier datagram may surface on a send as well as on a
	// read; that send sent nothing, and its requests go out with the next
	// one, so the window stays full. A window sent afresh owes nothing.
	owed := 0
	send := func(k int) error {
		k += owed
		if k == 0 {
			return nil // a read brought only late answers
		}
		err := t.send(o, k, epoch)
		owed = 0
		if transient(err) {
			owed, err = k, nil
		}
		return err
	}
	err := send(n)
	for err == nil && time.Now().Before(stop) {
		answered = 0
		rerr := t.recv(time.Now().Add(timeout), count)
		switch {
		case rerr == nil:
			done += int64(answered)
			err = send(answered)
		case errors.Is(rerr, os.ErrDeadlineExceeded):
			lost += int64(n - owed) // what a failed send kept back was never sent
			epoch++
			owed = 0
			err = send(n)
		case transient(rerr):
			// An ICMP error for an earlier datagram (the server's port
			// closed): the operations in flight time out or get answers.
		default:
			err = rerr
		}
	}
	if err != nil {
		// The connection is gone: what it had in flight never comes.
		return done, lost + int64(n), late
	}
	deadline := time.Now().Add(timeout)
	for lost > 0 {
		if rerr := t.recv(deadline, count); rerr != nil && !transient(rerr) {
			break
		}
	}
	return done, lost, late
}

// transient reports whether a read error is about one earlier datagram
// (ECONNREFUSED from an ICMP port unreachable on a connected UDP socket,
// say because the server is gone) rather than the end of the connection.
func transient(err error) bool { return errors.Is(err, syscall.ECONNREFUSED) }

// datagrams is a transport over a connected UDP socket: sendmmsg and
// recvmmsg, so that the load generator is not what limits the rate.
type datagrams struct {
	conn *net.UDPConn
	pc   *ipv4.PacketConn
	in   []ipv4.Message
	out  []ipv4.Message
	wbuf []byte
	ends []int
}

func newDatagrams(conn *net.UDPConn, window int) *datagrams {
	return &datagrams{conn: conn, pc: ipv4.NewPacketConn(conn), in: batch(window), out: sendBatch(window)}
}

func (d *datagrams) send(o ops, n int, epoch uint32) error {
	d.wbuf, d.ends = d.wbuf[:0], d.ends[:0]
	for range n {
		d.wbuf = o.appendRequest(d.wbuf, epoch)
		d.ends = append(d.ends, len(d.wbuf))
	}
	if len(d.out) < n {
		d.out = sendBatch(n)
	}
	start := 0
	for i, end := range d.ends {
		d.out[i].Buffers[0] = d.wbuf[start:end]
		start = end
	}
	return writeAll(d.pc, d.out[:n])
}

func (d *datagrams) recv(deadline time.Time, each func([]byte)) error {
	d.conn.SetReadDeadline(deadline)
	n, err := d.pc.ReadBatch(d.in, 0)
	if err != nil {
		return err
	}
	for _, m := range d.in[:n] {
		if m.N >= 4 {
			each(m.Buffers[0][:m.N])
		}
	}
	return nil
}

// frames is a transport over a TCP connection: all requests of one send in
// one write, and every frame that one read brings handed on.
type frames struct {
	conn net.Conn
	r    *bufio.Reader
	wbuf []byte
}

func (f *frames) send(o ops, n int, epoch uint32) error {
	f.wbuf = f.wbuf[:0]
	for range n {
		f.wbuf = o.appendRequest(f.wbuf, epoch)
	}
	_, err := f.conn.Write(f.wbuf)
	return err
}

func (f *frames) recv(deadline time.Time, each func([]byte)) error {
	f.conn.SetReadDeadline(deadline)
	b, err := peekFrame(f.r)
	if err != nil {
		return err
	}
	for {
		each(b)
		f.r.Discard(len(b))
		if b = bufferedFrame(f.r); b == nil {
			return nil
		}
	}
}

// newStreamReader reads frames from a stream; peekFrame needs room for the
// largest (64 KiB of ChannelData or STUN, plus header).
func newStreamReader(c net.Conn) *bufio.Reader { return bufio.NewReaderSize(c, 68<<10) }

// peekFrame waits for the next whole STUN or ChannelData frame in r and
// returns it without consuming it, so that a read deadline in mid-frame
// leaves the stream in step.
func peekFrame(r *bufio.Reader) ([]byte, error) {
	h, err := r.Peek(4)
	if err != nil {
		return nil, err
	}
	return r.Peek(frameSize(h))
}

// bufferedFrame is the next frame if r holds all of it, else nil.
func bufferedFrame(r *bufio.Reader) []byte {
	if r.Buffered() < 4 {
		return nil
	}
	h, _ := r.Peek(4)
	size := frameSize(h)
	if r.Buffered() < size {
		return nil
	}
	b, _ := r.Peek(size)
	return b
}

// frameSize is the size on a stream of the frame that starts with h: a
// STUN message, or ChannelData padded to four bytes (RFC 8656 §11.5).
func frameSize(h []byte) int {
	size := int(binary.BigEndian.Uint16(h[2:4]))
	if h[0]>>6 == 0 {
		return 20 + size
	}
	return 4 + (size+3)&^3
}
