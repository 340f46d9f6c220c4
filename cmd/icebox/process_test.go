package main

import (
	"bufio"
	"crypto/tls"
	"encoding/json"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/pion/logging"
	"github.com/pion/turn/v4"
	"gopkg.in/yaml.v3"

	"icebox/internal/credentials"
	"icebox/internal/testenv"
)

// proc is icebox running as a real process, its JSON log read line by line.
type proc struct {
	t     *testing.T
	cmd   *exec.Cmd
	lines chan map[string]any
	exit  chan error
	cfg   string
}

func startProcess(t *testing.T, cfg Config) *proc {
	t.Helper()
	cfg.Log.Format = "json"
	p := &proc{t: t, lines: make(chan map[string]any, 256), exit: make(chan error, 1), cfg: filepath.Join(t.TempDir(), "config.yaml")}
	p.writeConfig(cfg)
	p.cmd = exec.Command(testenv.IceboxBinary(t), "-config", p.cfg)
	stderr, err := p.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			var line map[string]any
			if json.Unmarshal(sc.Bytes(), &line) == nil {
				p.lines <- line
			} else {
				t.Logf("icebox: %s", sc.Text())
			}
		}
		close(p.lines)
	})
	go func() { wg.Wait(); p.exit <- p.cmd.Wait() }()
	t.Cleanup(func() { p.cmd.Process.Kill() })
	return p
}

func (p *proc) writeConfig(cfg Config) {
	cfg.Log.Format = "json"
	body, err := yaml.Marshal(cfg)
	if err != nil {
		p.t.Fatal(err)
	}
	if err := os.WriteFile(p.cfg, body, 0o600); err != nil {
		p.t.Fatal(err)
	}
}

// waitLog returns the first log line whose msg is msg, failing on exit or
// after a deadline that only guards against hanging.
func (p *proc) waitLog(msg string) map[string]any {
	p.t.Helper()
	deadline := time.After(20 * time.Second)
	for {
		select {
		case line, ok := <-p.lines:
			if !ok {
				p.t.Fatalf("icebox exited before logging %q", msg)
			}
			if line["level"] == "ERROR" || line["level"] == "WARN" {
				p.t.Logf("icebox %v: %v %v", line["level"], line["msg"], line["err"])
			}
			if line["msg"] == msg {
				return line
			}
		case <-deadline:
			p.t.Fatalf("icebox did not log %q", msg)
		}
	}
}

func allocate(t *testing.T, server, user, pass string) (*turn.Client, net.PacketConn, error) {
	t.Helper()
	conn, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return allocateOn(t, conn, server, user, pass)
}

// allocateOn allocates a relay with pion's client speaking over conn.
func allocateOn(t *testing.T, conn net.PacketConn, server, user, pass string) (*turn.Client, net.PacketConn, error) {
	t.Helper()
	c, err := turn.NewClient(&turn.ClientConfig{
		STUNServerAddr: server, TURNServerAddr: server, Conn: conn,
		Username: user, Password: pass, LoggerFactory: logging.NewDefaultLoggerFactory(),
		RTO: 200 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(); conn.Close() })
	if err := c.Listen(); err != nil {
		t.Fatal(err)
	}
	relay, err := c.Allocate()
	if err != nil {
		return nil, nil, err
	}
	t.Cleanup(func() { relay.Close() })
	return c, relay, nil
}

// relayOnce sends msg from relay a to relay b and waits for it.
func relayOnce(t *testing.T, a, b net.PacketConn, msg string) {
	t.Helper()
	// b must permit a before a's packet is let in.
	if _, err := b.WriteTo([]byte("hello"), a.LocalAddr()); err != nil {
		t.Fatalf("permission from b to a: %v", err)
	}
	if _, err := a.WriteTo([]byte(msg), b.LocalAddr()); err != nil {
		t.Fatalf("send through relay: %v", err)
	}
	b.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 1500)
	for {
		n, from, err := b.ReadFrom(buf)
		if err != nil {
			t.Fatalf("relayed %q did not arrive: %v", msg, err)
		}
		if string(buf[:n]) == msg && from.String() == a.LocalAddr().String() {
			return
		}
	}
}

// permit asks the server for a permission and waits for its answer (a
// plain WriteTo sends data before the answer and hides a refusal).
func permit(relay net.PacketConn, peer net.Addr) error {
	return relay.(interface{ CreatePermissions(...net.Addr) error }).CreatePermissions(peer)
}

func dialWS(t *testing.T, addr, room string) *websocket.Conn {
	t.Helper()
	c, _, err := websocket.DefaultDialer.Dial("ws://"+addr+"/connect?controllerId="+room, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	c.WriteMessage(websocket.TextMessage, []byte(`{"id":"WsInit","data":""}`))
	var frame struct{ ID string }
	if err := c.ReadJSON(&frame); err != nil || frame.ID != "WsIceServers" {
		t.Fatalf("WsInit: %v %v", frame, err)
	}
	return c
}

func forwardOnce(t *testing.T, from, to *websocket.Conn, sdp string) {
	t.Helper()
	offer := `{"id":"WsSDPOffer","data":"{\"type\":\"offer\",\"sdp\":\"` + sdp + `\",\"controllerId\":\"tv-42\"}"}`
	if err := from.WriteMessage(websocket.TextMessage, []byte(offer)); err != nil {
		t.Fatal(err)
	}
	to.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, got, err := to.ReadMessage()
	if err != nil || string(got) != offer {
		t.Fatalf("forwarded %q (%v), want %q", got, err, offer)
	}
}

func tlsSerial(t *testing.T, addr string) string {
	t.Helper()
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, &tls.Config{InsecureSkipVerify: true})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return c.ConnectionState().PeerCertificates[0].SerialNumber.String()
}

// TestReloadKeepsCallsAndStopIsClean is the operator's day: a running
// icebox with a TURN relay in use and a WebSocket pair open gets SIGHUP
// with a rotated secret, an opened peer range and a new certificate. Both
// survive and new requests see the new settings. Then SIGTERM: WebSockets
// are closed with 1001 and the process exits in time.
func TestReloadKeepsCallsAndStopIsClean(t *testing.T) {
	dir := t.TempDir()
	cfg := testConfig(t)
	cfg.TURN.Secrets = []string{"first-secret-0123456789"}
	cfg.TURN.TLS.Listen = "127.0.0.1:0"
	cfg.TURN.TLS.Cert, cfg.TURN.TLS.Key = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	testenv.WriteCert(t, cfg.TURN.TLS.Cert, cfg.TURN.TLS.Key, time.Time{})
	p := startProcess(t, cfg)
	started := p.waitLog("icebox started")
	stunAddr := strings.Fields(started["stun"].([]any)[0].(string))[1]
	signalAddr := started["signal"].(string)
	tlsAddr := regexp.MustCompile(`tls (\S+)`).FindStringSubmatch(started["turn"].(string))[1]

	creds := func(secret string) (string, string) {
		u, pw, _ := credentials.Mint([]byte(secret), "ops", time.Hour, time.Now())
		return u, pw
	}
	u1, p1 := creds("first-secret-0123456789")
	_, a, err := allocate(t, stunAddr, u1, p1)
	if err != nil {
		t.Fatal(err)
	}
	_, b, err := allocate(t, stunAddr, u1, p1)
	if err != nil {
		t.Fatal(err)
	}
	relayOnce(t, a, b, "before reload")
	controller, device := dialWS(t, signalAddr, "tv-42"), dialWS(t, signalAddr, "tv-42")
	forwardOnce(t, controller, device, "v=0 before")

	// Not 127.0.0.1: that is the relay address, which relay-to-relay
	// calls need permitted.
	echo, _ := net.ListenPacket("udp4", "127.0.0.2:0")
	defer echo.Close()
	if err := permit(a, echo.LocalAddr()); err == nil {
		t.Fatal("relaying to 127.0.0.2 allowed before peers.allow opened it")
	}
	serialBefore := tlsSerial(t, tlsAddr)

	// The operator's change: new secret only, loopback opened, new cert.
	cfg.TURN.Secrets = []string{"second-secret-0123456789"}
	cfg.TURN.Peers.Allow = []string{"127.0.0.2/32"}
	testenv.WriteCert(t, cfg.TURN.TLS.Cert, cfg.TURN.TLS.Key, time.Time{})
	p.writeConfig(cfg)
	p.cmd.Process.Signal(syscall.SIGHUP)
	p.waitLog("config reloaded")

	// What was running survives.
	relayOnce(t, a, b, "after reload")
	forwardOnce(t, device, controller, "v=0 after")
	// New requests see the new settings.
	if _, _, err := allocate(t, stunAddr, u1, p1); err == nil {
		t.Error("a credential from the dropped secret still allocates")
	}
	u2, p2 := creds("second-secret-0123456789")
	_, fresh, err := allocate(t, stunAddr, u2, p2)
	if err != nil {
		t.Fatalf("credential from the new secret refused: %v", err)
	}
	if err := permit(fresh, echo.LocalAddr()); err != nil {
		t.Errorf("relaying to 127.0.0.2 still refused after peers.allow opened it: %v", err)
	}
	if serialAfter := tlsSerial(t, tlsAddr); serialAfter == serialBefore {
		t.Error("TURN over TLS still presents the old certificate")
	}

	// A broken config is refused and the running one stays.
	os.WriteFile(p.cfg, []byte("turn:\n  secrets: [short]\n"), 0o600)
	p.cmd.Process.Signal(syscall.SIGHUP)
	refused := p.waitLog("reload refused, the running config stays")
	if !strings.Contains(refused["err"].(string), "turn.secrets[0]") {
		t.Errorf("refusal does not say what is wrong: %v", refused["err"])
	}
	if _, _, err := allocate(t, stunAddr, u2, p2); err != nil {
		t.Errorf("after a refused reload the running secret stopped working: %v", err)
	}

	// SIGTERM: clients hear 1001, the process ends within the bound.
	p.cmd.Process.Signal(syscall.SIGTERM)
	for _, ws := range []*websocket.Conn{controller, device} {
		ws.SetReadDeadline(time.Now().Add(10 * time.Second))
		_, _, err := ws.ReadMessage()
		var ce *websocket.CloseError
		if !errors.As(err, &ce) || ce.Code != websocket.CloseGoingAway {
			t.Errorf("WebSocket ended with %v, want close 1001", err)
		}
	}
	select {
	case err := <-p.exit:
		if err != nil {
			t.Errorf("icebox exited with %v after SIGTERM, want status 0", err)
		}
	case <-time.After(stopTimeout + 5*time.Second):
		t.Fatal("icebox did not exit after SIGTERM")
	}
}
