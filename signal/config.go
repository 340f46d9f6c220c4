package signal

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"

	"icebox/internal/cfgerr"
)

// Config is the signal section of icebox's configuration file.
type Config struct {
	Enabled bool   `yaml:"enabled"` // default true
	Listen  string `yaml:"listen"`  // default ":8080"

	// TLS is on when both files are set; the files are re-read when they
	// change, so a renewed certificate needs no restart. Default off.
	TLS TLSConfig `yaml:"tls"`

	// AllowedOrigins lists the browser origins ("https://app.example.com")
	// that may connect; "*" allows any. A request without an Origin header
	// (native apps) is always allowed. Default empty: same host only.
	AllowedOrigins []string `yaml:"allowed_origins"`

	// RequireToken turns away connections without a valid join token.
	// Default false.
	RequireToken bool `yaml:"require_token"`

	// OpenRoom puts connections that name no pairing into one shared room,
	// the talk's server behaviour. Default false.
	OpenRoom bool `yaml:"open_room"`
	// OpenRoomCapacity caps the open room's members. Default 50.
	OpenRoomCapacity int `yaml:"open_room_capacity"`
	// OpenRoomFanout is the bytes per second one member of the open room
	// may cause to be sent (frame size × other members), in bursts of 4
	// seconds' worth; frames beyond get WsError 4004. Default 262144.
	OpenRoomFanout int `yaml:"open_room_fanout"`

	RoomCapacity int           `yaml:"room_capacity"` // members per pairing; default 2
	InitTimeout  time.Duration `yaml:"init_timeout"`  // WsInit must arrive within; default 10s

	MaxFrameSize    int     `yaml:"max_frame_size"`    // bytes per frame; default 65536
	FramesPerSecond float64 `yaml:"frames_per_second"` // sustained frames/s per connection; default 20
	FrameBurst      int     `yaml:"frame_burst"`       // frames allowed at once; default 60
	MaxErrors       int     `yaml:"max_errors"`        // refused frames before close 1008; default 10

	MaxConns      int `yaml:"max_conns"`        // WebSockets in total; default 10000
	MaxConnsPerIP int `yaml:"max_conns_per_ip"` // per IPv4 address or IPv6 /64; default 64

	SendQueue      int           `yaml:"send_queue"`       // frames waiting for a slow reader; default 64
	SendQueueBytes int           `yaml:"send_queue_bytes"` // bytes waiting for a slow reader; default 1048576
	WriteTimeout   time.Duration `yaml:"write_timeout"`    // one write to a client; default 10s
	PingInterval   time.Duration `yaml:"ping_interval"`    // WebSocket ping period; default 15s
	PongTimeout    time.Duration `yaml:"pong_timeout"`     // silence allowed after a ping; default 15s

	// CredentialRefresh is how long before the TURN credentials expire a
	// connection gets a new WsIceServers frame. Default 5m.
	CredentialRefresh time.Duration `yaml:"credential_refresh"`

	// CredentialsPerMinute is how many TURN credentials one source (IPv4
	// address or IPv6 /64) may have minted, at WsInit or GET /ice-servers,
	// per minute sustained, in bursts of CredentialBurst; beyond, WsInit
	// gets WsError 4016 and /ice-servers 429. Refreshes are not counted.
	// Defaults 60 and 128.
	CredentialsPerMinute float64 `yaml:"credentials_per_minute"`
	CredentialBurst      int     `yaml:"credential_burst"`

	// IceServersKeys are the bearer keys accepted by GET /ice-servers.
	// Default empty: the endpoint answers 404.
	IceServersKeys []string `yaml:"ice_servers_keys"`

	// Web serves the embedded call page at / and the diagnostics page at
	// /check on the same listener. Default true, so the first run shows
	// something; turn it off where only apps connect.
	Web bool `yaml:"web"`
}

// TLSConfig names the certificate and key files, both PEM.
type TLSConfig struct {
	Cert string `yaml:"cert"` // default ""
	Key  string `yaml:"key"`  // default ""
}

// On reports whether TLS is configured.
func (t TLSConfig) On() bool { return t.Cert != "" && t.Key != "" }

// DefaultConfig returns the configuration used for keys the file leaves out.
func DefaultConfig() Config {
	return Config{
		Enabled:           true,
		Web:               true,
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
	positive("room_capacity", c.RoomCapacity, 2, 1000, "members")
	positive("open_room_capacity", c.OpenRoomCapacity, 2, 100000, "members")
	positive("open_room_fanout", c.OpenRoomFanout, 1024, 1<<30, "bytes per second")
	positive("max_frame_size", c.MaxFrameSize, 1024, 16<<20, "bytes")
	positive("frame_burst", c.FrameBurst, 1, 100000, "frames")
	positive("max_errors", c.MaxErrors, 1, 100000, "refused frames")
	positive("max_conns", c.MaxConns, 1, 10000000, "connections")
	positive("max_conns_per_ip", c.MaxConnsPerIP, 1, 10000000, "connections")
	positive("credential_burst", c.CredentialBurst, 1, 10000000, "credentials")
	positive("send_queue", c.SendQueue, 1, 100000, "frames")
	if c.SendQueueBytes < c.MaxFrameSize {
		add("send_queue_bytes", fmt.Sprintf("%d is smaller than max_frame_size (%d)", c.SendQueueBytes, c.MaxFrameSize), "use at least max_frame_size bytes")
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
