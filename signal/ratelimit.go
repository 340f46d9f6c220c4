package signal

import "time"

// bucket is a token bucket limiting frames per second; only the reader
// goroutine touches it.
type bucket struct {
	tokens float64
	last   time.Time
}

func (b *bucket) allow(now time.Time, rate float64, burst int) bool {
	return b.allowN(now, rate, burst, 1)
}

// allowN spends n tokens at once, or none.
func (b *bucket) allowN(now time.Time, rate float64, burst, n int) bool {
	if b.last.IsZero() {
		b.tokens = float64(burst)
	} else {
		b.tokens = min(float64(burst), b.tokens+now.Sub(b.last).Seconds()*rate)
	}
	b.last = now
	if b.tokens < float64(n) {
		return false
	}
	b.tokens -= float64(n)
	return true
}

// wait is how long after its last spend b needs to hold n tokens again.
func (b *bucket) wait(rate float64, n int) time.Duration {
	short := float64(n) - b.tokens
	if short <= 0 {
		return 0
	}
	return time.Duration(short / rate * float64(time.Second))
}
