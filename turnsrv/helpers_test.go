package turnsrv

import (
	"context"
	"encoding/binary"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pion/logging"
	"github.com/pion/stun/v3"
	"github.com/pion/turn/v4"
	"github.com/prometheus/client_golang/prometheus"

	"icebox/stunsrv"
)

const (
	testSecret = "test-secret-0123456789abcdef"
	testRealm  = "icebox"
)

// testServer is a Server on 127.0.0.1 with one UDP socket and one TCP
// listener, as stunsrv would hand them over.
type testServer struct {
	*Server
	udp, tcp net.Addr
	cfg      Config
	logs     *logRecorder
	front    *stunsrv.Server
	frontReg *prometheus.Registry // the front door's metrics
}

// testConfig serves relays on 127.0.0.1 below the ephemeral port range, so
// they don't collide with other tests' sockets, and allows relaying to
// 127.0.0.1 where the tests' peers live.
func testConfig() Config {
	cfg := DefaultConfig()
	cfg.Secrets = []string{testSecret}
	cfg.Relay.Address = "127.0.0.1"
	cfg.Relay.Ports = "20000-29999"
	cfg.Peers.Allow = []string{"127.0.0.1/32"}
	return cfg
}

// startServer runs the TURN server on stunsrv's sockets, as the daemon
// does, so every test also passes through the STUN front door.
func startServer(t testing.TB, cfg Config, mutOpts ...func(*Options)) *testServer {
	t.Helper()
	return startServerFront(t, nil, cfg, mutOpts...)
}

// startServerFront is startServer with the front door's config changed
// by mutFront first.
func startServerFront(t testing.TB, mutFront func(*stunsrv.Config), cfg Config, mutOpts ...func(*Options)) *testServer {
	t.Helper()
	stunCfg := stunsrv.DefaultConfig()
	stunCfg.Listen = []string{"127.0.0.1:0"}
	stunCfg.Sockets = 1
	if mutFront != nil {
		mutFront(&stunCfg)
	}
	frontReg := prometheus.NewRegistry()
	front, err := stunsrv.New(stunCfg, stunsrv.Options{Passthrough: true, Registerer: frontReg, TURNIdleTimeout: cfg.StreamIdleTimeout()})
	if err != nil {
		t.Fatal(err)
	}
	pc, ln := front.PacketConns()[0], front.Listeners()[0]
	logs := &logRecorder{}
	opts := Options{
		Logger:      slog.New(logs),
		Registerer:  prometheus.NewRegistry(),
		PublicIP:    netip.MustParseAddr("127.0.0.1"),
		StateDir:    t.TempDir(),
		PacketConns: []net.PacketConn{pc},
		Listeners:   []net.Listener{ln},
		FrontDoor:   front.AddListener,
	}
	for _, f := range mutOpts {
		f(&opts)
	}
	s, err := New(cfg, opts)
	if err != nil {
		front.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Error(err)
		}
		front.Close() // the TURN server closed the sockets it was handed
	})
	return &testServer{Server: s, udp: pc.LocalAddr(), tcp: ln.Addr(), cfg: cfg, logs: logs, front: front, frontReg: frontReg}
}

// Reload prepares and commits cfg, as the daemon does for TURN alone.
func (ts *testServer) Reload(cfg Config) error {
	p, err := ts.PrepareReload(cfg)
	if err != nil {
		return err
	}
	p.Commit()
	return nil
}

func (ts *testServer) addr(network string) net.Addr {
	if network == "tcp" {
		return ts.tcp
	}
	return ts.udp
}

// waitAllocations waits until the server holds n allocations.
func (ts *testServer) waitAllocations(t testing.TB, n int) {
	t.Helper()
	timeout := time.After(10 * time.Second)
	for {
		got, changed := ts.quotas.held()
		if got == n {
			return
		}
		select {
		case <-changed:
		case <-timeout:
			t.Fatalf("server holds %d allocations, want %d", got, n)
		}
	}
}

// dialTURN connects a pion/turn client over network ("udp" or "tcp").
func dialTURN(t testing.TB, network string, server net.Addr, username, password string) (*turn.Client, *wireRecorder) {
	t.Helper()
	var conn net.PacketConn
	if network == "tcp" {
		c, err := net.Dial("tcp4", server.String())
		if err != nil {
			t.Fatal(err)
		}
		conn = turn.NewSTUNConn(c)
	} else {
		c, err := net.ListenPacket("udp4", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		conn = c
	}
	rec := &wireRecorder{PacketConn: conn}
	lf := logging.NewDefaultLoggerFactory()
	lf.DefaultLogLevel = logging.LogLevelDisabled
	client, err := turn.NewClient(&turn.ClientConfig{
		STUNServerAddr: server.String(),
		TURNServerAddr: server.String(),
		Username:       username,
		Password:       password,
		Conn:           rec,
		LoggerFactory:  lf,
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := client.Listen(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		client.Close()
		conn.Close()
	})
	return client, rec
}

// wireRecorder counts what a client sends and receives by kind, so a test
// can tell ChannelData from Send and Data indications.
type wireRecorder struct {
	net.PacketConn
	sentChannelData, sentSend atomic.Int64
	gotChannelData, gotData   atomic.Int64
	// sentPermissions counts CreatePermission requests, retransmissions
	// included: over UDP a slow answer makes pion send one again.
	sentPermissions atomic.Int64
}

func (w *wireRecorder) WriteTo(p []byte, addr net.Addr) (int, error) {
	switch kind(p) {
	case "channeldata":
		w.sentChannelData.Add(1)
	case "send":
		w.sentSend.Add(1)
	case "createpermission":
		w.sentPermissions.Add(1)
	}
	return w.PacketConn.WriteTo(p, addr)
}

func (w *wireRecorder) ReadFrom(p []byte) (int, net.Addr, error) {
	n, a, err := w.PacketConn.ReadFrom(p)
	if err == nil {
		switch kind(p[:n]) {
		case "channeldata":
			w.gotChannelData.Add(1)
		case "data":
			w.gotData.Add(1)
		}
	}
	return n, a, err
}

func kind(p []byte) string {
	switch {
	case len(p) >= 4 && p[0]>>6 == 1:
		return "channeldata"
	case len(p) >= 20 && binary.BigEndian.Uint16(p) == stun.NewType(stun.MethodSend, stun.ClassIndication).Value():
		return "send"
	case len(p) >= 20 && binary.BigEndian.Uint16(p) == stun.NewType(stun.MethodData, stun.ClassIndication).Value():
		return "data"
	case len(p) >= 20 && binary.BigEndian.Uint16(p) == stun.NewType(stun.MethodCreatePermission, stun.ClassRequest).Value():
		return "createpermission"
	}
	return "other"
}

// udpEcho is a UDP peer on 127.0.0.1 that sends every datagram back.
func udpEcho(t testing.TB) *net.UDPAddr {
	t.Helper()
	c, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	go func() {
		buf := make([]byte, 2048)
		for {
			n, from, err := c.ReadFrom(buf)
			if err != nil {
				return
			}
			c.WriteTo(buf[:n], from)
		}
	}()
	return c.LocalAddr().(*net.UDPAddr)
}

// turnCode returns the STUN error code in err, or 0.
func turnCode(err error) int {
	var te stun.TurnError
	if errors.As(err, &te) {
		return int(te.ErrorCodeAttr.Code)
	}
	var tp *stun.TurnError
	if errors.As(err, &tp) {
		return int(tp.ErrorCodeAttr.Code)
	}
	return 0
}

// logRecorder is a slog.Handler keeping every record from Debug up (not
// pion's per-packet chatter).
type logRecorder struct {
	mu      sync.Mutex
	records []slog.Record
}

func (l *logRecorder) Enabled(_ context.Context, level slog.Level) bool {
	return level >= slog.LevelDebug
}

func (l *logRecorder) Handle(_ context.Context, r slog.Record) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.records = append(l.records, r.Clone())
	return nil
}

func (l *logRecorder) WithAttrs([]slog.Attr) slog.Handler { return l }
func (l *logRecorder) WithGroup(string) slog.Handler      { return l }

// matching returns the messages of records whose message contains s.
func (l *logRecorder) matching(s string) []slog.Record {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []slog.Record
	for _, r := range l.records {
		if strings.Contains(r.Message, s) {
			out = append(out, r)
		}
	}
	return out
}

// text renders every record with its attributes.
func (l *logRecorder) text() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var b strings.Builder
	for _, r := range l.records {
		b.WriteString(r.Message)
		r.Attrs(func(a slog.Attr) bool {
			b.WriteString(" " + a.String())
			return true
		})
		b.WriteString("\n")
	}
	return b.String()
}

// rawClient speaks TURN by hand, for what pion's client cannot be made to
// do: ask for a long lifetime, bind a channel without a permission first,
// keep sending while throttled.
type rawClient struct {
	t      testing.TB
	conn   net.Conn
	stream bool
	user   stun.Username
	realm  stun.Realm
	nonce  stun.Nonce
	key    stun.MessageIntegrity
}

func dialRaw(t testing.TB, network string, server net.Addr, username, password string) *rawClient {
	t.Helper()
	c, err := net.Dial(network+"4", server.String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &rawClient{
		t: t, conn: c, stream: network == "tcp",
		user: stun.NewUsername(username), realm: stun.NewRealm(testRealm),
		key: stun.NewLongTermIntegrity(username, testRealm, password),
	}
}

type setter func(*stun.Message) error

func (f setter) AddTo(m *stun.Message) error { return f(m) }

func rawAttr(t stun.AttrType, v []byte) stun.Setter {
	return setter(func(m *stun.Message) error { m.Add(t, v); return nil })
}

func udpTransport() stun.Setter { return rawAttr(stun.AttrRequestedTransport, []byte{17, 0, 0, 0}) }

func lifetimeAttr(d time.Duration) stun.Setter {
	return rawAttr(stun.AttrLifetime, binary.BigEndian.AppendUint32(nil, uint32(d/time.Second)))
}

func channelAttr(n uint16) stun.Setter {
	return rawAttr(stun.AttrChannelNumber, []byte{byte(n >> 8), byte(n), 0, 0})
}

func peerAttr(ip net.IP, port int) stun.Setter {
	return setter(func(m *stun.Message) error {
		return stun.XORMappedAddress{IP: ip, Port: port}.AddToAs(m, stun.AttrXORPeerAddress)
	})
}

func (c *rawClient) send(raw []byte) {
	c.t.Helper()
	if _, err := c.conn.Write(raw); err != nil {
		c.t.Fatal(err)
	}
}

// read returns the next STUN message, or nil at the deadline.
func (c *rawClient) read(deadline time.Time) *stun.Message {
	c.t.Helper()
	c.conn.SetReadDeadline(deadline)
	buf := make([]byte, 2048)
	var n int
	var err error
	if c.stream {
		if _, err = io.ReadFull(c.conn, buf[:20]); err == nil {
			l := int(binary.BigEndian.Uint16(buf[2:4]))
			_, err = io.ReadFull(c.conn, buf[20:20+l])
			n = 20 + l
		}
	} else {
		n, err = c.conn.Read(buf)
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return nil
	}
	if err != nil {
		c.t.Fatal(err)
	}
	m := &stun.Message{Raw: buf[:n]}
	if err := m.Decode(); err != nil {
		c.t.Fatal(err)
	}
	return m
}

// build makes a request; signed ones carry the long-term credential.
func (c *rawClient) build(method stun.Method, signed bool, attrs ...stun.Setter) *stun.Message {
	c.t.Helper()
	s := append([]stun.Setter{stun.TransactionID, stun.NewType(method, stun.ClassRequest)}, attrs...)
	if signed {
		s = append(s, c.user, c.realm, c.nonce, c.key)
	}
	m, err := stun.Build(append(s, stun.Fingerprint)...)
	if err != nil {
		c.t.Fatal(err)
	}
	return m
}

// roundTrip sends m and returns the response with its transaction ID.
func (c *rawClient) roundTrip(m *stun.Message) *stun.Message {
	c.t.Helper()
	c.send(m.Raw)
	deadline := time.Now().Add(5 * time.Second)
	for {
		res := c.read(deadline)
		if res == nil {
			c.t.Fatalf("no response to %v", m.Type)
		}
		if res.TransactionID == m.TransactionID {
			return res
		}
	}
}

// do sends an authenticated request, fetching a nonce first if needed.
func (c *rawClient) do(method stun.Method, attrs ...stun.Setter) *stun.Message {
	c.t.Helper()
	if c.nonce == nil {
		res := c.roundTrip(c.build(stun.MethodAllocate, false, udpTransport()))
		if err := c.nonce.GetFrom(res); err != nil {
			c.t.Fatalf("no nonce in %v: %v", res, err)
		}
	}
	return c.roundTrip(c.build(method, true, attrs...))
}

func errorCode(m *stun.Message) int {
	if m.Type.Class != stun.ClassErrorResponse {
		return 0
	}
	var ec stun.ErrorCodeAttribute
	if err := ec.GetFrom(m); err != nil {
		return -1 // an error response without a code, as pion sends for CreatePermission
	}
	return int(ec.Code)
}

// capture is a transport for calling inspect directly: it keeps the
// answers inspect sends.
type capture struct {
	owner   keyOwner
	replies [][]byte
}

func (c *capture) reply(b []byte, _ net.Addr) {
	c.replies = append(c.replies, append([]byte(nil), b...))
}
func (c *capture) keyOwner() *keyOwner { return &c.owner }
