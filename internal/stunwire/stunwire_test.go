package stunwire

import (
	"testing"

	"github.com/pion/stun/v3"
)

// TestTypeMatchesPion: the class bits stunwire names are pion's classes,
// and every method in every class packs into the type pion builds and
// unpacks back.
func TestTypeMatchesPion(t *testing.T) {
	classes := map[uint16]stun.MessageClass{
		ClassRequest: stun.ClassRequest, ClassIndication: stun.ClassIndication,
		ClassSuccess: stun.ClassSuccessResponse, ClassError: stun.ClassErrorResponse,
	}
	for class, pionClass := range classes {
		for method := uint16(0); method < 1<<12; method++ {
			typ := Type(method, class)
			if want := (stun.MessageType{Method: stun.Method(method), Class: pionClass}).Value(); typ != want {
				t.Fatalf("Type(%#x, %#x) = %#x, pion %#x", method, class, typ, want)
			}
			if Method(typ) != method || Class(typ) != class {
				t.Fatalf("type %#x: method %#x class %#x, want %#x %#x", typ, Method(typ), Class(typ), method, class)
			}
		}
	}
}

// TestAttrsWalk walks a message pion built, and stops at one whose last
// attribute runs past the end.
func TestAttrsWalk(t *testing.T) {
	m := stun.MustBuild(stun.TransactionID, stun.BindingRequest, stun.NewUsername("ab"), stun.NewSoftware("icebox"), stun.Fingerprint)
	var got []uint16
	a := AttrsOf(m.Raw, len(m.Raw))
	off, typ, n, ok := a.First()
	for ; ok; off, typ, n, ok = a.After(off, n) {
		got = append(got, typ)
		if typ == AttrUsername && string(m.Raw[off+4:off+4+n]) != "ab" {
			t.Errorf("USERNAME value %q", m.Raw[off+4:off+4+n])
		}
	}
	if a.Truncated(off) || len(got) != 3 || got[0] != AttrUsername || got[1] != uint16(stun.AttrSoftware) || got[2] != AttrFingerprint {
		t.Fatalf("walked %#x, truncated %v", got, a.Truncated(off))
	}
	short := AttrsOf(m.Raw, len(m.Raw)-1) // FINGERPRINT's value now runs past the end
	off, _, n, ok = short.First()
	for ; ok; off, _, n, ok = short.After(off, n) {
	}
	if !short.Truncated(off) {
		t.Fatal("a walk cut inside the last attribute is not reported truncated")
	}
}
