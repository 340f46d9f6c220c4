package tlsmux

import (
	"testing"

	"github.com/pion/stun/v3"
)

// FuzzSniff: any first bytes get one answer, never a panic, and a STUN
// header is never taken for HTTP.
func FuzzSniff(f *testing.F) {
	f.Add(stun.MustBuild(stun.TransactionID, stun.BindingRequest).Raw[:sniffLen])
	f.Add([]byte("GET / HTTP/1.1"))
	f.Add([]byte("OPTIONS * HTTP/1.1"))
	f.Add([]byte{0x40, 0x00, 0x00, 0x04, 1, 2, 3, 4})
	f.Add([]byte("\x16\x03\x01\x00\x00\x00\x00\x00"))
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) < sniffLen {
			return
		}
		head := b[:sniffLen]
		if isSTUN(head) && isHTTP(head) {
			t.Fatalf("% x is both STUN and HTTP", head)
		}
		if isSTUN(head) && isChannelData(head) {
			t.Fatalf("% x is both STUN and ChannelData", head)
		}
	})
}
