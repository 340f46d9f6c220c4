package stunsrv

import (
	"errors"
	"fmt"
	"net"
	"slices"
	"sync/atomic"
	"time"
)

// A flood can drown a probe sent over loopback, and a probe that gets
// through proves little about the other sockets. So liveness comes from the
// read loops themselves: each records when it last left its read call to
// work on what it got, and clears that when it comes back for more. A loop
// is alive while it waits in its read, or while its current piece of work
// is younger than stuckAfter; it is dead once it gave up reading.
const stuckAfter = 10 * time.Second

// readErrorBackoff bounds the pause after a failed read. A socket read
// fails for reasons that pass (ENOMEM, ENOBUFS, an ICMP error queued on the
// socket); stopping the loop would end every allocation on it for good.
const (
	minReadBackoff = time.Millisecond
	maxReadBackoff = 100 * time.Millisecond
)

// loopState is one read loop's progress.
type loopState struct {
	clock func() time.Duration // time since the server started, monotonic
	// busySince is clock()+1 when the loop last took a packet to work on,
	// 0 while it waits in its read.
	busySince atomic.Int64
	stopped   atomic.Bool // the loop returned a terminal error
	backoff   time.Duration
}

func (l *loopState) working() { l.busySince.Store(int64(l.clock()) + 1) }
func (l *loopState) waiting() { l.busySince.Store(0) }

// check reports a loop that stopped or has been working on one thing for
// longer than stuckAfter.
func (l *loopState) check(name string) error {
	if l.stopped.Load() {
		return fmt.Errorf("%s: reader stopped", name)
	}
	if since := l.busySince.Load(); since != 0 {
		if busy := l.clock() - time.Duration(since-1); busy > stuckAfter {
			return fmt.Errorf("%s: reader busy with one packet for %v", name, busy.Round(time.Second))
		}
	}
	return nil
}

// readFailed decides what a failed read means: a closed socket ends the
// loop; anything else is counted, waited out briefly and retried.
func (l *loopState) readFailed(err error, st *stats) (fatal bool) {
	if errors.Is(err, net.ErrClosed) {
		l.stopped.Store(true)
		return true
	}
	st.readErrors.Inc()
	l.backoff = min(max(2*l.backoff, minReadBackoff), maxReadBackoff)
	time.Sleep(l.backoff)
	return false
}

// Alive reports whether every read loop is making progress: waiting for
// packets, or busy with one for less than stuckAfter. The systemd watchdog
// and /readyz ask it; unlike a probe it needs no packet to get through.
func (s *Server) Alive() error {
	var errs []error
	for _, pc := range s.udp {
		errs = append(errs, pc.loop.check("udp "+pc.LocalAddr().String()))
	}
	s.mu.Lock()
	listeners := append(slices.Clip(s.tcp), s.extra...)
	s.mu.Unlock()
	for _, l := range listeners {
		errs = append(errs, l.check())
	}
	return errors.Join(errs...)
}
