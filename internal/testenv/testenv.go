// Package testenv holds what icebox's tests share about their environment:
// finding the external peers (coturn's tools, Chromium) CI installs.
package testenv

import (
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
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
// a moment ago, for programs that cannot be told to pick their own.
func FreePort(t testing.TB) int {
	t.Helper()
	for range 20 {
		u, err := net.ListenPacket("udp4", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := u.LocalAddr().(*net.UDPAddr).Port
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

// FreeRelayRange returns n consecutive UDP ports, "lo-hi", that were all
// free on 127.0.0.1 a moment ago, for a TURN relay range a test must fill
// exactly: chosen at random in 30000-32767, below Linux's ephemeral
// ports, so that tests running beside each other (or other icebox
// processes) do not share one.
func FreeRelayRange(t testing.TB, n int) string {
	t.Helper()
	const lo, hi = 30000, 32767
	for range 50 {
		start := lo + rand.IntN(hi-lo-n+2)
		var held []net.PacketConn
		for p := start; p < start+n; p++ {
			c, err := net.ListenPacket("udp4", fmt.Sprintf("127.0.0.1:%d", p))
			if err != nil {
				break
			}
			held = append(held, c)
		}
		for _, c := range held {
			c.Close()
		}
		if len(held) == n {
			return fmt.Sprintf("%d-%d", start, start+n-1)
		}
	}
	t.Fatalf("no %d free consecutive UDP ports on 127.0.0.1", n)
	return ""
}
