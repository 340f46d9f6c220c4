package attack

import (
	"bufio"
	"crypto/tls"
	"encoding/binary"
	"io"
	mrand "math/rand/v2"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pion/stun/v3"

	"icebox/internal/credentials"
)

// Stream auth flood: how many sources, and connections each over TCP and
// over TLS.
const (
	streamSources     = 8
	streamConnsPerSrc = 8
)

// TestStreamAuthFlood: bad MACs over TCP and TLS from 8 addresses, 8
// connections each way per address, at authRate in all. Over a stream the
// source is proven, so each address has quotas.auth_failures (10 per
// minute) answered 401s and the rest are dropped unanswered before any
// HMAC; the legitimate client keeps calling.
func TestStreamAuthFlood(t *testing.T) {
	cfg := config(t)
	tlsAddr := withTLS(t, cfg)
	d := start(t, cfg)

	u, _, _ := credentials.Mint([]byte(testSecret), "mallory", time.Hour, time.Now())
	var conns []net.Conn
	t.Cleanup(func() {
		for _, c := range conns {
			c.Close()
		}
	})
	for i := range streamSources {
		local := &net.TCPAddr{IP: net.IPv4(127, 0, 0, byte(40+i))}
		for range streamConnsPerSrc {
			dialer := &net.Dialer{LocalAddr: local, Timeout: 5 * time.Second}
			if c, err := dialer.Dial("tcp4", d.stun); err == nil {
				conns = append(conns, c)
			}
			if c, err := tls.DialWithDialer(dialer, "tcp4", tlsAddr, &tls.Config{InsecureSkipVerify: true}); err == nil {
				conns = append(conns, c)
			}
		}
	}
	if len(conns) < streamSources*streamConnsPerSrc {
		t.Fatalf("only %d of %d attack connections opened", len(conns), 2*streamSources*streamConnsPerSrc)
	}
	pool := make([][]byte, 256)
	for i := range pool {
		pool[i] = signed(stun.MethodRefresh, u, "wrong-password", "n")
	}

	var sent int64
	var answered atomic.Int64
	r := underAttack(t, d, func(stop <-chan struct{}) {
		var readers sync.WaitGroup
		for _, c := range conns {
			readers.Go(func() { answered.Add(countAnswers(c, stop)) })
		}
		dead := make([]bool, len(conns))
		sent = flood(stop, 1, authRate, func(r *mrand.Rand) bool {
			i := r.IntN(len(conns))
			if dead[i] {
				return false
			}
			conns[i].SetWriteDeadline(time.Now().Add(50 * time.Millisecond))
			if _, err := conns[i].Write(pool[r.IntN(len(pool))]); err != nil {
				dead[i] = true
				return false
			}
			return true
		})
		readers.Wait()
	})
	// Each source: auth_failures at once, then auth_failures per minute.
	const failures, window = 10, time.Minute
	bound := int64(streamSources) * (failures + int64(r.took*failures/window) + 1)
	t.Logf("attack: %d bad MACs sent over %d TCP and TLS connections from %d addresses, %d answered (bound %d)",
		sent, len(conns), streamSources, answered.Load(), bound)
	if answered.Load() == 0 {
		t.Errorf("no bad MAC was answered: the flood never reached authentication")
	}
	if answered.Load() > bound {
		t.Errorf("%d bad MACs answered, want at most %d: auth_failures per source did not hold", answered.Load(), bound)
	}
}

// countAnswers reads STUN messages from a stream until stop, counting
// them.
func countAnswers(c net.Conn, stop <-chan struct{}) int64 {
	br := bufio.NewReader(c)
	var n int64
	hdr := make([]byte, 20)
	for {
		select {
		case <-stop:
			return n
		default:
		}
		c.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
		if _, err := io.ReadFull(br, hdr[:1]); err != nil {
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				continue
			}
			<-stop
			return n
		}
		// The rest of a message follows its first byte at once.
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.ReadFull(br, hdr[1:]); err != nil {
			<-stop
			return n
		}
		if _, err := br.Discard(int(binary.BigEndian.Uint16(hdr[2:4]))); err != nil {
			<-stop
			return n
		}
		n++
	}
}
