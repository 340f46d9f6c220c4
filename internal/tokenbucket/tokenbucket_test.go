package tokenbucket

import (
	"testing"
	"time"
)

func TestBucket(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	const rate, burst = 10.0, 3 // a token every 100 ms
	var b Bucket
	if !b.Full(t0, rate, burst) {
		t.Fatal("a new bucket is not full")
	}
	for i := range burst {
		if !b.Allow(t0, rate, burst) {
			t.Fatalf("spend %d of a full bucket of %d refused", i+1, burst)
		}
	}
	if b.Allow(t0, rate, burst) {
		t.Fatal("an empty bucket gave a token")
	}
	if got := b.Wait(rate, 1); got != 100*time.Millisecond {
		t.Fatalf("Wait(1) on an empty bucket = %v, want 100ms", got)
	}
	if b.Full(t0.Add(299*time.Millisecond), rate, burst) {
		t.Fatal("full before burst/rate")
	}
	if !b.Allow(t0.Add(100*time.Millisecond), rate, burst) {
		t.Fatal("no token 1/rate after emptying")
	}
	if b.Allow(t0.Add(150*time.Millisecond), rate, burst) {
		t.Fatal("half a token spent as one")
	}
	// Refilling stops at burst however long the bucket rests.
	later := t0.Add(time.Hour)
	if !b.Full(later, rate, burst) {
		t.Fatal("not full after an hour")
	}
	if b.AllowN(later, rate, burst, burst+1) {
		t.Fatal("AllowN spent more than burst")
	}
	if !b.AllowN(later, rate, burst, burst) {
		t.Fatal("AllowN(burst) refused on a full bucket: a refused AllowN must spend nothing")
	}
	if b.AllowN(later, rate, burst, 1) {
		t.Fatal("a token left after AllowN(burst)")
	}
	if got := b.Wait(rate, 2); got != 200*time.Millisecond {
		t.Fatalf("Wait(2) on an empty bucket = %v, want 200ms", got)
	}
}

// TestBucketRateChange: rate and burst are read at each call, so a reload
// that lowers burst caps a bucket that was fuller.
func TestBucketRateChange(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	var b Bucket
	b.Allow(t0, 1, 100) // 99 left
	if !b.AllowN(t0.Add(time.Millisecond), 1, 2, 2) || b.Allow(t0.Add(2*time.Millisecond), 1, 2) {
		t.Fatal("a lowered burst did not cap the tokens held")
	}
}
