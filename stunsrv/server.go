// Package stunsrv is the front door of the STUN port: it owns its UDP and
// TCP sockets (and the TLS listeners TURN adds), answers STUN Binding
// requests (RFC 8489) itself, fast enough to stand in for a public STUN
// service, and hands everything else to the TURN server.
//
// Everything on the port that is not a Binding request — TURN requests and
// ChannelData — is handed, on the same sockets, to whoever reads PacketConns
// and Listeners (the TURN server); with nobody reading, it is dropped and
// counted. Binding answers never allocate and leave from the address the
// request was sent to, even on a wildcard-bound socket. Stream connections
// are framed, capped per source and in total, timed out when idle and, on
// TLS listeners, terminated here. The UDP I/O under it is internal/udpio.
package stunsrv

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"icebox/internal/cfgerr"
	"icebox/internal/ipclass"
	"icebox/internal/udpio"
)

// Config is the stun section of icebox's config file.
type Config struct {
	// Addresses that answer STUN Binding requests, on UDP and TCP alike.
	// ":3478" is every address, IPv4 and IPv6; "0.0.0.0:3478" every IPv4
	// address only. The TURN relay shares these. Default [":3478"].
	Listen []string `yaml:"listen"`
	// Also answer over TCP (RFC 8489 framing); some networks block UDP.
	// Default true.
	TCP bool `yaml:"tcp"`
	// UDP sockets per address (SO_REUSEPORT), so several cores read at
	// once. Default 0: one per CPU.
	Sockets int `yaml:"sockets"`
	// Open TCP and TLS connections allowed at once (STUN port and TURN's
	// TLS port together); more are closed straight away, so a connection
	// flood cannot exhaust file descriptors. Default 1024.
	MaxTCPConnections int `yaml:"max_tcp_connections"`
	// Of those, how many one source may hold: an IPv4 address, or an IPv6
	// /64 (its owner can use any address in it). Once half of
	// max_tcp_connections are open, a source that holds any may hold at
	// most an eighth of what is still free, so a few sources cannot take
	// every slot either. Default 64.
	MaxTCPConnectionsPerSource int `yaml:"max_tcp_connections_per_source"`
	// Close a TCP connection that sends nothing for this long (a Binding
	// client is done in one round trip). Only a connection that holds a
	// TURN allocation may stay quiet longer: up to turn.quotas.max_lifetime
	// plus a minute, which follows max_lifetime on reload. Default 30s.
	TCPIdleTimeout time.Duration `yaml:"tcp_idle_timeout"`
	// A TLS connection must finish its handshake within this long.
	// Default 10s.
	TLSHandshakeTimeout time.Duration `yaml:"tls_handshake_timeout"`
	// TLS handshakes in flight at once; more connections are closed
	// straight away, so slow handshakes cannot pile up. One source may
	// have max_tcp_connections_per_source of them in flight, and once half
	// are, an eighth of what is still free. Must exceed
	// max_tcp_connections_per_source, so one source cannot hold them all.
	// Default 256.
	MaxTLSHandshakes int `yaml:"max_tls_handshakes"`
}

// DefaultConfig returns the settings icebox runs with when the config file
// says nothing.
func DefaultConfig() Config {
	return Config{
		Listen:                     []string{":3478"},
		TCP:                        true,
		MaxTCPConnections:          1024,
		MaxTCPConnectionsPerSource: 64,
		TCPIdleTimeout:             30 * time.Second,
		TLSHandshakeTimeout:        10 * time.Second,
		MaxTLSHandshakes:           256,
	}
}

// Validate reports every invalid option, keyed relative to the stun section.
func (c *Config) Validate() error {
	var errs []error
	if len(c.Listen) == 0 {
		errs = append(errs, cfgerr.New("listen", "no address to listen on", `listen: [":3478"]`))
	}
	var parsed []netip.AddrPort
	for i, addr := range c.Listen {
		ap, err := parseListen(addr)
		if err != nil {
			errs = append(errs, cfgerr.Newf(fmt.Sprintf("listen[%d]", i), `write host:port, e.g. ":3478" or "192.0.2.1:3478"`, "%v", err))
			continue
		}
		for j, earlier := range parsed {
			if covers(earlier, ap) || covers(ap, earlier) {
				errs = append(errs, cfgerr.Newf(fmt.Sprintf("listen[%d]", i), overlapFix(earlier, ap),
					"%q overlaps listen[%d] %q: both would bind the same port", addr, j, c.Listen[j]))
			}
		}
		parsed = append(parsed, ap)
	}
	if c.Sockets < 0 || c.Sockets > 256 {
		errs = append(errs, cfgerr.Newf("sockets", "0 (one per CPU) or a count up to 256", "%d sockets per address makes no sense", c.Sockets))
	}
	// The TCP limits bind TURN's TLS listeners too (AddListener), so they
	// are checked with tcp: false as well.
	if c.MaxTCPConnections < 1 {
		errs = append(errs, cfgerr.New("max_tcp_connections", "must be at least 1", "max_tcp_connections: 1024"))
	}
	if c.MaxTCPConnectionsPerSource < 1 {
		errs = append(errs, cfgerr.New("max_tcp_connections_per_source", "must be at least 1", "max_tcp_connections_per_source: 64"))
	}
	if c.TLSHandshakeTimeout < time.Second {
		errs = append(errs, cfgerr.New("tls_handshake_timeout", "shorter than a second fails clients on slow links", "tls_handshake_timeout: 10s"))
	}
	if c.MaxTLSHandshakes <= c.MaxTCPConnectionsPerSource {
		errs = append(errs, cfgerr.Newf("max_tls_handshakes", "max_tls_handshakes: 256, or lower max_tcp_connections_per_source",
			"%d handshakes in flight let one source (max_tcp_connections_per_source: %d) hold them all", c.MaxTLSHandshakes, c.MaxTCPConnectionsPerSource))
	}
	if c.TCPIdleTimeout < time.Second {
		errs = append(errs, cfgerr.New("tcp_idle_timeout", "shorter than a second drops clients mid-handshake", "tcp_idle_timeout: 30s"))
	}
	return errors.Join(errs...)
}

func parseListen(s string) (netip.AddrPort, error) {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return netip.AddrPort{}, err
	}
	p, err := strconv.ParseUint(port, 10, 16)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("port %q is not a number from 0 to 65535", port)
	}
	if host == "" {
		return netip.AddrPortFrom(netip.IPv6Unspecified(), uint16(p)), nil
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("host %q is not an IP address", host)
	}
	return netip.AddrPortFrom(ip, uint16(p)), nil
}

// covers says whether binding a takes the port b would bind: the same
// address, or a wildcard of b's family on the same port. "[::]" (and ":P")
// is dual-stack: it covers IPv4 too; "0.0.0.0" is IPv4 only (ipclass.ListenNetwork).
func covers(a, b netip.AddrPort) bool {
	if a.Port() != b.Port() {
		return false
	}
	aa, ba := a.Addr().Unmap(), b.Addr().Unmap()
	switch {
	case aa == ba:
		return true
	case aa == netip.IPv6Unspecified():
		return true
	case aa == netip.IPv4Unspecified():
		return ba.Is4()
	}
	return false
}

func overlapFix(a, b netip.AddrPort) string {
	if a.Addr().IsUnspecified() || b.Addr().IsUnspecified() {
		return fmt.Sprintf(`keep one: [":%d"] alone covers every IPv4 and IPv6 address`, a.Port())
	}
	return "list each address once"
}

// Options are what the rest of icebox hands the STUN server.
type Options struct {
	Logger     *slog.Logger
	Registerer prometheus.Registerer // nil: metrics are kept but not exported
	// Passthrough hands everything but Binding requests to the reader of
	// PacketConns and Listeners: set it when a TURN server shares the port.
	Passthrough bool
	// TURNIdleTimeout replaces TCPIdleTimeout once a TCP connection holds
	// a TURN allocation; it must outlast an allocation's refresh interval,
	// so it follows the TURN server's maximum lifetime (SetTURNIdleTimeout
	// on reload). Required with Passthrough: only the TURN server's owner
	// knows it.
	TURNIdleTimeout time.Duration
}

// Server owns the STUN port's sockets.
type Server struct {
	cfg   Config
	opts  Options
	log   *slog.Logger
	stats *stats

	udp []*packetConn
	tcp []*tcpListener

	admit *admission
	idle  atomic.Int64 // time.Duration: TCPIdleTimeout, changed by SetTCPIdleTimeout
	// turnIdle is Options.TURNIdleTimeout, changed by SetTURNIdleTimeout.
	turnIdle atomic.Int64

	start time.Time
	// skew moves the liveness clock forward: tests age a busy loop
	// without waiting.
	skew atomic.Int64

	wg sync.WaitGroup

	mu    sync.Mutex
	extra []*tcpListener // AddListener's
}

// New binds every listen address and starts answering at once. Errors name
// the address and, for a port in use, what may hold it.
func New(cfg Config, opts Options) (*Server, error) {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Passthrough && opts.TURNIdleTimeout <= 0 {
		return nil, errors.New("stun: Options.TURNIdleTimeout is required with Passthrough")
	}
	s := &Server{cfg: cfg, opts: opts, log: opts.Logger, stats: newStats(), start: time.Now(), admit: newAdmission(cfg)}
	s.idle.Store(int64(cfg.TCPIdleTimeout))
	s.turnIdle.Store(int64(opts.TURNIdleTimeout))
	if err := s.stats.set.Register(opts.Registerer); err != nil {
		return nil, err
	}
	sockets := cfg.Sockets
	if sockets == 0 {
		sockets = runtime.GOMAXPROCS(0)
	}
	for _, addr := range cfg.Listen {
		if err := s.listen(addr, sockets); err != nil {
			s.Close()
			return nil, err
		}
	}
	if !opts.Passthrough {
		s.drain()
	}
	return s, nil
}

// listen binds UDP and, if configured, TCP on one address. With port 0
// (tests) the kernel picks the UDP port and TCP must get the same one; if
// a TCP socket already holds it, try another.
func (s *Server) listen(addr string, sockets int) error {
	ap, _ := parseListen(addr)
	for attempt := 0; ; attempt++ {
		nUDP := len(s.udp)
		if err := s.listenUDP(addr, sockets); err != nil {
			return err
		}
		if !s.cfg.TCP {
			return nil
		}
		err := s.listenTCP(addr)
		if err == nil || ap.Port() != 0 || attempt == 10 || !errors.Is(err, syscall.EADDRINUSE) {
			return err
		}
		for _, pc := range s.udp[nUDP:] {
			pc.Close()
		}
		s.udp = s.udp[:nUDP]
	}
}

func (s *Server) listenUDP(addr string, sockets int) error {
	ap, err := parseListen(addr)
	if err != nil {
		return fmt.Errorf("stun: listen %q: %w", addr, err)
	}
	wildcard := ap.Addr().IsUnspecified()
	udp := ipclass.ListenNetwork("udp", addr)
	// SO_REUSEPORT would let us share the port with another server started
	// with it too (coturn is), splitting traffic silently. Bind once
	// without it first, so a taken port is reported, not shared.
	if sockets > 1 {
		probe, err := net.ListenPacket(udp, addr)
		if err != nil {
			return bindError("udp", addr, err)
		}
		addr = probe.LocalAddr().String() // pin port 0 to what we got
		probe.Close()
	}
	for range sockets {
		lc := net.ListenConfig{Control: func(network, _ string, rc syscall.RawConn) error {
			var serr error
			err := rc.Control(func(fd uintptr) {
				if sockets > 1 {
					if serr = udpio.ControlReusePort(fd); serr != nil {
						return
					}
				}
				if wildcard {
					serr = udpio.ControlPktinfo(network == "udp6")(fd)
				}
			})
			return errors.Join(err, serr)
		}}
		c, err := lc.ListenPacket(context.Background(), udp, addr)
		if err != nil {
			return bindError("udp", addr, err)
		}
		uc := c.(*net.UDPConn)
		// A burst (every relay's batch, a flood of Bindings) must queue
		// rather than drop while the reader works; the kernel caps these
		// at net.core.rmem_max and wmem_max.
		uc.SetReadBuffer(socketBuffer)
		uc.SetWriteBuffer(socketBuffer)
		s.udp = append(s.udp, newPacketConn(uc, s.stats, s.opts.Passthrough, s.clock))
		addr = c.LocalAddr().String()
	}
	return nil
}

func (s *Server) listenTCP(addr string) error {
	// Same port as UDP when the config asked for port 0 (tests).
	if ap, _ := parseListen(addr); ap.Port() == 0 && len(s.udp) > 0 {
		addr = s.udp[len(s.udp)-1].LocalAddr().String()
	}
	ln, err := net.Listen(ipclass.ListenNetwork("tcp", addr), addr)
	if err != nil {
		return bindError("tcp", addr, err)
	}
	s.tcp = append(s.tcp, s.newTCPListener(ln, nil))
	return nil
}

func (s *Server) newTCPListener(ln net.Listener, tlsConfig *tls.Config) *tcpListener {
	l := &tcpListener{
		Listener:    ln,
		stats:       s.stats,
		admit:       s.admit,
		tls:         tlsConfig,
		passthrough: s.opts.Passthrough,
		idle:        &s.idle,
		turnIdle:    &s.turnIdle,
		handshake:   s.cfg.TLSHandshakeTimeout,
		ready:       make(chan net.Conn),
		done:        make(chan struct{}),
		conns:       make(map[*tcpConn]struct{}),
		loop:        loopState{clock: s.clock},
		handoff:     loopState{clock: s.clock},
	}
	l.loop.working() // until a reader comes
	l.handoff.working()
	if tlsConfig != nil {
		s.wg.Go(l.acceptTLS)
	}
	return l
}

// AddListener puts the front door in front of one more stream listener:
// its connections get the same caps (shared with the STUN port's, per
// source and in total), idle timeouts, framing and Binding answers, and,
// with tlsConfig, TLS termination with a handshake deadline and a bound on
// handshakes in flight. Give tlsConfig nil for a listener whose
// connections are already plain STUN/TURN streams (e.g. TLS terminated by
// a :443 demultiplexer). Serve the returned listener as Listeners'; Close
// closes it with the rest.
func (s *Server) AddListener(ln net.Listener, tlsConfig *tls.Config) net.Listener {
	l := s.newTCPListener(ln, tlsConfig)
	s.mu.Lock()
	s.extra = append(s.extra, l)
	s.mu.Unlock()
	return l
}

// socketBuffer is the receive and send buffer asked for each UDP socket
// of the front door. Memory is only used while datagrams queue.
const socketBuffer = 4 << 20

// clock is the monotonic time since start, as liveness measures it.
func (s *Server) clock() time.Duration {
	return time.Since(s.start) + time.Duration(s.skew.Load())
}

func bindError(network, addr string, err error) error {
	_, port, _ := net.SplitHostPort(addr)
	switch {
	case errors.Is(err, syscall.EADDRINUSE):
		return fmt.Errorf("stun: %s port %s is already in use (another STUN/TURN server such as coturn may hold it; `ss -%slnp 'sport = :%s'` shows which process): %w",
			network, port, map[string]string{"udp": "u", "tcp": "t"}[network], port, err)
	case errors.Is(err, syscall.EACCES) || errors.Is(err, os.ErrPermission):
		return fmt.Errorf("stun: %s port %s needs privileges (run under systemd with AmbientCapabilities=CAP_NET_BIND_SERVICE, or pick a port above 1023): %w", network, port, err)
	default:
		return fmt.Errorf("stun: listen %s %s: %w", network, addr, err)
	}
}

// drain reads the sockets when no TURN server does: ReadFrom and Read
// answer Bindings and return only what is then dropped.
func (s *Server) drain() {
	for _, pc := range s.udp {
		s.wg.Go(func() {
			buf := make([]byte, 2048)
			for {
				if _, _, err := pc.ReadFrom(buf); err != nil {
					return
				}
			}
		})
	}
	for _, l := range s.tcp {
		s.wg.Go(func() {
			for {
				c, err := l.Accept()
				if err != nil {
					return
				}
				s.wg.Go(func() {
					defer c.Close()
					buf := make([]byte, 512)
					for {
						if _, err := c.Read(buf); err != nil {
							return
						}
					}
				})
			}
		})
	}
}

// PacketConns returns the UDP sockets for a TURN server to read (see
// Options.Passthrough). They stay this server's: Close closes them. A TURN
// server that reads them closes them too when it stops (pion has no other
// way to stop reading), which Close takes in its stride.
func (s *Server) PacketConns() []net.PacketConn {
	out := make([]net.PacketConn, len(s.udp))
	for i, pc := range s.udp {
		out[i] = pc
	}
	return out
}

// Listeners returns the TCP listeners for a TURN server to accept on;
// like PacketConns, Close closes them, and so may the TURN server.
func (s *Server) Listeners() []net.Listener {
	out := make([]net.Listener, len(s.tcp))
	for i, l := range s.tcp {
		out[i] = l
	}
	return out
}

// Addrs lists what listens where, for the start-up summary ("udp [::]:3478 x2").
func (s *Server) Addrs() []string {
	var out []string
	counts := map[string]int{}
	for _, pc := range s.udp {
		a := pc.LocalAddr().String()
		if counts[a] == 0 {
			out = append(out, "udp "+a)
		}
		counts[a]++
	}
	for i, a := range out {
		if n := counts[a[4:]]; n > 1 {
			out[i] = fmt.Sprintf("%s (%d sockets)", a, n)
		}
	}
	for _, l := range s.tcp {
		out = append(out, "tcp "+l.Addr().String())
	}
	return out
}

// SetTCPIdleTimeout changes the idle timeout for frames read from now on.
func (s *Server) SetTCPIdleTimeout(d time.Duration) { s.idle.Store(int64(d)) }

// SetTURNIdleTimeout changes Options.TURNIdleTimeout for frames read from
// now on: a reload that changes the TURN server's maximum lifetime must
// reach the connections that hold allocations.
func (s *Server) SetTURNIdleTimeout(d time.Duration) { s.turnIdle.Store(int64(d)) }

// TURNIdleTimeout is the TURN idle timeout in force.
func (s *Server) TURNIdleTimeout() time.Duration { return time.Duration(s.turnIdle.Load()) }

// Close closes every socket and waits for the server's own readers; a
// socket the TURN server closed already is no error. Open TCP connections
// are closed by whoever accepted them (Close does so for its own).
func (s *Server) Close() error {
	var errs []error
	closeSocket := func(c io.Closer) {
		if err := c.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
			errs = append(errs, err)
		}
	}
	for _, pc := range s.udp {
		closeSocket(pc)
	}
	for _, l := range s.tcp {
		closeSocket(l)
	}
	s.mu.Lock()
	extra := s.extra
	s.mu.Unlock()
	for _, l := range extra {
		closeSocket(l)
	}
	s.wg.Wait()
	s.stats.set.Unregister(s.opts.Registerer)
	return errors.Join(errs...)
}
