package attack

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// Credential budget per source, set here as signal's defaults are.
const (
	mintBurst     = 128
	mintPerMinute = 60
	mintAttempts  = 4000 // bound on the attacker's tries
)

// TestCredentialMinting: one address mints TURN credentials as fast as it
// can over WsInit (4 connections at a time) and GET /ice-servers (with a
// valid bearer key); the legitimate client, from another address, keeps
// calling. Before the budget one address minted 1,837 credentials in 5 s.
func TestCredentialMinting(t *testing.T) {
	const key = "attack-suite-bearer-key-0123"
	cfg := config(t)
	set(cfg, "signal.ice_servers_keys", []string{key})
	set(cfg, "signal.credential_burst", mintBurst)
	set(cfg, "signal.credentials_per_minute", mintPerMinute)
	d := start(t, cfg)
	dial := (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 50)}, Timeout: 2 * time.Second}).DialContext

	var minted, refusedWS, refusedHTTP, tries atomic.Int64
	r := underAttack(t, d, func(stop <-chan struct{}) {
		more := func() bool {
			select {
			case <-stop:
				return false
			default:
				return tries.Add(1) <= mintAttempts
			}
		}
		var wg sync.WaitGroup
		for range 4 {
			wg.Go(func() {
				for more() {
					switch wsMint(dial, d.signal) {
					case "WsIceServers":
						minted.Add(1)
					case "WsError":
						refusedWS.Add(1)
					}
				}
			})
		}
		wg.Go(func() {
			c := http.Client{Transport: &http.Transport{DialContext: dial}, Timeout: 2 * time.Second}
			defer c.CloseIdleConnections()
			for more() {
				req, _ := http.NewRequest("GET", "http://"+d.signal+"/ice-servers", nil)
				req.Header.Set("Authorization", "Bearer "+key)
				resp, err := c.Do(req)
				if err != nil {
					continue
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				switch resp.StatusCode {
				case http.StatusOK:
					minted.Add(1)
				case http.StatusTooManyRequests:
					if resp.Header.Get("Retry-After") == "" {
						t.Errorf("429 without Retry-After")
					}
					refusedHTTP.Add(1)
				}
			}
		})
		wg.Wait()
	})
	bound := int64(mintBurst + r.took.Seconds()*mintPerMinute/60 + 1)
	t.Logf("attack: one address tried %d credentials in %v: %d minted (bound %d), %d refused at WsInit (4016), %d at /ice-servers (429)",
		min(tries.Load(), mintAttempts), r.took.Round(time.Millisecond), minted.Load(), bound, refusedWS.Load(), refusedHTTP.Load())
	if minted.Load() > bound {
		t.Errorf("one address minted %d credentials, want at most %d", minted.Load(), bound)
	}
	if refusedWS.Load() == 0 || refusedHTTP.Load() == 0 {
		t.Errorf("refused %d at WsInit and %d at /ice-servers; want the attacker refused both ways", refusedWS.Load(), refusedHTTP.Load())
	}
}

// wsMint does the app's handshake and returns the id of the first frame
// back, "" when there was none.
func wsMint(dial func(context.Context, string, string) (net.Conn, error), addr string) string {
	dl := websocket.Dialer{HandshakeTimeout: 2 * time.Second, NetDialContext: dial}
	ws, resp, err := dl.Dial("ws://"+addr+"/connect", nil)
	if resp != nil && resp.Body != nil {
		resp.Body.Close()
	}
	if err != nil {
		return ""
	}
	defer ws.Close()
	ws.SetReadDeadline(time.Now().Add(2 * time.Second))
	if err := ws.WriteMessage(websocket.TextMessage, []byte(`{"id":"WsInit","data":""}`)); err != nil {
		return ""
	}
	_, msg, err := ws.ReadMessage()
	if err != nil {
		return ""
	}
	for _, id := range []string{"WsIceServers", "WsError"} {
		if strings.Contains(string(msg), fmt.Sprintf("%q", id)) {
			return id
		}
	}
	return ""
}
