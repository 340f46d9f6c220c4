// Command stunload measures how many STUN Binding requests per second a
// server answers over UDP, so icebox and coturn can be compared on the same
// machine in the same run: the ratio holds where absolute figures on a
// shared machine do not.
//
//	stunload -addr 127.0.0.1:3478 -clients 8 -window 32 -duration 5s
//
// Each client socket keeps window requests in flight and sends a new one
// per answer; a window that goes quiet for -timeout is refilled. Only send
// it to servers you run yourself, on addresses you own.
package main

import (
	"crypto/rand"
	"encoding/binary"
	"flag"
	"fmt"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:3478", "server address (host:port)")
	clients := flag.Int("clients", 8, "client sockets")
	window := flag.Int("window", 32, "requests in flight per socket")
	duration := flag.Duration("duration", 5*time.Second, "how long to send")
	timeout := flag.Duration("timeout", 200*time.Millisecond, "refill a window silent for this long")
	flag.Parse()

	to, err := net.ResolveUDPAddr("udp", *addr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "stunload:", err)
		os.Exit(2)
	}
	var answered, sent atomic.Int64
	stop := time.Now().Add(*duration)
	var wg sync.WaitGroup
	for range *clients {
		c, err := net.DialUDP("udp", nil, to)
		if err != nil {
			fmt.Fprintln(os.Stderr, "stunload:", err)
			os.Exit(1)
		}
		wg.Go(func() {
			defer c.Close()
			req := make([]byte, 20)
			binary.BigEndian.PutUint16(req[0:], 0x0001)
			binary.BigEndian.PutUint32(req[4:], 0x2112A442)
			send := func() {
				rand.Read(req[8:20])
				c.Write(req)
				sent.Add(1)
			}
			for range *window {
				send()
			}
			buf := make([]byte, 1500)
			for time.Now().Before(stop) {
				c.SetReadDeadline(time.Now().Add(*timeout))
				n, err := c.Read(buf)
				if err != nil {
					for range *window {
						send()
					}
					continue
				}
				if n >= 20 && binary.BigEndian.Uint16(buf) == 0x0101 {
					answered.Add(1)
				}
				send()
			}
		})
	}
	wg.Wait()
	secs := duration.Seconds()
	fmt.Printf("addr=%s clients=%d window=%d duration=%s sent=%d answered=%d answered/s=%.0f\n",
		*addr, *clients, *window, *duration, sent.Load(), answered.Load(), float64(answered.Load())/secs)
}
