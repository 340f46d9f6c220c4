package main

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"testing"
)

// FuzzAnswers: whatever a server sends back, framing a TCP stream and
// recognising answers neither panics nor reads past a frame, and a frame
// is only ever counted whole.
func FuzzAnswers(f *testing.F) {
	binding := (&bindingFlow{}).appendRequest(nil, 7)
	binding[1] = 0x01 // a success response to it
	channelData := binary.BigEndian.AppendUint32(append([]byte{0x40, 0x00, 0x00, 0x08}, 0, 0, 0, 3), 0)
	f.Add(binding)
	f.Add(channelData)
	f.Add(append(binding, channelData...))
	f.Add([]byte{0x40, 0x00, 0x00, 0x05, 0, 0, 0, 1, 9, 0, 0, 0}) // padded to four bytes
	f.Add([]byte{0x01, 0x15, 0x00, 0x08, 0x21, 0x12, 0xA4, 0x42, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 0x00, 0x13, 0x00, 0x40})
	relays := []*relayFlow{
		{reply: channel, tagAt: 4, epoch: 3},
		{reply: 0x0117, tagAt: 36, epoch: 3}, // Data indication
		{reply: channel, epoch: 3},           // too short to tag
	}
	f.Fuzz(func(t *testing.T, stream []byte) {
		r := bufio.NewReaderSize(bytes.NewReader(stream), 68<<10)
		total := 0
		for {
			b, err := peekFrame(r)
			if err != nil {
				break
			}
			if len(b) != frameSize(b) {
				t.Fatalf("frame of %d bytes says %d", len(b), frameSize(b))
			}
			(&bindingFlow{}).epochOf(b)
			for _, rf := range relays {
				rf.epochOf(b)
			}
			r.Discard(len(b))
			total += len(b)
		}
		if total > len(stream) {
			t.Fatalf("framed %d bytes of %d", total, len(stream))
		}
	})
}
