package main

import (
	"slices"
	"testing"
	"time"

	"icebox/internal/credentials"
)

// TestICEURLs: what clients are told for each way TURN is served, and
// the credential rides on the TURN entry only.
func TestICEURLs(t *testing.T) {
	cfg := DefaultConfig()
	cfg.TURN.Enabled = true
	cfg.STUN.TCP = true
	u := newICEURLs(cfg, "turn.example.org", 3478, 0)
	if want := []string{"stun:turn.example.org:3478"}; !slices.Equal(u.stun, want) {
		t.Errorf("stun %q, want %q", u.stun, want)
	}
	want := []string{"turn:turn.example.org:3478?transport=udp", "turn:turn.example.org:3478?transport=tcp"}
	if !slices.Equal(u.turn, want) {
		t.Errorf("turn %q, want %q", u.turn, want)
	}
	cfg.STUN.TCP = false
	if u := newICEURLs(cfg, "turn.example.org", 3478, 0); !slices.Equal(u.turn, want[:1]) {
		t.Errorf("without TCP: %q", u.turn)
	}
	cfg.STUN.TCP = true
	cfg.TURN.TLS.Listen, cfg.TURN.TLS.Cert = ":5349", "/etc/icebox/cert.pem"
	u = newICEURLs(cfg, "2001:db8::1", 3478, 443)
	if len(u.turn) != 4 || u.turn[2] != "turns:[2001:db8::1]:5349?transport=tcp" || u.turn[3] != "turns:[2001:db8::1]:443?transport=tcp" {
		t.Errorf("with TLS ports: %q", u.turn)
	}
	cfg.TURN.Enabled = false
	if u := newICEURLs(cfg, "h", 3478, 443); u.turn != nil {
		t.Errorf("TURN off: %q", u.turn)
	}

	name, pass, _ := credentials.Mint([]byte("s"), "tv", time.Hour, time.Unix(0, 0))
	s := newICEURLs(DefaultConfig(), "h", 3478, 0).servers(name, pass)
	if len(s) != 2 || s[0].Username != "" || s[1].Username != "3600:tv" || s[1].Credential != credentials.Password([]byte("s"), "3600:tv") {
		t.Errorf("servers %+v", s)
	}
}
