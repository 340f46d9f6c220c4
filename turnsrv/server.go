// Package turnsrv is icebox's TURN relay (RFC 8656): pion/turn answers the
// control plane, set up to accept TURN REST API credentials (made and stored
// by internal/credentials), with a peer policy that keeps the relay from
// becoming a proxy into the host's own network, per-user, per-source and
// total quotas, a bandwidth cap per allocation and throttling of failed
// authentication; icebox's own data plane (dataplane.go) relays
// ChannelData and Send/Data indications without pion.
//
// It serves TURN on sockets stunsrv owns (UDP and TCP on :3478, which
// answer STUN Binding themselves and pass everything else on) and on a TLS
// listener of its own. Every client message passes through inspect before
// pion sees it; relay sockets are wrapped to count traffic and to keep
// permissions for the relay address itself pointed at other relays.
package turnsrv

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/turn/v4"
	"github.com/prometheus/client_golang/prometheus"

	"icebox/internal/credentials"
	"icebox/internal/ipclass"
	"icebox/internal/pionlog"
)

// Options carries what New needs besides the config: things main owns.
type Options struct {
	// Logger receives icebox's and (at debug level) pion's messages.
	// Default: discard.
	Logger *slog.Logger
	// Registerer gets the icebox_turn_* collectors; nil registers none.
	Registerer prometheus.Registerer
	// PublicIP is the IPv4 address clients are told to use for relays: a
	// VM's public address behind a 1:1 NAT. Required: main chooses it
	// (public_ip).
	PublicIP netip.Addr
	// StateDir keeps a generated secret when none is configured.
	StateDir string
	// PacketConns are UDP sockets to serve TURN on (stunsrv's). They stay
	// their maker's, but Close closes them too: pion has no other way to
	// stop reading them. stunsrv's Close does not mind.
	PacketConns []net.PacketConn
	// Listeners are stream listeners to serve TURN on, the front door's
	// (stunsrv.Server.Listeners), whose connections it frames; like
	// PacketConns, Close closes them too.
	Listeners []net.Listener
	// GetCertificate opens TURN over TLS on cfg.TLS.Listen, with the
	// certificate it returns per handshake (icebox's internal/certs:
	// files re-read as they change, or ACME). nil: no TLS listener.
	GetCertificate func(*tls.ClientHelloInfo) (*tls.Certificate, error)
	// FrontDoor admits, frames and terminates the TLS listener's
	// connections with the caps of the STUN port: stunsrv.Server.AddListener.
	// Required with GetCertificate.
	FrontDoor func(ln net.Listener, tlsConfig *tls.Config) net.Listener
	// InterfaceAddrs lists this host's addresses for the peer policy.
	// Default: net.InterfaceAddrs. If it fails, New fails: relaying
	// without knowing the host's own addresses could reach its services.
	InterfaceAddrs func() ([]net.Addr, error)
}

// live is what a reload swaps (Commit): everything read per request.
type live struct {
	cfg     Config
	secrets [][]byte // never empty; [0] mints
	policy  *peerPolicy
}

// Server is a running TURN relay.
type Server struct {
	log      *slog.Logger
	realm    string // fixed: pion announces it in every 401
	stateDir string
	reg      prometheus.Registerer
	publicIP netip.Addr
	relayIPs []netip.Addr // where relay sockets can be reached
	ifaces   func() ([]net.Addr, error)
	ownExtra []netip.Addr // own addresses interfaces may not list: public IP, listeners

	live       atomic.Pointer[live]
	metrics    *metrics
	keys       authKeys
	guard      authGuard
	answers    answerBudget
	quotas     *quotas
	relayPorts portSet

	tlsLn net.Listener // nil without TLS

	mu      sync.Mutex
	conns   map[*frameConn]struct{}       // accepted stream connections
	streams map[netip.AddrPort]*frameConn // the same, by client address
	closed  bool

	dp        *dataPlane
	pion      *turn.Server
	closeOnce sync.Once
	closeErr  error
}

// New validates cfg and starts serving TURN on opts' sockets and, when
// opts has a certificate source, on a TLS listener of its own.
func New(cfg Config, opts Options) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("turn config: %w", err)
	}
	if !cfg.Enabled {
		return nil, errors.New("turn: enabled is false; the caller should not start TURN")
	}
	if opts.GetCertificate != nil && cfg.TLS.Listen != "" && opts.FrontDoor == nil {
		return nil, errors.New("turn: tls needs the front door (Options.FrontDoor)")
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	secrets, err := credentials.Load(cfg.SecretSources(), opts.StateDir, true)
	if err != nil {
		return nil, err
	}
	credentials.WarnLooseFile(log, cfg.SecretFile)

	bind := cfg.relayBind()
	ifaces := opts.InterfaceAddrs
	if ifaces == nil {
		ifaces = net.InterfaceAddrs
	}
	public := opts.PublicIP.Unmap()
	if !public.IsValid() {
		return nil, errors.New("turn: no public IP to tell clients (Options.PublicIP)")
	}
	if !public.Is4() {
		return nil, fmt.Errorf("turn: public IP %v is not IPv4; relays are UDP over IPv4", opts.PublicIP)
	}
	lo, hi, _ := parsePorts(cfg.Relay.Ports)

	s := &Server{
		log:      log,
		realm:    cfg.Realm,
		stateDir: opts.StateDir,
		reg:      opts.Registerer,
		publicIP: public,
		relayIPs: []netip.Addr{public},
		ownExtra: []netip.Addr{public},
		ifaces:   ifaces,
		metrics:  newMetrics(),
		quotas:   newQuotas(),
		conns:    map[*frameConn]struct{}{},
		streams:  map[netip.AddrPort]*frameConn{},
	}
	s.dp = newDataPlane(s)
	if !bind.IsUnspecified() && bind != public {
		s.relayIPs = append(s.relayIPs, bind)
	}
	for _, pc := range opts.PacketConns {
		s.ownExtra = appendSpecific(s.ownExtra, pc.LocalAddr())
	}
	for _, l := range opts.Listeners {
		s.ownExtra = appendSpecific(s.ownExtra, l.Addr())
	}
	own, err := s.ownAddrs()
	if err != nil {
		return nil, err
	}
	s.live.Store(&live{cfg: cfg, secrets: secrets, policy: newPeerPolicy(cfg.Peers, own, s.relayIPs)})

	listeners := opts.Listeners
	if opts.GetCertificate != nil && cfg.TLS.Listen != "" {
		tlsConfig := &tls.Config{GetCertificate: opts.GetCertificate, MinVersion: tls.VersionTLS12}
		ln, err := net.Listen(ipclass.ListenNetwork("tcp", cfg.TLS.Listen), cfg.TLS.Listen)
		if err != nil {
			return nil, fmt.Errorf("turn: tls listen: %w", err)
		}
		s.tlsLn = opts.FrontDoor(ln, tlsConfig)
		listeners = append(listeners[:len(listeners):len(listeners)], s.tlsLn)
	}
	if len(opts.PacketConns) == 0 && len(listeners) == 0 {
		return nil, errors.New("turn: no sockets to serve on")
	}

	if err := s.metrics.set.Register(s.reg); err != nil {
		s.closeTLS()
		return nil, err
	}

	gen := &relayGenerator{s: s, inner: &turn.RelayAddressGeneratorPortRange{
		RelayAddress: public.AsSlice(),
		Address:      bind.String(),
		MinPort:      lo,
		MaxPort:      hi,
	}}
	pc := turn.ServerConfig{
		LoggerFactory: pionlog.New(log),
		Realm:         cfg.Realm,
		AuthHandler:   s.authenticate,
		QuotaHandler:  s.admit,
		EventHandler: turn.EventHandler{
			// The gauges move before the quota count, whose change wakes
			// whoever waits for it: a waiter then reads gauges that agree.
			OnAllocationCreated: func(src, _ net.Addr, _, username, _ string, relay net.Addr, _ int) {
				s.dp.allocationCreated(src, relay)
				s.streamAllocated(src, true)
				s.metrics.allocActive.Inc()
				s.metrics.allocTotal.Inc()
				s.quotas.created(userOf(username), connIDOf(src))
			},
			OnAllocationDeleted: func(src, _ net.Addr, _, username, _ string) {
				s.dp.allocationDeleted(src)
				s.streamAllocated(src, false)
				s.metrics.allocActive.Dec()
				s.quotas.deleted(userOf(username), connIDOf(src))
			},
			OnAllocationError: func(src, _ net.Addr, _, _ string) { s.quotas.failed(connIDOf(src)) },
			OnChannelDeleted: func(src, _ net.Addr, _, _, _ string, _ net.Addr, _ net.Addr, number uint16) {
				if a := s.dp.lookup(connIDOf(src)); a != nil {
					a.unbind(number)
				}
			},
			OnPermissionDeleted: func(src, _ net.Addr, _, _, _ string, _ net.Addr, peer net.IP) {
				if a := s.dp.lookup(connIDOf(src)); a != nil {
					if ip, ok := netip.AddrFromSlice(peer); ok {
						a.unpermit(ip.Unmap())
					}
				}
			},
		},
	}
	for _, c := range opts.PacketConns {
		pc.PacketConnConfigs = append(pc.PacketConnConfigs, turn.PacketConnConfig{
			PacketConn:            &packetConn{PacketConn: c, s: s},
			RelayAddressGenerator: gen,
			PermissionHandler:     s.permit,
		})
	}
	for _, l := range listeners {
		pc.ListenerConfigs = append(pc.ListenerConfigs, turn.ListenerConfig{
			Listener:              &streamListener{Listener: l, s: s},
			RelayAddressGenerator: gen,
			PermissionHandler:     s.permit,
		})
	}
	if s.pion, err = turn.NewServer(pc); err != nil {
		s.closeTLS()
		s.metrics.set.Unregister(s.reg)
		return nil, fmt.Errorf("turn: starting pion/turn: %w", err)
	}

	tlsAt := "off"
	if s.tlsLn != nil {
		tlsAt = s.tlsLn.Addr().String()
	}
	log.Info("turn: serving",
		"relay_ip", public, "relay_bind", bind, "relay_ports", cfg.Relay.Ports,
		"udp_sockets", len(opts.PacketConns), "stream_listeners", len(listeners),
		"tls", tlsAt, "secrets", len(secrets))
	return s, nil
}

// SecretSources are the places cfg names for TURN secrets.
func (c Config) SecretSources() credentials.Sources {
	return credentials.Sources{Secrets: c.Secrets, File: c.SecretFile, Env: c.SecretEnv}
}

// relayBind is the address relays bind to; Validate has checked it.
func (c Config) relayBind() netip.Addr {
	if c.Relay.Address == "" {
		return netip.IPv4Unspecified()
	}
	return netip.MustParseAddr(c.Relay.Address).Unmap()
}

func appendSpecific(as []netip.Addr, a net.Addr) []netip.Addr {
	var ip net.IP
	switch a := a.(type) {
	case *net.UDPAddr:
		ip = a.IP
	case *net.TCPAddr:
		ip = a.IP
	}
	if na, ok := netip.AddrFromSlice(ip); ok && !na.Unmap().IsUnspecified() {
		as = append(as, na.Unmap())
	}
	return as
}

// ownAddrs is the own-address rule's list: read again on every reload, since
// interfaces come and go.
func (s *Server) ownAddrs() ([]netip.Addr, error) {
	addrs, err := hostAddrs(s.ifaces)
	return append(addrs, s.ownExtra...), err
}

func (s *Server) closeTLS() {
	if s.tlsLn != nil {
		s.tlsLn.Close()
	}
}

// permit is pion's PermissionHandler, for CreatePermission and ChannelBind
// on every listener. Send needs a permission, so it is covered too.
func (s *Server) permit(client net.Addr, peer net.IP) bool {
	r := s.live.Load().policy.refusal(peer)
	if r == "" {
		return true
	}
	s.metrics.peerRefusals[r].Inc()
	s.log.Debug("turn: peer refused", "client", client, "peer", peer, "reason", r)
	return false
}

// admit is pion's QuotaHandler; pion answers 486 when it returns false.
func (s *Server) admit(username, _ string, src net.Addr) bool {
	by := s.quotas.admit(userOf(username), connIDOf(src), s.live.Load().cfg.Quotas, time.Now())
	if by == "" {
		return true
	}
	s.metrics.quotaRefusals[by].Inc()
	s.log.Debug("turn: allocation refused by quota", "client", src, "quota", by)
	return false
}

// trackConn adds or removes an accepted stream connection; adding fails
// once the server is closed.
func (s *Server) trackConn(c *frameConn, add bool) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	from := connIDOf(c.RemoteAddr()).src
	if !add {
		delete(s.conns, c)
		if s.streams[from] == c {
			delete(s.streams, from)
		}
		return true
	}
	if s.closed {
		return false
	}
	s.conns[c] = struct{}{}
	s.streams[from] = c
	return true
}

// streamAllocated tells a stream connection whether it holds an
// allocation: the front door keeps only those open through long silences.
func (s *Server) streamAllocated(client net.Addr, held bool) {
	id := connIDOf(client)
	if !id.stream {
		return
	}
	s.mu.Lock()
	c := s.streams[id.src]
	s.mu.Unlock()
	if fd, ok := c.frontDoorConn(); ok {
		fd.SetAllocated(held)
	}
}

// closeWait bounds how long Close waits for pion to release allocations.
const closeWait = 5 * time.Second

// Close stops serving: it closes the sockets and listeners it was given,
// its TLS listener and every stream connection, and waits for the
// allocations to be released.
func (s *Server) Close() error {
	s.closeOnce.Do(func() {
		s.mu.Lock()
		s.closed = true
		conns := make([]*frameConn, 0, len(s.conns))
		for c := range s.conns {
			conns = append(conns, c)
		}
		s.mu.Unlock()

		err := s.pion.Close()
		for _, c := range conns {
			c.Close()
		}
		timeout := time.NewTimer(closeWait)
		defer timeout.Stop()
	wait:
		for {
			n, changed := s.quotas.held()
			if n == 0 {
				break
			}
			select {
			case <-changed:
			case <-timeout.C:
				err = errors.Join(err, fmt.Errorf("turn: %d allocations still open after %v", n, closeWait))
				break wait
			}
		}
		s.metrics.set.Unregister(s.reg)
		if err != nil {
			s.closeErr = fmt.Errorf("turn: close: %w", err)
		}
	})
	return s.closeErr
}

// PreparedReload is a reload that has loaded everything it needs and can
// no longer fail: Commit applies it, and dropping it changes nothing. It
// lets the daemon reload every part or none.
type PreparedReload struct {
	s    *Server
	live *live
}

// Secrets are the secrets the reload would put in force; the first mints.
func (p *PreparedReload) Secrets() [][]byte { return p.live.secrets }

// Commit applies the prepared reload: cfg's secrets, credential
// lifetimes, peer policy and quotas apply to new requests; existing
// allocations, permissions and channels survive. Settings that need a
// restart (enabled, realm, relay, tls.listen) are ignored; naming them is
// the caller's business, which knows what the process started with. The
// certificate is the source's business (Options.GetCertificate).
func (p *PreparedReload) Commit() {
	s := p.s
	credentials.WarnLooseFile(s.log, p.live.cfg.SecretFile)
	s.live.Store(p.live)
	s.log.Info("turn: reloaded", "secrets", len(p.live.secrets))
}

// PrepareReload validates cfg and loads its secrets without applying
// anything: nothing changes if cfg is invalid or a secret cannot be
// loaded. The certificate is Options.GetCertificate's business.
func (s *Server) PrepareReload(cfg Config) (*PreparedReload, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("turn config: %w", err)
	}
	secrets, err := credentials.Load(cfg.SecretSources(), s.stateDir, true)
	if err != nil {
		return nil, err
	}
	own, err := s.ownAddrs()
	if err != nil {
		return nil, err
	}
	return &PreparedReload{s: s, live: &live{cfg: cfg, secrets: secrets, policy: newPeerPolicy(cfg.Peers, own, s.relayIPs)}}, nil
}

// Secrets returns copies of the secrets in force; the first one mints.
func (s *Server) Secrets() [][]byte {
	lv := s.live.Load()
	out := make([][]byte, len(lv.secrets))
	for i, b := range lv.secrets {
		out[i] = append([]byte(nil), b...)
	}
	return out
}

// MintCredential mints a credential for user with the current primary
// secret. ttl <= 0 means credential_ttl; it is capped at max_ttl, beyond
// which the server would refuse it.
func (s *Server) MintCredential(user string, ttl time.Duration) (username, password string, expires time.Time) {
	lv := s.live.Load()
	return credentials.Mint(lv.secrets[0], user, lv.cfg.CredentialLifetime(ttl), time.Now())
}

// StreamIdleTimeout is how long a TCP or TLS connection holding an
// allocation may stay quiet (the front door's TURN idle timeout): an
// allocation's longest lifetime, so that a refresh is always in time,
// and a minute for the refresh to arrive.
func (c Config) StreamIdleTimeout() time.Duration { return c.Quotas.MaxLifetime + time.Minute }

// CredentialLifetime is how long a credential asked for ttl is minted
// for: credential_ttl for 0, at most max_ttl (longer ones are refused).
func (c Config) CredentialLifetime(ttl time.Duration) time.Duration {
	if ttl <= 0 {
		ttl = c.CredentialTTL
	}
	return min(ttl, c.MaxTTL)
}

// RelayIP is the address clients are told for their relays.
func (s *Server) RelayIP() netip.Addr { return s.publicIP }

// TLSAddr is the TLS listener's address, or nil without TLS.
func (s *Server) TLSAddr() net.Addr {
	if s.tlsLn == nil {
		return nil
	}
	return s.tlsLn.Addr()
}
