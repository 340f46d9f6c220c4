package signal

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"time"

	"icebox/internal/cfgerr"
)

// Config is the signal section of icebox's configuration file.
type Config struct {
	// Serve signaling. Default true.
	Enabled bool `yaml:"enabled"`
	// Where signaling listens (HTTP, or HTTPS with tls below).
	// Default ":8080".
	Listen string `yaml:"listen"`

	// wss:// and https:// when both files are set, or when the shared tls
	// section has a certificate; the files are re-read when they change,
	// so a renewed certificate needs no restart.
	TLS TLSConfig `yaml:"tls"`

	// Browser origins allowed to connect ("https://app.example.com"; "*"
	// for any). Native apps send no Origin and are always allowed.
	// Default none: the same host only.
	AllowedOrigins []string `yaml:"allowed_origins"`

	// Reverse proxies in front of signaling (nginx, Caddy, a load
	// balancer), as addresses or CIDR prefixes. A request from one of
	// them counts against the client its X-Forwarded-For names (the
	// right-most address there that is not a trusted proxy), so the
	// per-address limits and budgets apply to clients rather than to the
	// proxy, whose own connections count only against max_conns. List
	// only proxies that terminate HTTP and append to X-Forwarded-For,
	// never a TCP or TLS pass-through balancer: through one, the header
	// is the client's own. Default none: X-Forwarded-For is ignored, as
	// anyone can write it.
	TrustedProxies []string `yaml:"trusted_proxies"`

	// Only connections with a valid join token (icebox token -room R) get
	// in. Default false.
	RequireToken bool `yaml:"require_token"`

	// Connections that name no pairing share one room, as on the talk's
	// server. Off: such a client waits until a frame names its pairing.
	// Default false.
	OpenRoom bool `yaml:"open_room"`
	// Members of the open room at most. Default 50.
	OpenRoomCapacity int `yaml:"open_room_capacity"`
	// The bytes per second one member of the open room may make icebox
	// send to the others (frame size × other members; bursts of 4 s worth;
	// beyond, WsError 4004): the open room copies each frame to everyone,
	// so without it one member's burst goes out a thousandfold.
	// Default 262144.
	OpenRoomFanout int `yaml:"open_room_fanout"`

	// Members per pairing: a controller and its device. Default 2.
	RoomCapacity int `yaml:"room_capacity"`
	// The first frame (WsInit) must arrive within this; mobile networks
	// are slow. Default 10s.
	InitTimeout time.Duration `yaml:"init_timeout"`

	// Largest frame in bytes; an SDP is a few KiB. Default 65536.
	MaxFrameSize int `yaml:"max_frame_size"`
	// Frames per second per connection, sustained; WebSocket pings count
	// as frames. Default 20.
	FramesPerSecond float64 `yaml:"frames_per_second"`
	// Frames per connection in a burst. Default 60.
	FrameBurst int `yaml:"frame_burst"`
	// Refused frames before a client is closed with 1008. Default 10.
	MaxErrors int `yaml:"max_errors"`

	// WebSockets in total. Once it is half full, an address holding any
	// may hold at most an eighth of what is free (fair share), so a
	// newcomer still gets in. TCP connections not (yet) upgraded, such as
	// page loads and handshakes, are bounded the same way, counted apart.
	// Default 10000.
	MaxConns int `yaml:"max_conns"`
	// WebSockets per IPv4 address or IPv6 /64. Connections not yet
	// upgraded may number 8 more, a browser's page connections. Default
	// 64.
	MaxConnsPerIP int `yaml:"max_conns_per_ip"`

	// Frames that may wait for a slow reader before it is disconnected;
	// it never holds up the other members of its pairing. A pairing keeps
	// up to half of it, at most 64 frames, for a member who joins late, so
	// at least 4: the greeting, WsPresence and two kept frames. Default 64.
	SendQueue int `yaml:"send_queue"`
	// Bytes that may wait for a slow reader, at most 64 MiB. At least
	// twice max_frame_size: a full-size frame must fit beside what is
	// queued already, and a pairing keeps up to half of it (at most
	// 256 KiB) for a member who joins late. Default 1048576.
	SendQueueBytes int `yaml:"send_queue_bytes"`
	// One write to a client may take this long. Default 10s.
	WriteTimeout time.Duration `yaml:"write_timeout"`
	// WebSocket ping period (the talk's server uses 15s). Default 15s.
	PingInterval time.Duration `yaml:"ping_interval"`
	// Silence allowed after a ping (the talk's server uses 15s).
	// Default 15s.
	PongTimeout time.Duration `yaml:"pong_timeout"`

	// Re-send WsIceServers this long before the TURN credentials expire.
	// Default 5m.
	CredentialRefresh time.Duration `yaml:"credential_refresh"`

	// TURN credentials one address (IPv4, or IPv6 /64) may have minted, at
	// WsInit and GET /ice-servers together, per minute sustained. A real
	// client mints once per connection (a page load, an app reconnecting
	// after a network change: a few a minute), and its refreshes are paced
	// by the server and not counted. Beyond, WsInit gets WsError 4016
	// (close 1013) and /ice-servers 429 with Retry-After. Without a budget
	// one address minted 1,837 in 5 s. A backend fetching /ice-servers for
	// many users from one address may need more. Default 60.
	CredentialsPerMinute float64 `yaml:"credentials_per_minute"`
	// Credentials one address may have minted at once: enough for every
	// connection max_conns_per_ip allows to reconnect at once, twice.
	// Default 128.
	CredentialBurst int `yaml:"credential_burst"`

	// Bearer keys for GET /ice-servers (apps with their own signaling),
	// 16+ characters each. Default none: the endpoint answers 404.
	IceServersKeys []string `yaml:"ice_servers_keys"`
}

// TLSConfig names the certificate and key files, both PEM.
type TLSConfig struct {
	// PEM certificate chain file. Default "": the shared tls section's
	// certificate, if any.
	Cert string `yaml:"cert"`
	// PEM private key file; under systemd it may be
	// ${CREDENTIALS_DIRECTORY}/icebox.signal-tls.key (a systemd
	// credential, see README). Default "".
	Key string `yaml:"key"`
}

// On reports whether TLS is configured.
func (t TLSConfig) On() bool { return t.Cert != "" && t.Key != "" }

// DefaultConfig returns the configuration used for keys the file leaves out.
func DefaultConfig() Config {
	return Config{
		Enabled:           true,
		Listen:            ":8080",
		RoomCapacity:      2,
		OpenRoomCapacity:  50,
		OpenRoomFanout:    256 << 10,
		InitTimeout:       10 * time.Second,
		MaxFrameSize:      64 << 10,
		FramesPerSecond:   20,
		FrameBurst:        60,
		MaxErrors:         10,
		MaxConns:          10000,
		MaxConnsPerIP:     64,
		SendQueue:         64,
		SendQueueBytes:    1 << 20,
		WriteTimeout:      10 * time.Second,
		PingInterval:      15 * time.Second,
		PongTimeout:       15 * time.Second,
		CredentialRefresh: 5 * time.Minute,

		CredentialsPerMinute: 60,
		CredentialBurst:      128,
	}
}

// minKeyLen keeps /ice-servers bearer keys out of guessing range.
const minKeyLen = 16

// maxSendQueueBytes bounds send_queue_bytes: what one slow reader may
// make the server hold.
const maxSendQueueBytes = 64 << 20

// Validate reports every invalid option at once, keyed relative to the
// signal section.
func (c *Config) Validate() error {
	var errs []error
	add := func(key, problem, fix string) { errs = append(errs, cfgerr.New(key, problem, fix)) }

	if err := checkListen(c.Listen); err != nil {
		add("listen", err.Error(), `write host:port, e.g. ":8080" or "127.0.0.1:8080"`)
	}
	if (c.TLS.Cert == "") != (c.TLS.Key == "") {
		add("tls", "only one of cert and key is set", "set both cert and key, or neither")
	}
	for i, o := range c.AllowedOrigins {
		if _, err := normOrigin(o); err != nil {
			add(fmt.Sprintf("allowed_origins[%d]", i), err.Error(), `write scheme://host[:port], e.g. "https://app.example.com", or "*"`)
		}
	}
	positive := func(key string, v, lo, hi int, unit string) {
		if v < lo || v > hi {
			add(key, fmt.Sprintf("%d is out of range", v), fmt.Sprintf("use %d to %d %s", lo, hi, unit))
		}
	}
	for i, p := range c.TrustedProxies {
		if _, err := parseProxy(p); err != nil {
			add(fmt.Sprintf("trusted_proxies[%d]", i), err.Error(), `an address or a CIDR prefix, e.g. "10.0.0.5" or "10.0.0.0/24"`)
		}
	}
	positive("room_capacity", c.RoomCapacity, 2, 1000, "members")
	positive("open_room_capacity", c.OpenRoomCapacity, 2, 100000, "members")
	positive("open_room_fanout", c.OpenRoomFanout, 1024, 1<<30, "bytes per second")
	positive("max_frame_size", c.MaxFrameSize, 1024, 16<<20, "bytes")
	positive("frame_burst", c.FrameBurst, 1, 100000, "frames")
	positive("max_errors", c.MaxErrors, 1, 100000, "refused frames")
	positive("max_conns", c.MaxConns, 1, 10000000, "connections")
	positive("max_conns_per_ip", c.MaxConnsPerIP, 1, 10000000, "connections")
	positive("credential_burst", c.CredentialBurst, 1, 10000000, "credentials")
	positive("send_queue", c.SendQueue, 4, 100000, "frames")
	// A frame of max_frame_size must fit the queue beside what is already
	// queued (a full-size offer behind the greeting and a candidate must
	// not cut the receiver off as slow), and one that may be kept for a
	// late joiner (backlogLimits: half the queue, at most maxBacklogBytes)
	// must fit what is kept: twice max_frame_size covers both.
	minQueue := 2 * c.MaxFrameSize
	switch {
	case c.SendQueueBytes < minQueue:
		add("send_queue_bytes", fmt.Sprintf("%d is too small for max_frame_size (%d): a frame that large could not be queued beside others, or kept for a late joiner (kept: half of send_queue_bytes, at most %d)", c.SendQueueBytes, c.MaxFrameSize, maxBacklogBytes),
			fmt.Sprintf("use at least %d bytes, or a smaller max_frame_size", minQueue))
	case c.SendQueueBytes > maxSendQueueBytes:
		add("send_queue_bytes", fmt.Sprintf("%d is more than %d", c.SendQueueBytes, maxSendQueueBytes),
			fmt.Sprintf("use at most %d bytes: each slow reader may hold that much", maxSendQueueBytes))
	}
	if !(c.FramesPerSecond > 0 && c.FramesPerSecond <= 1e6) {
		add("frames_per_second", fmt.Sprintf("%g is out of range", c.FramesPerSecond), "use a number above 0, e.g. 20")
	}
	if !(c.CredentialsPerMinute > 0 && c.CredentialsPerMinute <= 1e7) {
		add("credentials_per_minute", fmt.Sprintf("%g is out of range", c.CredentialsPerMinute), "use a number above 0, e.g. 60")
	}
	duration := func(key string, d, lo, hi time.Duration) {
		if d < lo || d > hi {
			add(key, fmt.Sprintf("%s is out of range", d), fmt.Sprintf("use %s to %s", lo, hi))
		}
	}
	duration("init_timeout", c.InitTimeout, 100*time.Millisecond, 10*time.Minute)
	duration("write_timeout", c.WriteTimeout, 100*time.Millisecond, 10*time.Minute)
	duration("ping_interval", c.PingInterval, 100*time.Millisecond, time.Hour)
	duration("pong_timeout", c.PongTimeout, 100*time.Millisecond, time.Hour)
	duration("credential_refresh", c.CredentialRefresh, 0, 24*time.Hour)
	for i, k := range c.IceServersKeys {
		if len(k) < minKeyLen {
			add(fmt.Sprintf("ice_servers_keys[%d]", i), fmt.Sprintf("key is %d characters, too short to keep out guessing", len(k)),
				fmt.Sprintf("use at least %d random characters, e.g. from `openssl rand -hex 16`", minKeyLen))
		}
	}
	return errors.Join(errs...)
}

func checkListen(addr string) error {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("%q is not host:port", addr)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		return fmt.Errorf("port %q is not a number from 0 to 65535", port)
	}
	return nil
}

// normOrigin returns origin as browsers send it in the Origin header:
// lower-case scheme://host[:port], no path. "*" stays "*".
func normOrigin(origin string) (string, error) {
	if origin == "*" {
		return origin, nil
	}
	u, err := url.Parse(origin)
	if err != nil || u.Scheme == "" || u.Host == "" {
		return "", fmt.Errorf("%q is not an origin", origin)
	}
	if (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" || u.User != nil {
		return "", fmt.Errorf("%q has more than scheme://host[:port]", origin)
	}
	return strings.ToLower(u.Scheme + "://" + u.Host), nil
}

// parseProxy reads one trusted_proxies entry: an address stands for
// itself alone.
func parseProxy(s string) (netip.Prefix, error) {
	if a, err := netip.ParseAddr(s); err == nil {
		a = a.Unmap()
		return netip.PrefixFrom(a, a.BitLen()), nil
	}
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("%q is neither an address nor a CIDR prefix", s)
	}
	if p.Addr().Is4In6() {
		return netip.Prefix{}, fmt.Errorf("%q: write an IPv4 prefix in IPv4 form", s)
	}
	return p.Masked(), nil
}
