package main

import (
	"net"
	"net/netip"
	"strconv"

	"icebox/signal"
)

// iceURLs are the STUN and TURN URLs clients are told, at host (the
// public IP, or a DNS name matching the TLS certificate).
type iceURLs struct {
	stun []string
	turn []string // empty with TURN off
}

// newICEURLs: port is the STUN/TURN port, where TURN is served over UDP,
// and over TCP when STUN is; sharedPort the shared TLS port (tls.listen; 0
// without one), which carries turns: for networks that pass nothing but
// 443. host must match the certificate for turns: to work.
func newICEURLs(cfg Config, host string, port, sharedPort int) iceURLs {
	u := iceURLs{stun: []string{"stun:" + net.JoinHostPort(host, strconv.Itoa(port))}}
	if cfg.TURN.Enabled {
		hp := net.JoinHostPort(host, strconv.Itoa(port))
		u.turn = []string{"turn:" + hp + "?transport=udp"}
		if cfg.STUN.TCP {
			u.turn = append(u.turn, "turn:"+hp+"?transport=tcp")
		}
		// TURN over TLS on a port of its own (turn.tls.listen).
		if cfg.TURN.TLS.Listen != "" && cfg.turnTLS() {
			if p := listenPort(cfg.TURN.TLS.Listen); p != 0 {
				u.turn = append(u.turn, "turns:"+net.JoinHostPort(host, strconv.Itoa(p))+"?transport=tcp")
			}
		}
		if sharedPort != 0 {
			u.turn = append(u.turn, "turns:"+net.JoinHostPort(host, strconv.Itoa(sharedPort))+"?transport=tcp")
		}
	}
	return u
}

// configPort is the STUN/TURN port the config asks for, that of its
// first stun.listen address (Validate requires one): what a command
// without a running server tells clients.
func configPort(cfg Config) int {
	return listenPort(cfg.STUN.Listen[0])
}

// servers returns the ICE servers for one client, with a TURN credential
// (see credentials.Mint) on the TURN URLs.
func (u iceURLs) servers(username, password string) []signal.ICEServer {
	out := []signal.ICEServer{{URLs: u.stun}}
	if len(u.turn) > 0 {
		out = append(out, signal.ICEServer{URLs: u.turn, Username: username, Credential: password})
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
