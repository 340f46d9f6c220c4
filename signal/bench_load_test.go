package signal

import (
	"fmt"
	"io"
	"syscall"
	"testing"
	"time"
)

// BenchmarkForwardPaced drives the load a deployment sees: many pairings,
// each sending about 20 frames a second (a call setup's candidates and
// SDPs), rather than one pairing flat out (BenchmarkForward). Each tick,
// every pairing's caller sends one candidate frame to its callee. The
// figure to compare is cpu-ns/frame: the process's CPU time (user +
// system, from getrusage) per forwarded frame, which, unlike ns/op, holds
// under a busy machine. The raw clients do little besides their syscalls,
// and are the same in every run.
func BenchmarkForwardPaced(b *testing.B) {
	for _, pairings := range []int{50, 200} {
		b.Run(fmt.Sprintf("pairings=%d", pairings), func(b *testing.B) {
			const perSecond = 20 // frames a pairing sends each second
			cfg := testConfig()
			cfg.PingInterval = time.Hour
			ts := startServer(b, cfg, Options{})
			cand := "candidate:1 1 udp 2122260223 192.0.2.1 54321 typ host generation 0 ufrag abcd"
			per := serverFrameLen(len(candidates("paced-0000", cand)))
			frames := make([][]byte, pairings)
			from := make([]*rawConn, pairings)
			to := make([]*rawConn, pairings)
			for i := range pairings {
				room := fmt.Sprintf("paced-%04d", i) // every frame the same length
				var err error
				if from[i], err = rawJoin(ts.addr, room); err != nil {
					b.Fatal(err)
				}
				defer from[i].Close()
				if to[i], err = rawJoin(ts.addr, room); err != nil {
					b.Fatal(err)
				}
				defer to[i].Close()
				frames[i] = clientFrame(candidates(room, cand))
			}
			ticks := (b.N + pairings - 1) / pairings
			done := make(chan error, pairings)
			for i := range pairings {
				go func(c *rawConn) {
					buf := make([]byte, per)
					for range ticks {
						if _, err := io.ReadFull(c, buf); err != nil {
							done <- err
							return
						}
					}
					done <- nil
				}(to[i])
			}
			tick := time.NewTicker(time.Second / perSecond)
			defer tick.Stop()
			b.ReportAllocs()
			cpu0 := cpuTime()
			b.ResetTimer()
			for range ticks {
				<-tick.C
				for i, c := range from {
					if _, err := c.Write(frames[i]); err != nil {
						b.Fatal(err)
					}
				}
			}
			for range pairings {
				if err := <-done; err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			b.ReportMetric(float64(cpuTime()-cpu0)/float64(ticks*pairings), "cpu-ns/frame")
		})
	}
}

// cpuTime is the CPU time this process has used, user and system.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
