package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"gopkg.in/yaml.v3"

	"icebox/signal"
)

// writeTestConfig saves cfg where the subcommands can read it.
func writeTestConfig(t *testing.T, cfg Config) string {
	t.Helper()
	body, err := yaml.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(path, body, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// wsInit connects like the talk's app and returns the WsIceServers data.
func wsInit(t *testing.T, d *daemon, query string) (*websocket.Conn, []signal.ICEServer) {
	t.Helper()
	return wsInitAt(t, websocket.DefaultDialer, "ws://"+d.signal.addr()+"/connect"+query)
}

// wsInitAt connects to url as the app does and returns the ICE servers
// WsInit got.
func wsInitAt(t *testing.T, dialer *websocket.Dialer, url string) (*websocket.Conn, []signal.ICEServer) {
	t.Helper()
	c, _, err := dialer.Dial(url, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if err := c.WriteMessage(websocket.TextMessage, []byte(`{"id":"WsInit","data":""}`)); err != nil {
		t.Fatal(err)
	}
	var frame struct{ ID, Data string }
	if err := c.ReadJSON(&frame); err != nil {
		t.Fatal(err)
	}
	if frame.ID != "WsIceServers" {
		t.Fatalf("answer to WsInit: %+v", frame)
	}
	var data struct{ IceServers []signal.ICEServer }
	dec := json.NewDecoder(strings.NewReader(frame.Data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&data); err != nil {
		t.Fatal(err)
	}
	return c, data.IceServers
}

// TestWsIceServersAreIceboxOwn: the app gets icebox's own STUN and TURN,
// with a credential the TURN secret verifies.
func TestWsIceServersAreIceboxOwn(t *testing.T) {
	cfg := testConfig(t)
	d, _ := startDaemon(t, cfg)
	_, servers := wsInit(t, d, "?controllerId=tv-42")
	port := d.stun.PacketConns()[0].LocalAddr().(*net.UDPAddr).Port
	hp := fmt.Sprintf("127.0.0.1:%d", port)
	if len(servers) != 2 || servers[0].URLs[0] != "stun:"+hp || servers[1].URLs[0] != "turn:"+hp+"?transport=udp" {
		t.Fatalf("ICE servers %+v, want icebox's own on %s", servers, hp)
	}
	if got, want := servers[1].Credential, expectedPassword(d.turn.Secrets()[0], servers[1].Username); got != want {
		t.Errorf("credential does not verify with the TURN secret")
	}
}

func TestTokenCommand(t *testing.T) {
	cfg := testConfig(t)
	cfg.Signal.RequireToken = true
	d, _ := startDaemon(t, cfg)
	path := writeTestConfig(t, cfg)
	var out, errOut bytes.Buffer
	if code := run([]string{"token", "-config", path, "-room", "tv-42", "-ttl", "5m"}, &out, &errOut); code != 0 {
		t.Fatalf("token: %d %s", code, errOut.String())
	}
	token := strings.TrimSpace(out.String())
	if err := signal.VerifyToken(d.turn.Secrets(), "tv-42", token, time.Now()); err != nil {
		t.Fatalf("daemon's secret does not verify the minted token: %v", err)
	}
	// With require_token, the token gets the app in, and nothing else does.
	wsInit(t, d, "?controllerId=tv-42&token="+token)
	// A token for tv-42 must not open tv-43: WsError 4006, then close 1008.
	c, _, err := websocket.DefaultDialer.Dial("ws://"+d.signal.addr()+"/connect?controllerId=tv-43&token="+token, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	c.WriteMessage(websocket.TextMessage, []byte(`{"id":"WsInit","data":""}`))
	var frame struct{ ID, Data string }
	if err := c.ReadJSON(&frame); err != nil {
		t.Fatalf("no answer for a token of another room: %v", err)
	}
	if frame.ID != "WsError" || !strings.Contains(frame.Data, `"code":4006`) {
		t.Errorf("token for tv-42 in tv-43 got %+v, want WsError 4006", frame)
	}
	_, _, err = c.ReadMessage()
	var ce *websocket.CloseError
	if !errors.As(err, &ce) || ce.Code != websocket.ClosePolicyViolation {
		t.Errorf("after the refusal: %v, want close 1008", err)
	}
}
