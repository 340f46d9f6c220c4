package cluster

import (
	"bytes"
	"errors"
	"strings"
	"testing"
)

func TestWireRoundTripAndTamper(t *testing.T) {
	s := newSigner([]byte("k"))
	m := &message{typ: msgFrame, sent: 42, boot: 1764590000123456789, seq: 7, node: "node-1", member: "9f2c41d0a7b3e815", kind: 3, payload: []byte(`{"id":"WsSDPOffer","data":""}`)}
	b := s.encode(nil, "icebox.room.x", m)
	got, err := s.decode("icebox.room.x", b)
	if err != nil {
		t.Fatal(err)
	}
	if got.typ != m.typ || got.sent != m.sent || got.boot != m.boot || got.seq != m.seq || got.node != m.node || got.member != m.member || got.kind != m.kind || !bytes.Equal(got.payload, m.payload) {
		t.Fatalf("got %+v, want %+v", got, m)
	}
	if _, err := s.decode("icebox.room.y", b); err == nil {
		t.Error("a message replayed on another subject was accepted")
	}
	for i := range b {
		c := bytes.Clone(b)
		c[i] ^= 1
		if _, err := s.decode("icebox.room.x", c); err == nil {
			t.Fatalf("a message with byte %d changed was accepted", i)
		}
	}
	if _, err := newSigner([]byte("other")).decode("icebox.room.x", b); err == nil {
		t.Error("a message signed with another secret was accepted")
	}
}

// A node of another version signs with the same secret, but its layout
// differs: its messages are refused as such, never misread.
func TestWireOtherVersionRefused(t *testing.T) {
	s := newSigner([]byte("k"))
	m := &message{typ: msgHeartbeat, node: "node-old", member: "boot"}
	b := s.encode(nil, "icebox.hb", m)
	body := bytes.Clone(b[:len(b)-macSize])
	body[0] = wireVersion - 1
	old := append(body, s.sum("icebox.hb", body, nil)...)
	if _, err := s.decode("icebox.hb", old); !errors.Is(err, errOtherVersion) {
		t.Fatalf("a signed message of version %d: err %v, want errOtherVersion", wireVersion-1, err)
	}
	if _, err := s.decode("icebox.hb", b); err != nil {
		t.Fatalf("this version's message: %v", err)
	}
}

// FuzzDecode: whatever arrives from NATS, decode never panics, and only
// what the secret signed is accepted.
func FuzzDecode(f *testing.F) {
	s := newSigner([]byte("fuzz-secret"))
	f.Add(s.encode(nil, "icebox.hb", &message{typ: msgHeartbeat, node: "a", member: "boot"}))
	f.Add(s.encode(nil, "icebox.hb", &message{typ: msgFrame, node: "node-2", member: "m", kind: 2, payload: []byte("{}")}))
	f.Add([]byte{})
	f.Add(bytes.Repeat([]byte{0xff}, 80))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := s.decode("icebox.hb", b)
		if err != nil {
			return
		}
		// Accepted: it must re-encode to the same bytes.
		if again := s.encode(nil, "icebox.hb", &m); !bytes.Equal(again, b) {
			t.Fatalf("accepted %x, which re-encodes as %x", b, again)
		}
	})
}

// FuzzClaimEntry: whatever another node puts in a claim answer, parsing
// never panics, and what it accepts is written back the same.
func FuzzClaimEntry(f *testing.F) {
	f.Add(string(appendClaimEntry(nil, '1', 1764590000123456789, "9f2c41d0a7b3e815")))
	f.Add(string(appendClaimEntry(nil, 'p', 1, "m")))
	f.Add("0")
	f.Add("x0000000000000001id")
	f.Add("1-000000000000001id")
	f.Fuzz(func(t *testing.T, e string) {
		tag, since, id, ok := parseClaimEntry(strings.TrimSuffix(e, ","))
		if !ok {
			return
		}
		again := string(appendClaimEntry(nil, tag, since, id))
		if !strings.EqualFold(strings.TrimSuffix(again, ","), strings.TrimSuffix(e, ",")) {
			t.Fatalf("accepted %q, which is written back as %q", e, again)
		}
	})
}
