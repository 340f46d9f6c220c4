package signal

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"icebox/internal/cfgerr"
)

func TestDefaultConfigValid(t *testing.T) {
	cfg := DefaultConfig()
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
}

// TestConfigYAML: the section decodes over the defaults, durations in
// Go's notation.
func TestConfigYAML(t *testing.T) {
	cfg := DefaultConfig()
	doc := `
listen: "127.0.0.1:9000"
tls: {cert: /etc/icebox/cert.pem, key: /etc/icebox/key.pem}
allowed_origins: ["https://app.example.com"]
require_token: true
init_timeout: 30s
ping_interval: 20s
ice_servers_keys: ["0123456789abcdef0123"]
`
	if err := yaml.Unmarshal([]byte(doc), &cfg); err != nil {
		t.Fatal(err)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	if cfg.Listen != "127.0.0.1:9000" || !cfg.TLS.On() || cfg.InitTimeout != 30*time.Second ||
		cfg.PingInterval != 20*time.Second || cfg.PongTimeout != 15*time.Second || !cfg.Enabled ||
		cfg.RoomCapacity != 2 || !cfg.RequireToken {
		t.Fatalf("decoded %+v", cfg)
	}
}

// TestConfigValidate: each mistake is reported under its own key, all at
// once.
func TestConfigValidate(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Listen = "8080"
	cfg.TLS.Cert = "cert.pem"
	cfg.AllowedOrigins = []string{"https://ok.example.com", "app.example.com"}
	cfg.RoomCapacity = 1
	cfg.InitTimeout = 0
	cfg.MaxFrameSize = 10
	cfg.FramesPerSecond = 0
	cfg.SendQueue = 3
	cfg.SendQueueBytes = 15
	cfg.TrustedProxies = []string{"10.0.0.0/24", "10.0.0.0/33"}
	cfg.PingInterval = 15 // nanoseconds: "15" without a unit
	cfg.IceServersKeys = []string{"short"}
	err := cfg.Validate()
	var keys []string
	for _, e := range err.(interface{ Unwrap() []error }).Unwrap() {
		var ce *cfgerr.Error
		if !errors.As(e, &ce) || ce.Fix == "" {
			t.Errorf("%v is not a cfgerr.Error with a fix", e)
			continue
		}
		keys = append(keys, ce.Key)
	}
	want := []string{"listen", "tls", "allowed_origins[1]", "room_capacity", "max_frame_size", "send_queue",
		"send_queue_bytes", "trusted_proxies[1]", "frames_per_second", "init_timeout", "ping_interval", "ice_servers_keys[0]"}
	slices.Sort(keys)
	slices.Sort(want)
	if !slices.Equal(keys, want) {
		t.Fatalf("keys %v, want %v\n%v", keys, want, err)
	}
	if in := cfgerr.In("signal", err); !strings.Contains(in.Error(), "signal.allowed_origins[1]") {
		t.Fatalf("cfgerr.In: %v", in)
	}
}

func TestNormOrigin(t *testing.T) {
	for in, want := range map[string]string{
		"https://App.Example.com":      "https://app.example.com",
		"http://localhost:8080/":       "http://localhost:8080",
		"*":                            "*",
		"app.example.com":              "",
		"https://app.example.com/path": "",
	} {
		got, err := normOrigin(in)
		if (err != nil) != (want == "") || got != want {
			t.Errorf("normOrigin(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
}

// TestSendQueueBytesBounds: send_queue_bytes must hold a frame of
// max_frame_size, and half of it, capped at maxBacklogBytes, must hold
// one kept for a late joiner when such a frame can be kept at all; it
// has an upper bound. Before, Validate asked for twice max_frame_size
// whatever its size, which above 256 KiB did not make a frame keepable,
// and had no upper bound.
func TestSendQueueBytesBounds(t *testing.T) {
	for _, tc := range []struct {
		frame, queue int
		ok           bool
	}{
		{64 << 10, 128 << 10, true},
		{64 << 10, 128<<10 - 1, false}, // an offer of 64 KiB could not be kept
		{256 << 10, 512 << 10, true},
		{256 << 10, 512<<10 - 1, false},
		{1 << 20, 2 << 20, true},      // a full-size frame fits beside what is queued already
		{1 << 20, 1 << 20, false},     // it would cut off a receiver with a candidate queued
		{64 << 10, 64 << 20, true},    // the upper bound
		{64 << 10, 64<<20 + 1, false}, // over it
	} {
		cfg := DefaultConfig()
		cfg.MaxFrameSize, cfg.SendQueueBytes = tc.frame, tc.queue
		err := cfg.Validate()
		var ce *cfgerr.Error
		switch {
		case tc.ok && err != nil:
			t.Errorf("max_frame_size %d, send_queue_bytes %d: %v", tc.frame, tc.queue, err)
		case !tc.ok && (!errors.As(err, &ce) || ce.Key != "send_queue_bytes"):
			t.Errorf("max_frame_size %d, send_queue_bytes %d: %v, want a send_queue_bytes error", tc.frame, tc.queue, err)
		}
	}
}
