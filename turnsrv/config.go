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
)

// Config is the turn: section of icebox's configuration. Every field's
// comment states the value DefaultConfig gives it. Secrets, credential
// lifetimes, peer policy, quotas and the TLS certificate files can change on
// Reload; the rest needs a restart.
type Config struct {
	// Enabled runs the TURN relay beside STUN. Default true.
	Enabled bool `yaml:"enabled"`

	// Realm is the long-term-credential realm announced to clients.
	// Default "icebox". Restart to change.
	Realm string `yaml:"realm"`

	// Secrets are TURN REST API shared secrets (coturn's static-auth-secret).
	// The first mints new credentials; all of them verify, so a secret is
	// rotated by prepending the new one and dropping the old one once the
	// credentials it minted have expired. Default none.
	Secrets []string `yaml:"secrets"`

	// SecretFile names a file holding secrets, one per line ('#' starts a
	// comment), appended after Secrets. Keeps secrets out of the config.
	// Default "" (none).
	SecretFile string `yaml:"secret_file"`

	// SecretEnv names an environment variable holding one more secret,
	// appended after SecretFile's. Default "" (none).
	//
	// With no secret from any of the three sources icebox generates one on
	// first start and keeps it in its state directory.
	SecretEnv string `yaml:"secret_env"`

	// CredentialTTL is the lifetime of credentials icebox mints.
	// Default 12h. Credentials are checked on every authenticated request
	// (refresh, permission, channel bind), so it bounds how long a call that
	// started with a credential can last without getting a new one.
	CredentialTTL time.Duration `yaml:"credential_ttl"`

	// MaxTTL refuses usernames whose expiry lies further ahead than this,
	// so a credential minted with a far-future expiry cannot outlive a
	// rotation. Default 24h; at least CredentialTTL.
	MaxTTL time.Duration `yaml:"max_ttl"`

	// TLS serves TURN over TLS (turns:) when Cert and Key are set.
	TLS TLSConfig `yaml:"tls"`

	// Relay says where relayed transport addresses live.
	Relay RelayConfig `yaml:"relay"`

	// Peers is the peer policy: which addresses a client may relay to.
	Peers PeerConfig `yaml:"peers"`

	// Quotas bound what one user, one source address and everyone together
	// may hold on the server.
	Quotas QuotaConfig `yaml:"quotas"`
}

// TLSConfig configures TURN over TLS.
type TLSConfig struct {
	// Listen is the TLS listen address, used when there is a certificate
	// (Cert, or icebox's shared tls section). Default ":5349"; "" serves
	// no TLS port of its own. Restart to change.
	Listen string `yaml:"listen"`
	// Cert is a PEM certificate chain file. Default "": the shared one
	// (icebox's tls section), if any. Re-read when it changes.
	Cert string `yaml:"cert"`
	// Key is the PEM private key file for Cert. Default "".
	Key string `yaml:"key"`
}

// RelayConfig configures relayed transport addresses. Restart to change.
type RelayConfig struct {
	// Address is the IPv4 address relay sockets bind to. Default "0.0.0.0".
	// What clients are told is the public IP given to New, not this.
	Address string `yaml:"address"`
	// Ports is the inclusive UDP port range for relays, "LOW-HIGH".
	// Default "49152-65535".
	Ports string `yaml:"ports"`
}

// PeerConfig adjusts the built-in peer policy, which refuses loopback,
// private, link-local, multicast, reserved and documentation ranges and the
// server's own addresses.
type PeerConfig struct {
	// Allow lists CIDRs (or single addresses) opened on purpose, e.g. a LAN
	// in a LAN deployment or 127.0.0.1/32 in tests. It wins over every deny
	// rule except Teredo. Default none.
	Allow []string `yaml:"allow"`
	// Deny lists more CIDRs (or single addresses) to refuse. Default none.
	Deny []string `yaml:"deny"`
}

// QuotaConfig bounds resource use. A count of 0 means no limit.
type QuotaConfig struct {
	// PerUser caps allocations per user, the part of the username after the
	// first ':': for icebox's own credentials, one pairing (both members) or
	// one address. Default 24: a browser allocates once per TURN URL (UDP,
	// TCP, TLS) and local interface, and a renegotiation allocates again
	// before the old ones are released, so one call can hold a dozen or more.
	PerUser int `yaml:"per_user"`
	// PerIP caps allocations per client address (per /64 for IPv6).
	// Default 32: a household or office behind one NAT shares it.
	PerIP int `yaml:"per_ip"`
	// Total caps allocations on the server. Default 1000, which a small VM
	// holds comfortably; relay bandwidth runs out long before.
	Total int `yaml:"total"`
	// MaxLifetime caps the lifetime a client may ask for in Allocate and
	// Refresh. Default 1h; between 10m (what a client gets when it asks for
	// nothing) and 1h (what pion/turn grants at most).
	MaxLifetime time.Duration `yaml:"max_lifetime"`
	// AuthFailures is how many failed authentications one client address
	// (per /64 for IPv6) may make over TCP or TLS per AuthFailureWindow
	// before its further failures are dropped unanswered. UDP failures do
	// not count (their source can be forged), and a request that verifies
	// is never dropped. Default 10.
	AuthFailures int `yaml:"auth_failures"`
	// AuthFailureWindow is the window for AuthFailures. It is also how
	// often, at most, a failure from one address is logged. Default 1m.
	AuthFailureWindow time.Duration `yaml:"auth_failure_window"`
	// AnswerRate is how many requests without a credential (the first,
	// unsigned Allocate; one signed without a NONCE) one client address
	// (per /64 for IPv6) gets answered per second, in bursts of twice
	// that; the rest are dropped, so icebox cannot be used to reflect
	// traffic at a forged source. A client needs one such answer per
	// allocation. Default 32; 0 means no limit.
	AnswerRate int `yaml:"answer_rate"`
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

// minSecretLen keeps secrets out of reach of an offline guess from one
// captured credential.
const minSecretLen = 16

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
		if len(s) < minSecretLen {
			// Never echo the secret itself.
			add(fmt.Sprintf("secrets[%d]", i), fmt.Sprintf("is shorter than %d characters", minSecretLen),
				"generate one with `openssl rand -base64 32`")
		}
	}
	if c.SecretEnv != "" && !validEnvName(c.SecretEnv) {
		add("secret_env", fmt.Sprintf("%q is not an environment variable name", c.SecretEnv),
			"write a name such as ICEBOX_TURN_SECRET")
	}
	if c.CredentialTTL <= 0 {
		add("credential_ttl", "must be positive", "write a duration such as 12h")
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
	}{{"quotas.per_user", q.PerUser}, {"quotas.per_ip", q.PerIP}, {"quotas.total", q.Total}, {"quotas.auth_failures", q.AuthFailures}, {"quotas.answer_rate", q.AnswerRate}} {
		if n.v < 0 {
			add(n.key, "is negative", "write 0 for no limit, or a positive count")
		}
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
