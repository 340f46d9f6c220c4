package main

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha1"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pion/logging"
	"github.com/pion/turn/v4"
	"gopkg.in/yaml.v3"

	"icebox/signal"
)

// TestCredentialsCommandAllocatesOnTheDaemon runs `icebox credentials`
// against the daemon's own config and state, and allocates with what it
// printed, over UDP and TCP on the shared STUN port.
func TestCredentialsCommandAllocatesOnTheDaemon(t *testing.T) {
	cfg := testConfig(t)
	d, _ := startDaemon(t, cfg)
	port := d.stun.PacketConns()[0].LocalAddr().(*net.UDPAddr).Port

	// The command reads the same config file the daemon would.
	cfg.STUN.Listen = []string{fmt.Sprintf("127.0.0.1:%d", port)}
	body, _ := yaml.Marshal(cfg)
	cfgPath := filepath.Join(t.TempDir(), "config.yaml")
	os.WriteFile(cfgPath, body, 0o600)

	var out, errOut bytes.Buffer
	if code := run([]string{"credentials", "-config", cfgPath, "-ttl", "10m", "-user", "tv-42"}, &out, &errOut); code != 0 {
		t.Fatalf("credentials: exit %d: %s", code, errOut.String())
	}
	var servers []signal.ICEServer
	dec := json.NewDecoder(&out)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&servers); err != nil {
		t.Fatalf("credentials printed no ICE servers JSON: %v", err)
	}
	hp := fmt.Sprintf("127.0.0.1:%d", port)
	if len(servers) != 2 || servers[0].URLs[0] != "stun:"+hp ||
		strings.Join(servers[1].URLs, " ") != "turn:"+hp+"?transport=udp turn:"+hp+"?transport=tcp" {
		t.Fatalf("unexpected ICE servers %+v", servers)
	}
	cred := servers[1]
	if !strings.HasSuffix(cred.Username, ":tv-42") || strings.Contains(errOut.String(), cred.Credential) {
		t.Errorf("username %q, want <expiry>:tv-42; the secret-derived credential must not be logged", cred.Username)
	}

	for _, network := range []string{"udp", "tcp"} {
		t.Run(network, func(t *testing.T) {
			var conn net.PacketConn
			if network == "udp" {
				c, err := net.ListenPacket("udp4", "127.0.0.1:0")
				if err != nil {
					t.Fatal(err)
				}
				conn = c
			} else {
				c, err := net.DialTimeout("tcp4", hp, 5*time.Second)
				if err != nil {
					t.Fatal(err)
				}
				conn = turn.NewSTUNConn(c)
			}
			defer conn.Close()
			client, err := turn.NewClient(&turn.ClientConfig{
				STUNServerAddr: hp, TURNServerAddr: hp, Conn: conn,
				Username: cred.Username, Password: cred.Credential,
				LoggerFactory: logging.NewDefaultLoggerFactory(),
			})
			if err != nil {
				t.Fatal(err)
			}
			defer client.Close()
			if err := client.Listen(); err != nil {
				t.Fatal(err)
			}
			// A Binding on the shared socket still gets stunsrv's answer.
			mapped, err := client.SendBindingRequest()
			if err != nil {
				t.Fatalf("binding through the shared port: %v", err)
			}
			relay, err := client.Allocate()
			if err != nil {
				t.Fatalf("allocate with icebox credentials: %v", err)
			}
			defer relay.Close()
			if ra := relay.LocalAddr().(*net.UDPAddr); !ra.IP.Equal(net.IPv4(127, 0, 0, 1)) {
				t.Errorf("relayed address %v, want public_ip 127.0.0.1", ra)
			}
			t.Logf("mapped %v, relayed %v", mapped, relay.LocalAddr())
		})
	}
}

// expectedPassword is the TURN REST password for username: what a
// client's credential must equal.
func expectedPassword(secret []byte, username string) string {
	mac := hmac.New(sha1.New, secret)
	mac.Write([]byte(username))
	return base64.StdEncoding.EncodeToString(mac.Sum(nil))
}
