package attack

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
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

	var minted, refusedWS, otherWS, refusedHTTP, tries atomic.Int64
	var wrongWS atomic.Pointer[mintAnswer]
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
					switch got := wsMint(dial, d.signal); {
					case got.id == "WsIceServers":
						minted.Add(1)
					case got.id == "WsError" && got.code == 4016 && got.close == websocket.CloseTryAgainLater:
						refusedWS.Add(1)
					case got.id == "WsError":
						// Any other refusal is not the credential
						// budget's: the attacker must be told exactly
						// 4016 and to come back later (close 1013).
						otherWS.Add(1)
						wrongWS.CompareAndSwap(nil, &got)
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
	if n := otherWS.Load(); n > 0 {
		w := wrongWS.Load()
		t.Errorf("%d WsInit refusals were not WsError 4016 with close 1013, e.g. WsError %d (close %d)", n, w.code, w.close)
	}
	if refusedWS.Load() == 0 || refusedHTTP.Load() == 0 {
		t.Errorf("refused %d at WsInit and %d at /ice-servers; want the attacker refused both ways", refusedWS.Load(), refusedHTTP.Load())
	}
}

// mintAnswer is what one WsInit got: the id of the first frame back
// ("" when there was none) and, for a WsError, its code and the close
// code that followed it.
type mintAnswer struct {
	id          string
	code, close int
}

// wsMint does the app's handshake and returns what came back, decoded as
// the app decodes it: a frame {"id","data"} whose data is a JSON string.
func wsMint(dial func(context.Context, string, string) (net.Conn, error), addr string) mintAnswer {
	dl := websocket.Dialer{HandshakeTimeout: 2 * time.Second, NetDialContext: dial}
	ws, resp, err := dl.Dial("ws://"+addr+"/connect", nil)
	if resp != nil && resp.Body != nil {
		resp.Body.Close()
	}
	if err != nil {
		return mintAnswer{}
	}
	defer ws.Close()
	ws.SetReadDeadline(time.Now().Add(2 * time.Second))
	if err := ws.WriteMessage(websocket.TextMessage, []byte(`{"id":"WsInit","data":""}`)); err != nil {
		return mintAnswer{}
	}
	var f struct{ ID, Data string }
	if err := ws.ReadJSON(&f); err != nil {
		return mintAnswer{}
	}
	a := mintAnswer{id: f.ID}
	if f.ID != "WsError" {
		return a
	}
	var e struct{ Code int }
	if json.Unmarshal([]byte(f.Data), &e) != nil {
		a.code = -1
		return a
	}
	a.code = e.Code
	// What follows a WsError that closes is the close frame.
	if _, _, err := ws.ReadMessage(); err != nil {
		var ce *websocket.CloseError
		if errors.As(err, &ce) {
			a.close = ce.Code
		}
	}
	return a
}
