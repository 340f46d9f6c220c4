// Package tokenbucket is the token bucket behind icebox's rate limits
// (frames per connection, credentials and unauthenticated answers per
// source): rate tokens a second, at most burst held.
package tokenbucket

import "time"

// Bucket is a token bucket. Its zero value is full; it takes the rate and
// burst at each call, so a reload changes them for buckets already made.
// A Bucket is not safe for concurrent use: its owner locks, or only one
// goroutine touches it.
type Bucket struct {
	tokens float64
	last   time.Time // zero until the first spend
}

// Allow spends one token if there is one.
func (b *Bucket) Allow(now time.Time, rate float64, burst int) bool {
	return b.AllowN(now, rate, burst, 1)
}

// AllowN spends n tokens at once, or none.
func (b *Bucket) AllowN(now time.Time, rate float64, burst, n int) bool {
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

// Wait is how long after its last spend b needs to hold n tokens again.
func (b *Bucket) Wait(rate float64, n int) time.Duration {
	short := float64(n) - b.tokens
	if short <= 0 {
		return 0
	}
	return time.Duration(short / rate * float64(time.Second))
}

// Full reports whether b has refilled to burst by now, when it is no
// different from a new bucket and its owner may forget it.
func (b *Bucket) Full(now time.Time, rate float64, burst int) bool {
	return b.last.IsZero() || b.tokens+now.Sub(b.last).Seconds()*rate >= float64(burst)
}
