package main

import (
	"net"
	"net/netip"
	"strconv"
	"time"

	"icebox/turnsrv"
)

// iceURLs are the STUN and TURN URLs clients are told, at host (the
// public IP, or a DNS name matching the TLS certificate).
type iceURLs struct {
	stun []string
	turn []string // empty with TURN off
}

// newICEURLs: port is the STUN/TURN port, sharedPort the shared TLS port
// (tls.listen; 0 without one), which carries turns: for networks that
// pass nothing but 443.
func newICEURLs(cfg Config, host string, port, sharedPort int) iceURLs {
	u := iceURLs{stun: []string{"stun:" + net.JoinHostPort(host, strconv.Itoa(port))}}
	if cfg.TURN.Enabled {
		ownTLS := cfg.TURN.TLS.Listen != "" && (cfg.TURN.TLS.Cert != "" || cfg.TLS.On())
		u.turn = cfg.TURN.URLs(host, port, cfg.STUN.TCP, ownTLS)
		if sharedPort != 0 {
			u.turn = append(u.turn, "turns:"+net.JoinHostPort(host, strconv.Itoa(sharedPort))+"?transport=tcp")
		}
	}
	return u
}

// configPort is the STUN/TURN port the config asks for: what a command
// without a running server tells clients.
func configPort(cfg Config) int {
	if len(cfg.STUN.Listen) > 0 {
		if _, p, err := net.SplitHostPort(cfg.STUN.Listen[0]); err == nil {
			port, _ := strconv.Atoi(p)
			return port
		}
	}
	return 3478
}

// servers returns the ICE servers for one client, with a TURN credential
// minted from secret for user.
func (u iceURLs) servers(secret []byte, user string, ttl time.Duration, now time.Time) []turnsrv.ICEServer {
	out := []turnsrv.ICEServer{{URLs: u.stun}}
	if len(u.turn) > 0 {
		out = append(out, turnsrv.NewICEServer(u.turn, secret, user, ttl, now))
	}
	return out
}

// iceHost is the host part of ICE URLs: a name when one is configured,
// since turns: needs the certificate's name, else the public IP.
func iceHost(name string, publicIP netip.Addr) string {
	if name != "" {
		return name
	}
	return publicIP.String()
}
