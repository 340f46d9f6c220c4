package turnsrv

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"icebox/internal/cfgerr"
	"icebox/internal/credentials"
)

// Config is the turn: section of icebox's configuration. Every field's
// comment states the value DefaultConfig gives it. Secrets, credential
// lifetimes, peer policy, quotas and the TLS certificate files can change on
// a reload (PrepareReload, Commit); the rest needs a restart.
type Config struct {
	// Relay media for peers that cannot reach each other directly, over
	// UDP and TCP on the STUN port and over TLS when a certificate is set.
	// Default true.
	Enabled bool `yaml:"enabled"`

	// The long-term-credential realm announced to clients. Restart to
	// change. Default icebox.
	Realm string `yaml:"realm"`

	// TURN REST API shared secrets (coturn's static-auth-secret), at least
	// 16 characters each. The first mints credentials, all verify: rotate
	// by putting the new one first, then drop the old one after max_ttl.
	// With none here, in secret_file or in secret_env, icebox takes the
	// systemd credential icebox.turn-secret (/etc/credstore/, see README)
	// when there is one, else generates one on first start and keeps it
	// in state_dir/turn-secret (mode 0600). icebox credentials and icebox
	// token only read it. Default none.
	Secrets []string `yaml:"secrets"`

	// A file with secrets, one per line ('#' starts a comment), appended
	// after secrets: keeps them out of this file. Each must be at least 16
	// characters, or icebox refuses to start. Default "": none.
	SecretFile string `yaml:"secret_file"`

	// An environment variable holding one more secret, appended last; at
	// least 16 characters, or icebox refuses to start. Default "": none.
	SecretEnv string `yaml:"secret_env"`

	// Lifetime of the credentials icebox hands out (icebox credentials,
	// WsIceServers). Every authenticated request (refresh, permission,
	// channel bind) checks it, so a call needs a fresh credential before
	// this runs out. At least 1m. Default 12h.
	CredentialTTL time.Duration `yaml:"credential_ttl"`

	// Usernames expiring further ahead than this are refused, so a
	// credential minted far into the future cannot outlive a rotation.
	// At least credential_ttl. Default 24h.
	MaxTTL time.Duration `yaml:"max_ttl"`

	// TURN over TLS (turns:), for networks that allow only HTTPS-like
	// traffic, on a port of its own.
	TLS TLSConfig `yaml:"tls"`

	// Where relayed transport addresses live. Restart to change.
	Relay RelayConfig `yaml:"relay"`

	// The peer policy: which addresses a client may relay to. By default
	// icebox refuses to relay to loopback, private (RFC 1918), CGNAT,
	// link-local (cloud metadata), ULA and site-local, multicast,
	// broadcast, reserved, documentation and benchmarking ranges and its
	// own addresses, also in every IPv6 disguise (IPv4-mapped,
	// IPv4-compatible, NAT64, 6to4), and Teredo outright.
	Peers PeerConfig `yaml:"peers"`

	// What one user, one source address and everyone together may hold.
	// 0 means no limit for every count here.
	Quotas QuotaConfig `yaml:"quotas"`
}

// TLSConfig configures TURN over TLS.
type TLSConfig struct {
	// The port of TURN over TLS, on when there is a certificate (cert and
	// key below, or the shared tls section's); "" serves none (TURN over
	// TLS then only on tls.listen). Restart to change. Default ":5349".
	Listen string `yaml:"listen"`
	// A PEM certificate chain file of its own, re-read when it changes.
	// Default "": the shared tls section's certificate, if any.
	Cert string `yaml:"cert"`
	// The PEM private key file for cert. Under systemd write it as
	// ${CREDENTIALS_DIRECTORY}/icebox.turn-tls.key (a systemd credential,
	// see README). Default "".
	Key string `yaml:"key"`
}

// RelayConfig configures relayed transport addresses. Restart to change.
type RelayConfig struct {
	// The IPv4 address relays bind to; clients are told public_ip.
	// Default "0.0.0.0".
	Address string `yaml:"address"`
	// UDP ports for relays, "LOW-HIGH", one per allocation. Open them in
	// the firewall. Default "49152-65535".
	Ports string `yaml:"ports"`
}

// PeerConfig adjusts the built-in peer policy (Config.Peers says what it
// refuses).
type PeerConfig struct {
	// CIDRs (or single addresses) opened on purpose, e.g. [192.168.1.0/24]
	// on a LAN. They win over every deny rule except Teredo. Default none.
	Allow []string `yaml:"allow"`
	// More CIDRs (or single addresses) to refuse. Default none.
	Deny []string `yaml:"deny"`
}

// QuotaConfig bounds resource use. A count of 0 means no limit.
type QuotaConfig struct {
	// Allocations at once per user (the part after ':' in the username;
	// for icebox's own credentials one pairing, both members, or one
	// address). A browser allocates once per TURN URL and local
	// interface, and again on renegotiation before the old ones go: one
	// call can hold a dozen or more. Default 24.
	PerUser int `yaml:"per_user"`
	// Allocations at once per client IPv4 address or IPv6 /64: a
	// household or office behind one NAT shares it. Default 32.
	PerIP int `yaml:"per_ip"`
	// Allocations at once on the whole server: about what a small VM's
	// bandwidth carries. Once it is half full, an address holding any may
	// hold at most an eighth of what is free (fair share), so a newcomer
	// always gets one however many addresses an attacker has below total.
	// Default 1000.
	Total int `yaml:"total"`
	// Longest lifetime a client may request in Allocate and Refresh,
	// between 10m (what a client gets when it asks for nothing) and 1h
	// (what pion/turn grants at most); clients refresh. Default 1h.
	MaxLifetime time.Duration `yaml:"max_lifetime"`
	// Failed authentications per source (IPv4 address or IPv6 /64) within
	// auth_failure_window before its further failures are dropped
	// unanswered for the rest of the window. Failures count only where
	// the source is proven (TCP, TLS): a UDP source can be forged, and a
	// valid credential is never dropped. Default 10.
	AuthFailures int `yaml:"auth_failures"`
	// The window of auth_failures; also how often, at most, failures from
	// one source are logged. Default 1m.
	AuthFailureWindow time.Duration `yaml:"auth_failure_window"`
	// Requests without a credential (the first, unsigned Allocate of each
	// allocation; one signed without a NONCE) answered per second per
	// source, in bursts of twice that; the rest go unanswered, so nobody
	// can make icebox reflect traffic at a forged address. Default 32.
	AnswerRate int `yaml:"answer_rate"`
	// Peer addresses one allocation may hold permissions for (channels
	// count their peer's address too). A CreatePermission or ChannelBind
	// that would add one more is answered 508 (Insufficient Capacity);
	// refreshing those held always works. A WebRTC call uses one to four
	// per allocation; the cap bounds the memory of an allocation and
	// what relaying each of its packets costs. Default 64.
	Permissions int `yaml:"permissions"`
	// Channels one allocation may hold; a ChannelBind for one more is
	// answered 508, rebinding a held one always works. Default 64.
	Channels int `yaml:"channels"`
	// Bytes per second one allocation may relay in each direction (client
	// to peers, peers to client), in bursts of a second's worth; datagrams
	// beyond it are dropped and counted, as a congested link would drop
	// them (coturn's max-bps). A video call needs a few Mbit/s; the cap
	// keeps one client from filling a small VM's uplink. At least 65536
	// (a largest datagram per second), or 0 for no limit. Default 4000000
	// (32 Mbit/s).
	BytesPerSecond int `yaml:"bytes_per_second"`
}

// DefaultConfig returns the defaults stated on Config's fields.
func DefaultConfig() Config {
	return Config{
		Enabled:       true,
		Realm:         "icebox",
		CredentialTTL: 12 * time.Hour,
		MaxTTL:        24 * time.Hour,
		TLS:           TLSConfig{Listen: ":5349"},
		Relay:         RelayConfig{Address: "0.0.0.0", Ports: "49152-65535"},
		Quotas: QuotaConfig{
			PerUser:           24,
			PerIP:             32,
			Total:             1000,
			MaxLifetime:       time.Hour,
			AuthFailures:      10,
			AuthFailureWindow: time.Minute,
			AnswerRate:        32,
			Permissions:       64,
			Channels:          64,
			BytesPerSecond:    4_000_000,
		},
	}
}

// Bounds of Quotas.MaxLifetime: pion/turn grants 10 minutes to a request
// without LIFETIME and never more than an hour, and icebox can only lower a
// lifetime a client asked for.
const (
	minLifetimeCap = 10 * time.Minute
	maxLifetimeCap = time.Hour
)

// minBytesPerSecond is the lowest quotas.bytes_per_second: a burst (a
// second's worth) must hold the largest UDP datagram.
const minBytesPerSecond = 65536

// Validate reports every mistake in c, each as a *cfgerr.Error keyed
// relative to the turn section.
func (c *Config) Validate() error {
	var errs []error
	add := func(key, problem, fix string) { errs = append(errs, cfgerr.New(key, problem, fix)) }

	if c.Realm == "" {
		add("realm", "is empty", `write a realm, e.g. "icebox"`)
	} else if len(c.Realm) > 127 || strings.ContainsFunc(c.Realm, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
		add("realm", "must be under 128 printable characters", `write a short name, e.g. "icebox"`)
	}
	for i, s := range c.Secrets {
		if len(s) < credentials.MinSecretLen {
			// Never echo the secret itself.
			add(fmt.Sprintf("secrets[%d]", i), fmt.Sprintf("is shorter than %d characters", credentials.MinSecretLen),
				"generate one with `openssl rand -base64 32`")
		}
	}
	if c.SecretEnv != "" && !validEnvName(c.SecretEnv) {
		add("secret_env", fmt.Sprintf("%q is not an environment variable name", c.SecretEnv),
			"write a name such as ICEBOX_TURN_SECRET")
	}
	if c.CredentialTTL <= 0 {
		add("credential_ttl", "must be positive", "write a duration such as 12h")
	} else if why, fix, refuse := JudgeCredentialTTL(c.CredentialTTL); refuse {
		add("credential_ttl", fmt.Sprintf("%v is too short: %s", c.CredentialTTL, why), fix)
	}
	if c.MaxTTL <= 0 {
		add("max_ttl", "must be positive", "write a duration such as 24h")
	} else if c.CredentialTTL > c.MaxTTL {
		add("max_ttl", fmt.Sprintf("%v is shorter than credential_ttl %v, so minted credentials would be refused", c.MaxTTL, c.CredentialTTL),
			"make max_ttl at least credential_ttl")
	}

	switch {
	case (c.TLS.Cert == "") != (c.TLS.Key == ""):
		key := "tls.key"
		if c.TLS.Cert == "" {
			key = "tls.cert"
		}
		add(key, "is needed when the other of tls.cert and tls.key is set", "set both files, or neither to serve no TLS")
	case c.TLS.Listen != "":
		if _, _, err := net.SplitHostPort(c.TLS.Listen); err != nil {
			add("tls.listen", fmt.Sprintf("%q is not a host:port address", c.TLS.Listen), `write e.g. ":5349"`)
		}
	}

	if c.Relay.Address != "" {
		if a, err := netip.ParseAddr(c.Relay.Address); err != nil || !a.Unmap().Is4() {
			add("relay.address", fmt.Sprintf("%q is not an IPv4 address (relays are UDP over IPv4)", c.Relay.Address),
				`write "0.0.0.0" or one of this host's IPv4 addresses`)
		}
	}
	if _, _, err := parsePorts(c.Relay.Ports); err != nil {
		add("relay.ports", err.Error(), `write a range such as "49152-65535"`)
	}

	for i, s := range c.Peers.Allow {
		if _, err := parsePrefix(s); err != nil {
			add(fmt.Sprintf("peers.allow[%d]", i), err.Error(), `write a CIDR such as "192.168.1.0/24"`)
		}
	}
	for i, s := range c.Peers.Deny {
		if _, err := parsePrefix(s); err != nil {
			add(fmt.Sprintf("peers.deny[%d]", i), err.Error(), `write a CIDR such as "203.0.113.0/24"`)
		}
	}

	q := c.Quotas
	for _, n := range []struct {
		key string
		v   int
	}{{"quotas.per_user", q.PerUser}, {"quotas.per_ip", q.PerIP}, {"quotas.total", q.Total}, {"quotas.auth_failures", q.AuthFailures}, {"quotas.answer_rate", q.AnswerRate},
		{"quotas.permissions", q.Permissions}, {"quotas.channels", q.Channels}, {"quotas.bytes_per_second", q.BytesPerSecond}} {
		if n.v < 0 {
			add(n.key, "is negative", "write 0 for no limit, or a positive count")
		}
	}
	if q.BytesPerSecond > 0 && q.BytesPerSecond < minBytesPerSecond {
		add("quotas.bytes_per_second", fmt.Sprintf("%d is below %d: the largest datagram could never be relayed", q.BytesPerSecond, minBytesPerSecond),
			fmt.Sprintf("write 0 for no limit, or at least %d", minBytesPerSecond))
	}
	if q.MaxLifetime < minLifetimeCap || q.MaxLifetime > maxLifetimeCap {
		add("quotas.max_lifetime", fmt.Sprintf("%v is outside %v..%v", q.MaxLifetime, minLifetimeCap, maxLifetimeCap),
			"write a duration such as 1h")
	}
	if q.AuthFailures > 0 && q.AuthFailureWindow <= 0 {
		add("quotas.auth_failure_window", "must be positive when quotas.auth_failures is set", "write a duration such as 1m")
	}
	return errors.Join(errs...)
}

// parsePorts parses "LOW-HIGH" (or a single port).
func parsePorts(s string) (lo, hi uint16, err error) {
	a, b, isRange := strings.Cut(strings.TrimSpace(s), "-")
	if !isRange {
		b = a
	}
	l, err1 := strconv.ParseUint(strings.TrimSpace(a), 10, 16)
	h, err2 := strconv.ParseUint(strings.TrimSpace(b), 10, 16)
	switch {
	case err1 != nil || err2 != nil:
		return 0, 0, fmt.Errorf("%q is not a port range LOW-HIGH", s)
	case l == 0 || l > h:
		return 0, 0, fmt.Errorf("%q: ports must satisfy 1 <= LOW <= HIGH <= 65535", s)
	}
	return uint16(l), uint16(h), nil
}

// parsePrefix accepts a CIDR or a bare address (a one-address prefix),
// canonicalised so that ::ffff:10.0.0.0/104 and 10.0.0.0/8 mean the same.
func parsePrefix(s string) (netip.Prefix, error) {
	s = strings.TrimSpace(s)
	if !strings.Contains(s, "/") {
		a, err := netip.ParseAddr(s)
		if err != nil {
			return netip.Prefix{}, fmt.Errorf("%q is not an address or CIDR", s)
		}
		a = a.Unmap()
		return netip.PrefixFrom(a, a.BitLen()), nil
	}
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("%q is not a CIDR", s)
	}
	if a := p.Addr(); a.Is4In6() && p.Bits() >= 96 {
		p = netip.PrefixFrom(a.Unmap(), p.Bits()-96)
	}
	return p.Masked(), nil
}

func validEnvName(s string) bool {
	for i, r := range s {
		if r != '_' && !(r >= 'A' && r <= 'Z') && !(r >= 'a' && r <= 'z') && !(i > 0 && r >= '0' && r <= '9') {
			return false
		}
	}
	return s != ""
}

// A TURN credential is checked on every authenticated request of a call
// (Allocate, Refresh, CreatePermission, ChannelBind), not just the first:
// a relayed call stops working soon after its credential expires.
const (
	// minCredentialTTL is refused: too short to set up a call with.
	minCredentialTTL = time.Minute
	// shortCredentialTTL is warned about: a call outliving it loses its relay at the
	// next Refresh or permission renewal (every 5 minutes at the latest).
	shortCredentialTTL = 10 * time.Minute
)

// JudgeCredentialTTL says what is wrong with a credential lifetime
// (credential_ttl here, or icebox credentials -ttl), what to use instead,
// and whether it is too short to hand out at all.
func JudgeCredentialTTL(ttl time.Duration) (why, fix string, refuse bool) {
	why = "icebox checks the credential on every TURN request of a call (allocate, refresh, permission), so a relayed call stops soon after it expires"
	switch {
	case ttl < minCredentialTTL:
		return why, fmt.Sprintf("use %v or more (1h or more for calls)", minCredentialTTL), true
	case ttl < shortCredentialTTL:
		return why, "use 1h or more unless calls are that short", false
	}
	return "", "", false
}
