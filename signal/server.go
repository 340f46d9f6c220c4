// Package signal relays WebRTC signaling between the members of a pairing,
// and nobody else.
//
// It serves the WebSocket /connect that the talk's Kotlin app speaks
// (docs/protocol.md): it answers WsInit with the ICE servers the client is
// to use, with fresh TURN credentials, and forwards offers, answers and ICE
// candidates, byte for byte, to the other members of the pairing named by
// controllerId, on this node or, through a Cluster, on others. The same
// listener answers /healthz and, for apps with their own signaling, GET
// /ice-servers.
//
// Each client gets a bounded send queue of its own and at most one writer
// goroutine, so a slow or hostile client can only ever hurt itself.
package signal

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
	"github.com/prometheus/client_golang/prometheus"

	"icebox/internal/persource"
	"icebox/internal/promset"
)

// ICEServer is one entry of the WsIceServers list, as the app decodes it.
type ICEServer struct {
	URLs       []string `json:"urls"`
	Username   string   `json:"username,omitempty"`
	Credential string   `json:"credential,omitempty"`
}

// ICEServersFunc returns icebox's own ICE servers with fresh TURN
// credentials for one client, and when those expire (zero: never).
type ICEServersFunc func(user string) (servers []ICEServer, expires time.Time)

// Options are the parts of a Server that come from main rather than from
// the signal section of the config.
type Options struct {
	// GetCertificate makes Serve speak TLS (HTTPS, WSS) with the
	// certificate it returns per handshake; icebox's internal/certs
	// supplies it, re-read as the files change or ACME renews. nil: plain
	// HTTP.
	GetCertificate func(*tls.ClientHelloInfo) (*tls.Certificate, error)

	Logger     *slog.Logger          // nil: discard
	Registerer prometheus.Registerer // nil: don't register
	ICEServers ICEServersFunc        // nil: an empty list
	TokenKeys  [][]byte              // join-token HMAC keys: a token minted with any of them is accepted
	// Now is the clock that ages kept offers and refills credential
	// budgets; nil: time.Now. Tests move it to expire an offer or refill a
	// budget without waiting.
	Now func() time.Time
	// Cluster spans pairings over other icebox nodes; nil: pairings live
	// in this process only.
	Cluster Cluster
}

// Server is the signaling server. Its methods are safe for concurrent use.
type Server struct {
	log       *slog.Logger
	ice       ICEServersFunc
	set       atomic.Pointer[settings]
	keys      atomic.Pointer[[][]byte]
	hub       *hub
	mux       *http.ServeMux
	up        websocket.Upgrader
	bufs      sync.Pool // *readBuf
	errFrames *errorFrames
	cm        *connMetrics
	em        *errorMetrics
	mints     *mintBudget
	peers     persource.Counter // admitted WebSockets, by clientKey
	httpConns httpAdmission     // TCP connections before the upgrade
	tlsConf   *tls.Config       // nil without TLS
	// closeGrace is how long a client has to answer our close frame.
	closeGrace time.Duration

	mu      sync.Mutex
	conns   map[*conn]struct{}
	servers []*http.Server
	closing bool
	wg      sync.WaitGroup
}

// readBufferSize is each connection's read buffer.
const readBufferSize = 512

// settings is a Config with what Reload derives from it.
type settings struct {
	Config
	anyOrigin bool
	origins   map[string]bool
	iceKeys   [][32]byte // SHA-256 of the /ice-servers bearer keys
	proxies   []netip.Prefix
}

// newSettings checks cfg, with keys as the join-token keys, and derives
// the settings.
func newSettings(cfg Config, keys [][]byte) (*settings, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("signal: %w", err)
	}
	if cfg.RequireToken && len(keys) == 0 {
		return nil, errors.New("signal: require_token is set but there is no key to verify join tokens")
	}
	s := &settings{Config: cfg, origins: make(map[string]bool)}
	for _, p := range cfg.TrustedProxies {
		prefix, _ := parseProxy(p) // Validate checked it
		s.proxies = append(s.proxies, prefix)
	}
	s.AllowedOrigins = slices.Clone(cfg.AllowedOrigins)
	for _, o := range cfg.AllowedOrigins {
		n, _ := normOrigin(o)
		s.anyOrigin = s.anyOrigin || n == "*"
		s.origins[n] = true
	}
	for _, k := range cfg.IceServersKeys {
		s.iceKeys = append(s.iceKeys, sha256.Sum256([]byte(k)))
	}
	return s, nil
}

// New returns a Server for cfg; an invalid cfg, or require_token without
// TokenKeys, is an error.
func New(cfg Config, opts Options) (*Server, error) {
	set, err := newSettings(cfg, opts.TokenKeys)
	if err != nil {
		return nil, err
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	reg := promset.New("signal")
	s := &Server{
		log:        log,
		ice:        opts.ICEServers,
		hub:        newHub(reg, opts.Now),
		mux:        http.NewServeMux(),
		errFrames:  newErrorFrames(),
		cm:         newConnMetrics(reg),
		em:         newErrorMetrics(reg),
		mints:      newMintBudget(reg, opts.Now),
		conns:      make(map[*conn]struct{}),
		closeGrace: closeGrace,
	}
	if err := reg.Register(opts.Registerer); err != nil {
		return nil, err
	}
	s.hub.cluster = opts.Cluster
	s.set.Store(set)
	s.setTokenKeys(opts.TokenKeys)
	s.bufs.New = func() any { return &readBuf{msg: make([]byte, 0, 4096)} }
	s.up = websocket.Upgrader{
		HandshakeTimeout: 10 * time.Second,
		// Memory per idle connection is what the server pays for
		// thousands of phones waiting for a call. A small read buffer
		// costs nothing in speed, as frames larger than it are read
		// straight into the pooled message buffer; writes borrow a
		// buffer from a pool, so an idle connection holds none. (gorilla
		// boxes the buffer to put it back, one allocation per message
		// written: the price of holding none. See alloc_test.go.)
		ReadBufferSize:  readBufferSize,
		WriteBufferPool: &sync.Pool{},
		// Origins are checked after the upgrade, so that a refused
		// browser gets a WsError it can show rather than a bare 403.
		CheckOrigin: func(*http.Request) bool { return true },
	}
	if opts.GetCertificate != nil {
		s.tlsConf = tlsConfig(opts.GetCertificate)
	}
	s.mux.HandleFunc("GET /connect", s.serveConnect)
	s.mux.HandleFunc("GET /healthz", s.serveHealth)
	s.mux.HandleFunc("GET /ice-servers", s.serveICEServers)
	return s, nil
}

func (s *Server) settings() *settings { return s.set.Load() }

// capacity is how many members the pairing called name may have, on all
// nodes together.
func (set *settings) capacity(name string) int {
	if name == openRoom {
		return set.OpenRoomCapacity
	}
	return set.RoomCapacity
}

func (s *Server) tokenKeys() [][]byte { return *s.keys.Load() }

// setTokenKeys replaces the join-token keys; a token minted with any of
// them is accepted.
func (s *Server) setTokenKeys(keys [][]byte) {
	k := make([][]byte, len(keys))
	for i := range keys {
		k[i] = slices.Clone(keys[i])
	}
	s.keys.Store(&k)
}

// PrepareReload checks cfg, with keys as the join-token keys, changing
// nothing; the returned commit applies cfg and keys and cannot fail. It
// lets the daemon reload every part or none.
func (s *Server) PrepareReload(cfg Config, keys [][]byte) (commit func(), err error) {
	set, err := newSettings(cfg, keys)
	if err != nil {
		return nil, err
	}
	// The listener stays as it started. Naming a changed listen or
	// enabled is the caller's business, which knows what the process
	// started with.
	old := s.settings()
	set.Listen, set.Enabled = old.Listen, old.Enabled
	return func() {
		s.setTokenKeys(keys)
		s.set.Store(set)
		s.log.Info("signal: configuration reloaded")
	}, nil
}

// Handle mounts another handler on the signaling listener, for pages
// served next to /connect.
func (s *Server) Handle(pattern string, h http.Handler) { s.mux.Handle(pattern, h) }

// Handler serves /connect, /healthz and /ice-servers, and whatever was
// mounted with Handle.
func (s *Server) Handler() http.Handler { return http.HandlerFunc(s.serveHTTP) }

func (s *Server) serveHTTP(w http.ResponseWriter, r *http.Request) {
	if r.TLS == nil {
		// A connection whose TLS another listener terminated.
		if cs, ok := r.Context().Value(tlsStateKey{}).(*tls.ConnectionState); ok {
			r.TLS = cs
		}
	}
	if s.tlsConf != nil && r.TLS == nil && r.URL.Path != "/healthz" {
		// Only health probes may skip TLS on a TLS port.
		http.Error(w, "this port speaks TLS: use https:// or wss://", http.StatusBadRequest)
		return
	}
	s.mux.ServeHTTP(w, r)
}

// Serve accepts connections on ln until Shutdown, then returns nil; after
// Shutdown it closes ln and returns at once. With TLS configured it
// does the TLS itself, and still answers plain-HTTP /healthz probes.
func (s *Server) Serve(ln net.Listener) error {
	if s.tlsConf != nil {
		// Sniffing holds a connection too: it is counted from accept
		// until net/http takes it over (and counts it again).
		ln = newSniffListener(ln, s.tlsConf, s.holdConn, s.releaseConn)
	}
	return s.serve(ln, s.tlsConf != nil)
}

// ServeTerminated is Serve for a listener that has done the TLS already
// (icebox's shared TLS port): its connections' ConnectionState methods
// say what TLS they speak, and requests see it in r.TLS.
func (s *Server) ServeTerminated(ln net.Listener) error {
	return s.serve(ln, true)
}

// tlsStateKey carries the TLS state of a connection that is not a
// *tls.Conn (net/http fills r.TLS only for those) to serveHTTP.
type tlsStateKey struct{}

func (s *Server) serve(ln net.Listener, tlsOn bool) error {
	hs := &http.Server{
		Handler:           s.Handler(),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       time.Minute,
		MaxHeaderBytes:    16 << 10,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
		ConnState:         s.httpConnState,
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			if _, native := c.(*tls.Conn); native {
				return ctx
			}
			if tc, ok := c.(interface{ ConnectionState() tls.ConnectionState }); ok {
				cs := tc.ConnectionState()
				return context.WithValue(ctx, tlsStateKey{}, &cs)
			}
			return ctx
		},
	}
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		ln.Close()
		return nil
	}
	s.servers = append(s.servers, hs)
	s.mu.Unlock()
	s.log.Info("signal: serving", "addr", ln.Addr().String(), "tls", tlsOn)
	if err := hs.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("signal: serve: %w", err)
	}
	return nil
}

// Shutdown stops accepting, closes every WebSocket with 1001 (going away)
// and waits for them to end, or for ctx, after which it cuts the rest.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.closing = true
	servers := slices.Clone(s.servers)
	conns := make([]*conn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()

	var errs []error
	for _, hs := range servers {
		errs = append(errs, hs.Shutdown(ctx))
	}
	for _, c := range conns {
		c.setWhy(byShutdown)
		c.closeWith(websocket.CloseGoingAway, "server shutting down")
	}
	done := make(chan struct{})
	go func() {
		s.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-ctx.Done():
		for _, c := range conns {
			c.kill()
		}
		<-done
		errs = append(errs, ctx.Err())
	}
	return errors.Join(errs...)
}

func (s *Server) serveHealth(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	closing := s.closing
	s.mu.Unlock()
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	if closing {
		w.WriteHeader(http.StatusServiceUnavailable)
		fmt.Fprintln(w, "shutting down")
		return
	}
	fmt.Fprintln(w, "ok")
}

func randomID() string {
	var b [8]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// iceFrame builds the WsIceServers frame for user.
func (s *Server) iceFrame(user string) ([]byte, time.Time, error) {
	servers, exp := s.iceServers(user)
	b, err := encodeFrame(kindIceServers, iceServersData{servers})
	if err != nil {
		return nil, time.Time{}, fmt.Errorf("encode WsIceServers: %w", err)
	}
	return b, exp, nil
}

// iceServersData is the data of WsIceServers and the body of /ice-servers.
type iceServersData struct {
	IceServers []ICEServer `json:"iceServers"`
}

func (s *Server) iceServers(user string) ([]ICEServer, time.Time) {
	var servers []ICEServer
	var exp time.Time
	if s.ice != nil {
		servers, exp = s.ice(user)
	}
	// The app's decoder wants lists, never null.
	out := make([]ICEServer, 0, len(servers))
	for _, sv := range servers {
		if sv.URLs == nil {
			sv.URLs = []string{}
		}
		out = append(out, sv)
	}
	return out, exp
}

// keyAllowed compares digests in constant time, which also hides the
// keys' lengths.
func keyAllowed(keys [][32]byte, key string) bool {
	h := sha256.Sum256([]byte(key))
	ok := 0
	for i := range keys {
		ok |= subtle.ConstantTimeCompare(h[:], keys[i][:])
	}
	return ok == 1
}
