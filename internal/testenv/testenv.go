// Package testenv holds what icebox's tests share about their environment:
// finding the external peers (coturn's tools, Chromium) CI installs.
package testenv

import (
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"syscall"
	"testing"
	"time"
)

// Tool returns the path of an external program a test needs. Outside CI a
// missing program skips the test with a clear message; in CI (CI is set,
// and .ci/run installs it) it fails, so CI can never pass by skipping.
func Tool(t testing.TB, name, debianPackage string) string {
	t.Helper()
	path, err := exec.LookPath(name)
	if err == nil {
		return path
	}
	msg := name + " not found: apt-get install -y " + debianPackage
	if os.Getenv("CI") != "" {
		t.Fatal(msg + " (CI must install it in .ci/run)")
	}
	t.Skip(msg)
	return ""
}

// FreePort returns a port that was free on 127.0.0.1 for both UDP and TCP
// a moment ago, for programs that cannot be told to pick their own. It is
// chosen at random in 12000-19999, below Linux's ephemeral ports (and the
// relay ranges the tests use): a port from the ephemeral range could be
// handed to the test's own probe socket as its local port before the
// program binds it, and the probe would then talk to itself.
func FreePort(t testing.TB) int {
	t.Helper()
	const lo, hi = 12000, 19999
	for range 100 {
		port := lo + rand.IntN(hi-lo+1)
		u, err := net.ListenPacket("udp4", fmt.Sprintf("127.0.0.1:%d", port))
		if err != nil {
			continue
		}
		l, err := net.Listen("tcp4", u.LocalAddr().String())
		u.Close()
		if err == nil {
			l.Close()
			return port
		}
	}
	t.Fatal("no free port on 127.0.0.1")
	return 0
}

// WaitFor polls cond every 20 ms until it holds, and fails t if limit
// passes first: a wait on a condition with a deadline, not a sleep.
func WaitFor(t testing.TB, limit time.Duration, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(limit); !cond(); {
		if time.Now().After(deadline) {
			t.Fatalf("gave up after %v waiting for %s", limit, what)
		}
		time.Sleep(20 * time.Millisecond) // polling interval
	}
}

// FreeRelayRange returns n (at most 400) consecutive UDP ports, "lo-hi",
// for a TURN relay range a test must fill exactly. The ports lie in one of
// four 400-port blocks of 31100-32699, below Linux's ephemeral ports and
// above the attack harness's fixed range; the test holds an flock on its
// block until it ends, so that icebox tests in other processes, which
// also run FreeRelayRange, take another block (or wait for this one).
// Each port was free a moment ago.
func FreeRelayRange(t testing.TB, n int) string {
	t.Helper()
	const base, block, blocks = 31100, 400, 4
	if n > block {
		t.Fatalf("FreeRelayRange: %d ports, at most %d", n, block)
	}
	first := rand.IntN(blocks)
	for try := range 2 * blocks {
		k := (first + try) % blocks
		how := syscall.LOCK_EX | syscall.LOCK_NB
		if try >= blocks {
			how = syscall.LOCK_EX // every block is taken: wait for one
		}
		// A fixed directory, not $TMPDIR: every process must lock the same file.
		f, err := os.OpenFile(fmt.Sprintf("/tmp/icebox-relay-ports-%d.lock", base+k*block), os.O_CREATE|os.O_RDWR, 0o666)
		if err != nil {
			t.Fatal(err)
		}
		if err := syscall.Flock(int(f.Fd()), how); err != nil {
			f.Close()
			continue
		}
		start := base + k*block
		if !free(start, n) { // something other than icebox's tests holds one
			f.Close()
			continue
		}
		t.Cleanup(func() { f.Close() }) // closing releases the lock
		return fmt.Sprintf("%d-%d", start, start+n-1)
	}
	t.Fatalf("no block of %d free relay ports in 31100-32699", n)
	return ""
}

// free reports whether UDP ports start to start+n-1 on 127.0.0.1 can all
// be bound now.
func free(start, n int) bool {
	var held []net.PacketConn
	defer func() {
		for _, c := range held {
			c.Close()
		}
	}()
	for p := start; p < start+n; p++ {
		c, err := net.ListenPacket("udp4", fmt.Sprintf("127.0.0.1:%d", p))
		if err != nil {
			return false
		}
		held = append(held, c)
	}
	return true
}
