package signal

import (
	"encoding/base64"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"icebox/internal/testenv"
)

// TestBadInput: every malformed frame gets its WsError and the connection
// stays usable, as the next frame's answer shows.
func TestBadInput(t *testing.T) {
	ts := startServer(t, testConfig(), Options{})
	answerData := `"{\"type\":\"answer\",\"sdp\":\"x\"}"`
	cases := []struct {
		name string
		typ  int
		msg  string
		code errCode
	}{
		{"binary", websocket.BinaryMessage, `{"id":"WsSDPAnswer","data":` + answerData + `}`, errBadFrame},
		{"not JSON", websocket.TextMessage, `hello`, errBadFrame},
		{"array", websocket.TextMessage, `[]`, errBadFrame},
		{"trailing bytes", websocket.TextMessage, `{"id":"WsSDPAnswer","data":` + answerData + `} x`, errBadFrame},
		{"extra key", websocket.TextMessage, `{"id":"WsSDPAnswer","data":` + answerData + `,"x":1}`, errBadFrame},
		{"key in other case", websocket.TextMessage, `{"ID":"WsSDPAnswer","data":` + answerData + `}`, errBadFrame},
		{"duplicate key", websocket.TextMessage, `{"id":"WsSDPAnswer","id":"WsSDPAnswer","data":` + answerData + `}`, errBadFrame},
		{"data not a string", websocket.TextMessage, `{"id":"WsSDPAnswer","data":{"type":"answer","sdp":"x"}}`, errBadFrame},
		{"no data", websocket.TextMessage, `{"id":"WsSDPAnswer"}`, errBadFrame},
		{"no id", websocket.TextMessage, `{"data":""}`, errBadFrame},
		{"id not a string", websocket.TextMessage, `{"id":1,"data":""}`, errBadFrame},
		{"empty data", websocket.TextMessage, `{"id":"WsSDPAnswer","data":""}`, errBadFrame},
		{"data not JSON", websocket.TextMessage, `{"id":"WsSDPAnswer","data":"nope"}`, errBadFrame},
		{"unknown key in data", websocket.TextMessage, `{"id":"WsSDPAnswer","data":"{\"type\":\"answer\",\"sdp\":\"x\",\"extra\":1}"}`, errBadFrame},
		{"no sdp", websocket.TextMessage, `{"id":"WsSDPAnswer","data":"{\"type\":\"answer\"}"}`, errBadFrame},
		{"candidate with browser key", websocket.TextMessage, `{"id":"WsIceCandidates","data":"{\"iceCandidates\":[{\"candidate\":\"c\",\"sdpMLineIndex\":0,\"sdpMid\":\"0\",\"usernameFragment\":\"u\"}]}"}`, errBadFrame},
		{"index as string", websocket.TextMessage, `{"id":"WsIceCandidates","data":"{\"iceCandidates\":[{\"candidate\":\"c\",\"sdpMLineIndex\":\"0\"}]}"}`, errBadFrame},
		{"index fraction", websocket.TextMessage, `{"id":"WsIceCandidates","data":"{\"iceCandidates\":[{\"candidate\":\"c\",\"sdpMLineIndex\":0.5}]}"}`, errBadFrame},
		{"invalid UTF-8", websocket.TextMessage, "{\"id\":\"WsSDPAnswer\",\"data\":\"{\\\"type\\\":\\\"answer\\\",\\\"sdp\\\":\\\"\xff\\\"}\"}", errBadFrame},
		// Frames aimed at the one-pass read of data when it ends the frame.
		{"invalid UTF-8 in id", websocket.TextMessage, "{\"id\":\"WsSDP\xffAnswer\",\"data\":" + answerData + "}", errBadFrame},
		{"quote inside data", websocket.TextMessage, `{"id":"WsSDPAnswer","data":"{\"type\":\"answer\",\"sdp\":\"x\"}"x"}`, errBadFrame},
		{"form feed before the end", websocket.TextMessage, `{"id":"WsSDPAnswer","data":` + answerData + "\f}", errBadFrame},
		{"two ends", websocket.TextMessage, `{"id":"WsSDPAnswer","data":` + answerData + `}}`, errBadFrame},
		{"unknown kind", websocket.TextMessage, `{"id":"WsHello","data":""}`, errUnknownKind},
		{"client WsIceServers", websocket.TextMessage, string(frameOf("WsIceServers", wsIceServersData{IceServers: []wsIceServer{{URLs: []string{"turn:evil.example"}}}})), errForbiddenKind},
		{"client WsError", websocket.TextMessage, string(frameOf("WsError", wsErrorData{Code: 1, Message: "x"})), errForbiddenKind},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			peer := join(t, ts.url(fmt.Sprintf("room=bad%d", i)))
			k := join(t, ts.url(fmt.Sprintf("room=bad%d", i)))
			k.sendRaw(tc.typ, []byte(tc.msg))
			k.expectError(tc.code)
			k.send("WsInit", "")
			k.expectError(errDuplicateInit)
			// Nothing reached the peer: its next frame is this marker.
			m := k.send("WsSDPAnswer", wsSDPData{Type: "answer", SDP: "marker"})
			peer.expectBytes(m)
		})
	}
}

// TestFatalInput: refusals that end the connection send their WsError,
// then the close code.
func TestFatalInput(t *testing.T) {
	cfg := testConfig()
	cfg.InitTimeout = 200 * time.Millisecond
	ts := startServer(t, cfg, Options{})

	t.Run("too large", func(t *testing.T) {
		k := join(t, ts.url(""))
		big := frameOf("WsSDPOffer", wsSDPData{Type: "offer", SDP: strings.Repeat("a", cfg.MaxFrameSize), ControllerID: "r"})
		k.sendRaw(websocket.TextMessage, big)
		k.expectError(errTooLarge)
		k.expectClose(websocket.CloseMessageTooBig)
	})
	t.Run("offer before WsInit", func(t *testing.T) {
		k := dialKt(t, ts.url(""), nil)
		k.sendRaw(websocket.TextMessage, offer("r", "x"))
		k.expectError(errNoInit)
		k.expectClose(websocket.ClosePolicyViolation)
	})
	t.Run("garbage before WsInit", func(t *testing.T) {
		k := dialKt(t, ts.url(""), nil)
		k.sendRaw(websocket.TextMessage, []byte("garbage"))
		k.expectError(errNoInit)
		k.expectClose(websocket.ClosePolicyViolation)
	})
	t.Run("no WsInit in time", func(t *testing.T) {
		k := dialKt(t, ts.url(""), nil)
		k.expectError(errNoInit)
		k.expectClose(websocket.ClosePolicyViolation)
	})
}

// TestFirstFrameIsBounded: a connection that has not sent its WsInit
// cannot make icebox buffer more than maxInitFrame bytes: a first frame
// that runs past it is refused while its sender is still sending, not at
// init_timeout, while the app joins beside it. The largest WsInit icebox
// would accept still fits.
func TestFirstFrameIsBounded(t *testing.T) {
	cfg := testConfig()
	cfg.InitTimeout = 10 * time.Minute // no refusal here may come from the clock
	ts := startServer(t, cfg, Options{})

	attacker := dialKt(t, ts.url(""), nil)
	w, err := attacker.ws.NextWriter(websocket.TextMessage)
	if err != nil {
		t.Fatal(err)
	}
	// gorilla sends what it has buffered as a fragment each time its
	// 4 KiB write buffer fills, so more than maxInitFrame bytes reach
	// icebox while the message stays unfinished.
	start := `{"id":"WsInit","data":"` + strings.Repeat(" ", maxInitFrame+8<<10)
	if _, err := w.Write([]byte(start)); err != nil {
		t.Fatal(err)
	}
	app := join(t, ts.url("room=bounded"))
	attacker.expectError(errNoInit)
	attacker.expectClose(websocket.ClosePolicyViolation)

	device := join(t, ts.url("room=bounded"))
	m := app.send("WsSDPOffer", wsSDPData{Type: "offer", SDP: "v=0"})
	device.expectBytes(m)

	// The largest WsInit: controllerId and token at their limits, every
	// character \u-escaped. It is read and judged (the token is no real
	// one), not refused for its size.
	esc := func(n int) string { return strings.Repeat(`\u0061`, n) }
	largest := frameOf("WsInit", `{"controllerId":"`+esc(maxControllerID)+`","token":"`+esc(maxToken)+`","presence":false}`)
	if len(largest) > maxInitFrame {
		t.Fatalf("the largest WsInit is %d bytes, over maxInitFrame %d", len(largest), maxInitFrame)
	}
	k := dialKt(t, ts.url(""), nil)
	k.sendRaw(websocket.TextMessage, largest)
	k.expectError(errNotAuthorised)
}

// TestGarbageSender: max_errors refused frames close the connection 1008.
func TestGarbageSender(t *testing.T) {
	cfg := testConfig()
	cfg.MaxErrors = 3
	ts := startServer(t, cfg, Options{})
	k := join(t, ts.url(""))
	for range 3 {
		k.sendRaw(websocket.TextMessage, []byte("{"))
	}
	k.expectError(errBadFrame)
	k.expectError(errBadFrame)
	k.expectError(errBadFrame)
	k.expectError(errTooManyErrors)
	k.expectClose(websocket.ClosePolicyViolation)
}

// TestRateLimit: past the burst, frames are refused until tokens refill.
func TestRateLimit(t *testing.T) {
	_, peer, k := rateLimitedPair(t, 3, "r") // k's WsInit: 1
	k.sendRaw(websocket.TextMessage, answer("one"))
	peer.expect("WsSDPAnswer")
	k.sendRaw(websocket.TextMessage, answer("two"))
	peer.expect("WsSDPAnswer")
	k.sendRaw(websocket.TextMessage, answer("three"))
	k.expectError(errRateLimited)
}

// TestTokens: with require_token, only a token minted for the pairing
// gets in, from ?token= or WsInit; any key of the list verifies.
func TestTokens(t *testing.T) {
	old, cur := []byte("previous-secret-0123"), []byte("current-secret-4567")
	cfg := testConfig()
	cfg.RequireToken = true
	ts := startServer(t, cfg, Options{TokenKeys: [][]byte{cur, old}})
	soon := time.Now().Add(time.Minute)

	refusedAtInit := func(t *testing.T, query string, data any) {
		t.Helper()
		k := dialKt(t, ts.url(query), nil)
		k.send("WsInit", data)
		k.expectError(errNotAuthorised)
		k.expectClose(websocket.ClosePolicyViolation)
	}
	t.Run("no token", func(t *testing.T) { refusedAtInit(t, "room=r", "") })
	t.Run("expired", func(t *testing.T) {
		refusedAtInit(t, "room=r&token="+MintToken(cur, "r", time.Now().Add(-time.Second)), "")
	})
	t.Run("other pairing", func(t *testing.T) { refusedAtInit(t, "room=q&token="+MintToken(cur, "r", soon), "") })
	t.Run("malformed", func(t *testing.T) { refusedAtInit(t, "room=r&token=12345.abc", "") })
	t.Run("unknown key", func(t *testing.T) {
		refusedAtInit(t, "room=r&token="+MintToken([]byte("someone-elses-key"), "r", soon), "")
	})
	t.Run("query", func(t *testing.T) {
		a := join(t, ts.url("room=r&token="+MintToken(cur, "r", soon)))
		b := dialKt(t, ts.url("room=r"), nil)
		b.send("WsInit", wsInitData{Token: MintToken(old, "r", soon)})
		b.expect("WsIceServers")
		o := b.send("WsSDPOffer", wsSDPData{Type: "offer", SDP: "x", ControllerID: "r"})
		a.expectBytes(o)
	})
	// A token is an HMAC over its pairing: with require_token, one that
	// cannot be checked at WsInit gets no credentials, so the pairing must
	// be named by then.
	t.Run("pairing only in a later frame", func(t *testing.T) {
		refusedAtInit(t, "token="+MintToken(cur, "f", soon), "")
	})
	forged := strconv.FormatInt(soon.Unix(), 10) + "." + base64.RawURLEncoding.EncodeToString(make([]byte, 32))
	t.Run("forged, no pairing", func(t *testing.T) { refusedAtInit(t, "token="+forged, "") })
	t.Run("forged, pairing in WsInit", func(t *testing.T) {
		refusedAtInit(t, "", wsInitData{ControllerID: "r", Token: forged})
	})
	t.Run("rotated away", func(t *testing.T) {
		ts.setTokenKeys([][]byte{cur})
		defer ts.setTokenKeys([][]byte{cur, old})
		refusedAtInit(t, "room=r&token="+MintToken(old, "r", soon), "")
	})
	t.Run("not required", func(t *testing.T) {
		cfg := testConfig()
		if err := ts.reload(cfg); err != nil {
			t.Fatal(err)
		}
		defer ts.reload(func() Config { c := testConfig(); c.RequireToken = true; return c }())
		join(t, ts.url("room=free"))
		// A token presented is still checked, at WsInit or, when the
		// pairing comes later, when it is named.
		refusedAtInit(t, "room=free&token="+MintToken(cur, "other", soon), "")
		peer := join(t, ts.url("room=f"))
		k := dialKt(t, ts.url("token="+MintToken(cur, "f", soon)), nil)
		k.send("WsInit", "")
		k.expect("WsIceServers")
		o := k.send("WsSDPOffer", wsSDPData{Type: "offer", SDP: "x", ControllerID: "f"})
		peer.expectBytes(o)
		bad := dialKt(t, ts.url("token="+MintToken(cur, "f", soon)), nil)
		bad.send("WsInit", "")
		bad.expect("WsIceServers")
		bad.send("WsSDPOffer", wsSDPData{Type: "offer", SDP: "x", ControllerID: "g"})
		bad.expectError(errNotAuthorised)
		bad.expectClose(websocket.ClosePolicyViolation)
	})
	if _, err := New(cfg, Options{}); err == nil {
		t.Error("New with require_token and no keys succeeded")
	}
}

// TestOrigins: browsers from unlisted origins are refused with a WsError
// they can show; native apps send no Origin and always get in.
func TestOrigins(t *testing.T) {
	cfg := testConfig()
	cfg.AllowedOrigins = []string{"https://app.example.com"}
	ts := startServer(t, cfg, Options{})
	hdr := func(o string) http.Header { return http.Header{"Origin": {o}} }

	evil := dialKt(t, ts.url(""), hdr("https://evil.example.com"))
	evil.expectError(errOrigin)
	evil.expectClose(websocket.ClosePolicyViolation)

	ok := dialKt(t, ts.url(""), hdr("https://APP.example.com"))
	ok.send("WsInit", "")
	ok.expect("WsIceServers")
	join(t, ts.url(""))

	// With no list, a page from this very host may connect, others not.
	if err := ts.reload(testConfig()); err != nil {
		t.Fatal(err)
	}
	same := dialKt(t, ts.url(""), hdr("http://"+ts.addr))
	same.send("WsInit", "")
	same.expect("WsIceServers")
	other := dialKt(t, ts.url(""), hdr("https://app.example.com"))
	other.expectError(errOrigin)
}

// TestConnLimits: over max_conns_per_ip or max_conns, a client is told
// busy and closed 1013.
func TestConnLimits(t *testing.T) {
	cfg := testConfig()
	cfg.MaxConnsPerIP = 2
	ts := startServer(t, cfg, Options{})
	a := join(t, ts.url(""))
	join(t, ts.url(""))
	c := dialKt(t, ts.url(""), nil)
	c.expectError(errBusy)
	c.expectClose(websocket.CloseTryAgainLater)

	a.ws.Close()
	eventually(t, "a to leave", func() bool { return testenv.MetricValue(t, ts.cm.active) == 1 })
	join(t, ts.url(""))

	cfg.MaxConnsPerIP = 100
	cfg.MaxConns = 2
	if err := ts.reload(cfg); err != nil {
		t.Fatal(err)
	}
	d := dialKt(t, ts.url(""), nil)
	d.expectError(errBusy)
}

// TestPingFlood: WebSocket pings count against frames_per_second like
// data frames: a client flooding pings is refused past the burst and
// closed after max_errors, while its partner stays and keeps receiving
// frames. Before, every ping was answered and none refused.
func TestPingFlood(t *testing.T) {
	ts, partner, flooder := rateLimitedPair(t, 5, "p") // the flooder's WsInit: 1 frame
	cfg := ts.settings().Config
	partner.expectBytes(flooder.send("WsSDPOffer", wsSDPData{Type: "offer", SDP: "o", ControllerID: "p"}))
	pongs := 0
	flooder.ws.SetPongHandler(func(string) error { pongs++; return nil })
	for range 10 * cfg.MaxErrors {
		if err := flooder.ws.WriteControl(websocket.PingMessage, nil, time.Now().Add(readTimeout)); err != nil {
			break // closed by the server
		}
	}
	for range cfg.MaxErrors {
		flooder.expectError(errRateLimited)
	}
	flooder.expectError(errTooManyErrors)
	flooder.expectClose(websocket.ClosePolicyViolation)
	// Pings waiting for the writer share one pong.
	if most := cfg.FrameBurst - 2; pongs > most {
		t.Errorf("%d pongs, want at most %d (the rest of the burst)", pongs, most)
	}
	// The partner is still there and gets what its new partner sends.
	eventually(t, "the flooder to leave", func() bool { return testenv.MetricValue(t, ts.cm.active) == 1 })
	next := join(t, ts.url("room=p"))
	partner.expectBytes(next.send("WsSDPAnswer", wsSDPData{Type: "answer", SDP: "a"}))
}

// rateLimitedPair starts a server whose connections may send a burst of
// frames, then next to none, and joins two clients to the pairing room.
func rateLimitedPair(t *testing.T, burst int, room string) (ts *testServer, first, second *ktClient) {
	t.Helper()
	cfg := testConfig()
	cfg.FramesPerSecond = 0.001
	cfg.FrameBurst = burst
	ts = startServer(t, cfg, Options{})
	return ts, join(t, ts.url("room="+room)), join(t, ts.url("room="+room))
}
