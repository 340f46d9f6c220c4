package dnsname

import (
	"strings"
	"testing"
)

func TestValid(t *testing.T) {
	label63 := strings.Repeat("a", 63)
	name253 := strings.Repeat(label63+".", 3) + strings.Repeat("b", 61) // 4*64-3 = 253 bytes
	for _, tc := range []struct {
		name string
		want bool
	}{
		{"turn.example.com", true},
		{"localhost", true},
		{"TURN-1.Example.COM", true},
		{"1.2.3.4", true}, // digits-only labels are names too (RFC 1123 §2.1)
		{"xn--bcher-kva.example", true},
		{label63 + ".example", true},
		{name253, true},
		{"", false},
		{".", false},
		{"turn.example.com.", false}, // callers trim the absolute form's dot
		{".example.com", false},
		{"turn..example.com", false},
		{"-turn.example.com", false},
		{"turn-.example.com", false},
		{"*.example.com", false},
		{"turn_1.example.com", false},
		{"turn.example.com:3478", false},
		{"turn://example.com", false},
		{"bücher.example", false},
		{label63 + "a.example", false},
		{name253 + "b", false},
	} {
		if got := Valid(tc.name); got != tc.want {
			t.Errorf("Valid(%q) = %v, want %v", tc.name, got, tc.want)
		}
	}
}
