package signal

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/prometheus/client_golang/prometheus"

	"icebox/internal/testenv"
)

// TestSlowReader: a client that stops reading is disconnected once its
// queue overflows, while its peer keeps sending unhindered and is served
// by whoever joins next.
func TestSlowReader(t *testing.T) {
	cfg := testConfig()
	cfg.FramesPerSecond, cfg.FrameBurst = 10000, 10000
	cfg.SendQueue, cfg.SendQueueBytes = 4, 256<<10
	ts := startServer(t, cfg, Options{})

	// The slow client's tiny receive window makes the server's writes
	// to it block after a few frames.
	d := websocket.Dialer{NetDialContext: (&net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
		return rc.Control(func(fd uintptr) { syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 2048) })
	}}).DialContext}
	ws, _, err := d.Dial(ts.url("room=r"), nil)
	if err != nil {
		t.Fatal(err)
	}
	slow := &ktClient{t: t, ws: ws}
	t.Cleanup(func() { ws.Close() })
	slow.send("WsInit", "")
	slow.expect("WsIceServers")

	fast := join(t, ts.url("room=r"))
	big := offer("r", strings.Repeat("s", 60<<10))
	const n = 100 // 6 MB: far more than the socket buffers hold
	start := time.Now()
	for range n {
		fast.sendRaw(websocket.TextMessage, big)
	}
	t.Logf("sent %d frames of %d bytes in %v", n, len(big), time.Since(start))
	// Once this is answered, the server has handled all of the above.
	fast.send("WsInit", "")
	fast.expectError(errDuplicateInit)

	got := 0
	slow.ws.SetReadDeadline(time.Now().Add(readTimeout))
	for {
		_, _, err := slow.ws.ReadMessage()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				t.Fatalf("slow reader still connected after %d frames", got)
			}
			break
		}
		got++
	}
	if got >= n {
		t.Fatalf("slow reader got all %d frames", got)
	}
	eventually(t, "the slow disconnect to be counted", func() bool {
		return testenv.MetricValue(t, ts.cm.disconnects[bySlowness]) == 1
	})
	next := join(t, ts.url("room=r"))
	o := fast.send("WsSDPOffer", wsSDPData{Type: "offer", SDP: "still here", ControllerID: "r"})
	// next may first get what fast sent while alone.
	for {
		msg, _, _ := next.read()
		if string(msg) == string(o) {
			break
		}
	}
}

// TestPing: a client answering pings stays; one that does not is closed
// after ping_interval + pong_timeout and leaves its room.
func TestPing(t *testing.T) {
	cfg := testConfig()
	// The live client must answer within the pong timeout even when the
	// machine is loaded, so that is long; pings still come every 100 ms.
	cfg.PingInterval, cfg.PongTimeout = 100*time.Millisecond, 3*time.Second
	ts := startServer(t, cfg, Options{})

	live := join(t, ts.url("room=r"))
	pings := make(chan struct{}, 16)
	live.ws.SetPingHandler(func(data string) error {
		select {
		case pings <- struct{}{}:
		default: // counted enough; never hold up the reader
		}
		return live.ws.WriteControl(websocket.PongMessage, []byte(data), time.Now().Add(time.Second))
	})
	frames := make(chan []byte, 16)
	go func() {
		for {
			_, msg, err := live.ws.ReadMessage()
			if err != nil {
				close(frames)
				return
			}
			frames <- msg
		}
	}()

	silent := join(t, ts.url("room=r"))
	eventually(t, "the silent client to time out", func() bool {
		return testenv.MetricValue(t, ts.cm.disconnects[byTimeout]) == 1
	})
	silent.expectGone()

	for range 5 {
		select {
		case <-pings:
		case <-time.After(readTimeout):
			t.Fatal("no ping")
		}
	}
	// Still connected, and alone in its room again.
	next := join(t, ts.url("room=r"))
	o := next.send("WsSDPOffer", wsSDPData{Type: "offer", SDP: "x", ControllerID: "r"})
	select {
	case msg := <-frames:
		if string(msg) != string(o) {
			t.Fatalf("got %s", msg)
		}
	case <-time.After(readTimeout):
		t.Fatal("live client got nothing")
	}
}

// TestCredentialRefresh: short-lived TURN credentials are replaced by a
// new WsIceServers before they expire.
func TestCredentialRefresh(t *testing.T) {
	const ttl = 2 * time.Second
	var minted atomic.Int32
	ice := func(user string) ([]ICEServer, time.Time) {
		n := minted.Add(1)
		exp := time.Now().Add(ttl)
		return []ICEServer{{URLs: []string{"turn:127.0.0.1:3478"}, Username: exp.Format("150405.000") + ":" + user, Credential: string('a' + rune(n))}}, exp
	}
	ts := startServer(t, testConfig(), Options{ICEServers: ice})
	k := dialKt(t, ts.url(""), nil)
	k.send("WsInit", "")
	_, v := k.expect("WsIceServers")
	expires := time.Now().Add(ttl)
	first := v.(*wsIceServersData).IceServers[0]
	_, v = k.expect("WsIceServers")
	if time.Now().After(expires) {
		t.Fatalf("refresh arrived after the credentials expired")
	}
	second := v.(*wsIceServersData).IceServers[0]
	if second.Credential == first.Credential || second.Username == first.Username {
		t.Fatalf("refresh repeated the credentials: %+v", second)
	}
	if got := testenv.MetricValue(t, ts.cm.refreshes); got != 1 {
		t.Fatalf("refreshes = %v", got)
	}
}

func TestRefreshDelay(t *testing.T) {
	now := time.Now()
	for _, tc := range []struct {
		left, margin, want time.Duration
	}{
		{24 * time.Hour, 5 * time.Minute, 24*time.Hour - 5*time.Minute},
		{4 * time.Minute, 5 * time.Minute, 2 * time.Minute},
		{time.Second, 0, time.Second},
		{-time.Hour, 0, minRefresh},
	} {
		if got := refreshDelay(now, now.Add(tc.left), tc.margin); got != tc.want {
			t.Errorf("refreshDelay(%v, %v) = %v, want %v", tc.left, tc.margin, got, tc.want)
		}
	}
}

// TestShutdown: every WebSocket is closed with 1001 going away.
func TestShutdown(t *testing.T) {
	ts := startServer(t, testConfig(), Options{})
	a := join(t, ts.url("room=r"))
	b := join(t, ts.url("room=r"))
	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		done <- ts.Shutdown(ctx)
	}()
	a.expectClose(websocket.CloseGoingAway)
	b.expectClose(websocket.CloseGoingAway)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if _, err := dialWS(ts.url(""), nil); err == nil {
		t.Fatal("dial after Shutdown succeeded")
	}
}

// TestHTTP: /healthz, pages mounted with Handle next to /connect, and a
// plain GET of /connect, which must not hold a connection slot.
func TestHTTP(t *testing.T) {
	cfg := testConfig()
	cfg.MaxConnsPerIP = 1
	ts := startServer(t, cfg, Options{})
	ts.Handle("/", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "page "+r.URL.Path) }))
	get := func(path string) (int, string) {
		t.Helper()
		resp, err := http.Get("http://" + ts.addr + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body)
	}
	if code, body := get("/check"); code != 200 || body != "page /check" {
		t.Fatalf("mounted page: %d %q", code, body)
	}
	for range 3 {
		if code, _ := get("/connect"); code != http.StatusBadRequest {
			t.Fatalf("plain GET /connect: %d", code)
		}
	}
	join(t, ts.url(""))
	resp, err := http.Get("http://" + ts.addr + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(body) != "ok\n" {
		t.Fatalf("healthz: %d %q", resp.StatusCode, body)
	}
}

func TestICEServersEndpoint(t *testing.T) {
	const key = "0123456789abcdef-key"
	cfg := testConfig()
	ts := startServer(t, cfg, Options{})
	get := func(auth string) *http.Response {
		t.Helper()
		req, _ := http.NewRequest("GET", "http://"+ts.addr+"/ice-servers", nil)
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { resp.Body.Close() })
		return resp
	}
	if r := get("Bearer " + key); r.StatusCode != 404 {
		t.Fatalf("without keys: %d, want 404", r.StatusCode)
	}
	cfg.IceServersKeys = []string{key}
	if err := ts.reload(cfg); err != nil {
		t.Fatal(err)
	}
	for _, auth := range []string{"", "Bearer wrong-key-0123456789", "Basic " + key, "Bearer " + key + "x"} {
		if r := get(auth); r.StatusCode != 401 {
			t.Fatalf("auth %q: %d, want 401", auth, r.StatusCode)
		}
	}
	r := get("Bearer " + key)
	body, _ := io.ReadAll(r.Body)
	if r.StatusCode != 200 || r.Header.Get("Cache-Control") != "no-store" || r.Header.Get("Expires") == "" {
		t.Fatalf("%d %v %s", r.StatusCode, r.Header, body)
	}
	var d wsIceServersData
	if err := strictDecode(body, &d); err != nil || len(d.IceServers) != 2 || d.IceServers[1].Credential == "" {
		t.Fatalf("body %s: %v", body, err)
	}
	// ?user= names the TURN user, so the per-user quota counts it; a
	// long one is hashed, as a long pairing name is, and stays the same.
	user := func(name string) string {
		t.Helper()
		req, _ := http.NewRequest("GET", "http://"+ts.addr+"/ice-servers?user="+name, nil)
		req.Header.Set("Authorization", "Bearer "+key)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		if err := strictDecode(body, &d); err != nil || len(d.IceServers) != 2 {
			t.Fatalf("?user=%s: %s, %v", name, body, err)
		}
		_, u, _ := strings.Cut(d.IceServers[1].Username, ":")
		return u
	}
	if u := user("alice"); u != "app-alice" {
		t.Errorf("?user=alice: TURN user %q, want app-alice", u)
	}
	long := strings.Repeat("x", 200)
	if u := user(long); strings.Contains(u, long) || len(u) > len("app-")+maxTURNUser || !strings.HasPrefix(u, "app-") || u != user(long) {
		t.Errorf("a 200-byte ?user= got TURN user %q", u)
	}
}

// TestLogging: SDPs and candidates carry addresses and appear only at
// debug level.
func TestLogging(t *testing.T) {
	for _, level := range []slog.Level{slog.LevelInfo, slog.LevelDebug} {
		var out testenv.LogBuffer
		log := slog.New(slog.NewTextHandler(&out, &slog.HandlerOptions{Level: level}))
		ts := startServer(t, testConfig(), Options{Logger: log})
		a := join(t, ts.url("room=r"))
		b := join(t, ts.url("room=r"))
		a.send("WsSDPOffer", wsSDPData{Type: "offer", SDP: "c=IN IP4 198.51.100.7", ControllerID: "r"})
		b.expect("WsSDPOffer")
		a.send("WsIceCandidates", wsIceCandidatesData{ControllerID: "r", IceCandidates: []wsIceCandidateData{{Candidate: "candidate:1 1 udp 1 203.0.113.9 4000 typ host"}}})
		b.expect("WsIceCandidates")
		logged := strings.Contains(out.String(), "198.51.100.7") || strings.Contains(out.String(), "203.0.113.9")
		if logged != (level == slog.LevelDebug) {
			t.Errorf("at %v, addresses logged = %v:\n%s", level, logged, out.String())
		}
	}
}

func TestMetricsRegistered(t *testing.T) {
	reg := prometheus.NewRegistry()
	ts := startServer(t, testConfig(), Options{Registerer: reg})
	join(t, ts.url("room=r"))
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	for _, mf := range mfs {
		names[mf.GetName()] = true
	}
	for _, n := range []string{"icebox_signal_connections", "icebox_signal_rooms", "icebox_signal_frames_received_total", "icebox_signal_frames_sent_total", "icebox_signal_errors_total", "icebox_signal_disconnects_total"} {
		if !names[n] {
			t.Errorf("%s not registered; have %v", n, names)
		}
	}
	if _, err := New(testConfig(), Options{Registerer: reg}); err == nil {
		t.Error("registering twice succeeded")
	}
}

func TestServerErrorFramesDecode(t *testing.T) {
	frames := newErrorFrames()
	for i := range numCodes {
		p, v, err := decodeServerFrame(frames[i])
		if err != nil {
			t.Fatal(err)
		}
		if e := v.(*wsErrorData); p.ID != "WsError" || e.Code != int(firstCode)+i || e.Message == "" {
			t.Fatalf("%s", frames[i])
		}
	}
}

// TestReload: an invalid configuration changes nothing; listen keeps its
// value until a restart; the rest applies to new connections.
func TestReload(t *testing.T) {
	ts := startServer(t, testConfig(), Options{})
	bad := testConfig()
	bad.RoomCapacity = 0
	if err := ts.reload(bad); err == nil {
		t.Fatal("invalid config accepted")
	}
	if ts.settings().RoomCapacity != 2 {
		t.Fatal("invalid config applied")
	}
	tok := testConfig()
	tok.RequireToken = true
	if err := ts.reload(tok); err == nil {
		t.Fatal("require_token without keys accepted")
	}
	moved := testConfig()
	moved.Listen = "127.0.0.1:1"
	moved.RoomCapacity = 5
	if err := ts.reload(moved); err != nil {
		t.Fatal(err)
	}
	if set := ts.settings(); set.Listen != "127.0.0.1:0" || set.RoomCapacity != 5 {
		t.Fatalf("after reload: listen %q capacity %d", set.Listen, set.RoomCapacity)
	}
	long := strings.Repeat("r", maxControllerID+1)
	if _, err := dialWS(ts.url("controllerId="+long), nil); err == nil {
		t.Fatal("over-long controllerId accepted")
	}
}

// TestCloseGraceHolds: a client that keeps sending while the server
// closes it, and never answers the close frame, gets closeGrace to answer
// and no more: what it sends after the close frame does not move the
// read deadline back to ping_interval + pong_timeout (here an hour each).
// Shutdown closes them all from its own goroutine, as a refusal, a slow
// reader or a healed partition does, while each client's pongs arrive.
func TestCloseGraceHolds(t *testing.T) {
	cfg := testConfig()
	cfg.PingInterval, cfg.PongTimeout = time.Hour, time.Hour
	ts := startServerWith(t, cfg, Options{}, func(s *Server) { s.closeGrace = 100 * time.Millisecond })
	const clients, warm = 16, 1000
	var sending, warmed sync.WaitGroup
	start := make(chan struct{})
	for range clients {
		k := join(t, ts.url(""))
		sending.Add(1)
		warmed.Add(1)
		go func() {
			defer sending.Done()
			<-start
			// Unsolicited pongs, each moving the read deadline while the
			// server is open; never reading, so never answering its close.
			n := 0
			for k.ws.WriteControl(websocket.PongMessage, nil, time.Now().Add(readTimeout)) == nil {
				if n++; n == warm {
					warmed.Done()
				}
			}
			if n < warm {
				warmed.Done()
			}
		}()
	}
	close(start)
	warmed.Wait() // the server is busy with pongs from every client
	ctx, cancel := context.WithTimeout(context.Background(), readTimeout)
	defer cancel()
	if err := ts.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v (a client held on past closeGrace)", err)
	}
	sending.Wait() // each ends when the server has closed its socket
}
