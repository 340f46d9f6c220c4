package main

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"

	"github.com/prometheus/client_golang/prometheus"

	"icebox/internal/certs"
	"icebox/internal/cfgerr"
	"icebox/internal/tlsmux"
	"icebox/turnsrv"
)

// TLSConfig is the tls section: the certificate every TLS listener shares
// unless it names files of its own, and the one TLS port that carries
// HTTPS, WSS and TURN over TLS together.
type TLSConfig struct {
	// One port for HTTPS, WSS and TURN over TLS, e.g. ":443": TLS is
	// terminated once, then ALPN (stun.turn, RFC 7443; http/1.1) or the
	// first bytes tell TURN from HTTP. TURN goes to the relay, HTTP to the
	// page, /connect, /healthz and /ice-servers (never the admin routes),
	// and WsIceServers offers turns:HOST:PORT?transport=tcp on it. Its
	// pending handshakes are bounded by stun.tls_handshake_timeout,
	// stun.max_tls_handshakes and stun.max_tcp_connections_per_source,
	// counted apart from the STUN port's. Needs a certificate below.
	// Default "": no such port.
	Listen       string `yaml:"listen"`
	certs.Config `yaml:",inline"`
}

func defaultTLSConfig() TLSConfig { return TLSConfig{Config: certs.DefaultConfig()} }

func (c *TLSConfig) validate() error {
	var errs []error
	if j, ok := c.Config.Validate().(interface{ Unwrap() []error }); ok {
		errs = j.Unwrap() // flat, so that cfgerr.In sees every one
	}
	add := func(key, problem, fix string) { errs = append(errs, cfgerr.New(key, problem, fix)) }
	if c.Listen != "" {
		if _, _, err := net.SplitHostPort(c.Listen); err != nil {
			add("listen", fmt.Sprintf("%q is not a host:port address", c.Listen), `write ":443"`)
		} else if !c.On() {
			add("listen", "has no certificate", "set cert and key, or acme.domains")
		}
	}
	if c.ACME.On() && c.Listen == "" {
		add("acme.domains", "ACME needs listen: the CA checks each domain over TLS on port 443 (TLS-ALPN-01)", `set listen: ":443"`)
	}
	return errors.Join(errs...)
}

// tlsPart is every certificate source and the shared TLS port.
type tlsPart struct {
	metrics *certs.Metrics
	shared  certs.Source // nil without a tls section certificate
	files   *certs.Files // shared, when from files
	acme    *certs.ACME  // shared, when from ACME
	signal  *certs.Files // signal.tls's own files
	turn    *certs.Files // turn.tls's own files
	mux     *tlsmux.Mux  // nil without tls.listen
}

// startTLS opens the certificate sources and binds the shared port; ACME
// starts with startACME once the listeners are up.
func startTLS(cfg Config, log *slog.Logger, reg prometheus.Registerer) (_ *tlsPart, err error) {
	t := &tlsPart{}
	defer func() {
		if err != nil {
			t.close()
		}
	}()
	if t.metrics, err = certs.NewMetrics(reg); err != nil {
		return t, err
	}
	open := func(name, cert, key string) (*certs.Files, error) {
		return certs.OpenFiles(cert, key, certs.FilesOptions{Name: name, Logger: log, Metrics: t.metrics})
	}
	switch {
	case cfg.TLS.Cert != "":
		if t.files, err = open("tls", cfg.TLS.Cert, cfg.TLS.Key); err != nil {
			return t, err
		}
		t.shared = t.files
	case cfg.TLS.ACME.On():
		if t.acme, err = certs.NewACME(cfg.TLS.ACME, certs.ACMEOptions{
			Logger: log, Metrics: t.metrics, StateDir: stateDir(cfg.StateDir),
		}); err != nil {
			return t, err
		}
		t.shared = t.acme
	}
	if cfg.Signal.Enabled && cfg.Signal.TLS.On() {
		if t.signal, err = open("signal.tls", cfg.Signal.TLS.Cert, cfg.Signal.TLS.Key); err != nil {
			return t, err
		}
	}
	if cfg.TURN.Enabled && cfg.TURN.TLS.Cert != "" {
		if t.turn, err = open("turn.tls", cfg.TURN.TLS.Cert, cfg.TURN.TLS.Key); err != nil {
			return t, err
		}
	}
	if cfg.TLS.Listen != "" {
		ln, err := listenTCP("tls.listen", cfg.TLS.Listen, "", log)
		if err != nil {
			return t, err
		}
		if t.mux, err = tlsmux.New(ln, tlsmux.Options{
			GetCertificate: t.shared.GetCertificate,
			TURN:           cfg.TURN.Enabled,
			HTTP:           cfg.Signal.Enabled,
			ACME:           t.acme != nil,
			// The same bounds as the STUN port's TLS handshakes.
			Timeout:             cfg.STUN.TLSHandshakeTimeout,
			MaxPending:          cfg.STUN.MaxTLSHandshakes,
			MaxPendingPerSource: cfg.STUN.MaxTCPConnectionsPerSource,
			Logger:              log,
			Registerer:          reg,
		}); err != nil {
			ln.Close()
			return t, err
		}
	}
	return t, nil
}

// startACME begins obtaining certificates, answering the CA on the
// shared port.
func (t *tlsPart) startACME() error {
	if t.acme == nil {
		return nil
	}
	a := t.mux.Addr().(*net.TCPAddr)
	host := ""
	if !a.IP.IsUnspecified() {
		host = a.IP.String()
	}
	return t.acme.Start(host, a.Port)
}

// getCert is the certificate function for a part: its own files, else
// the shared certificate, else nil (no TLS).
func getCert(own *certs.Files, shared certs.Source) func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	switch {
	case own != nil:
		return own.GetCertificate
	case shared != nil:
		return shared.GetCertificate
	}
	return nil
}

func (t *tlsPart) signalCert() func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	return getCert(t.signal, t.shared)
}

func (t *tlsPart) turnCert() func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	return getCert(t.turn, t.shared)
}

// turnFromSharedPort hands the shared port's TURN connections, their TLS
// already terminated by the mux, to the TURN server through the STUN
// port's front door (opts.FrontDoor), so they get the same per-source
// caps, idle timeouts and framing as 3478 and 5349.
func turnFromSharedPort(opts *turnsrv.Options, t *tlsPart) {
	if t.mux == nil {
		return
	}
	ln := t.mux.TURN()
	if opts.FrontDoor != nil {
		ln = opts.FrontDoor(ln, nil)
	}
	opts.Listeners = append(opts.Listeners[:len(opts.Listeners):len(opts.Listeners)], ln)
}

func (t *tlsPart) addr() string {
	if t == nil || t.mux == nil {
		return "off"
	}
	return t.mux.Addr().String()
}

// sharedPort is the shared TLS port's number, 0 without one.
func (t *tlsPart) sharedPort() int {
	if t == nil || t.mux == nil {
		return 0
	}
	return t.mux.Addr().(*net.TCPAddr).Port
}

// prepareReload loads renamed certificate files without putting them in
// service; the commit it returns points the file sources at them. A pair
// that does not load refuses the reload. Turning a source on or off, ACME
// and the port need a restart (reload names them).
func (t *tlsPart) prepareReload(cfg Config, log *slog.Logger) (commit func(), err error) {
	type swap struct {
		f         *certs.Files
		cert, key string
	}
	var swaps []swap
	for _, s := range []swap{
		{t.files, cfg.TLS.Cert, cfg.TLS.Key},
		{t.signal, cfg.Signal.TLS.Cert, cfg.Signal.TLS.Key},
		{t.turn, cfg.TURN.TLS.Cert, cfg.TURN.TLS.Key},
	} {
		if s.f == nil || s.cert == "" {
			continue
		}
		// Load each new pair once now, so that a broken one refuses the
		// whole reload before any part has changed.
		if _, err := tls.LoadX509KeyPair(s.cert, s.key); err != nil {
			return nil, fmt.Errorf("certificate %s: %w", s.cert, err)
		}
		swaps = append(swaps, s)
	}
	return func() {
		for _, s := range swaps {
			// Only a file changed again since the check above can fail
			// here; its watcher keeps the old pair and says so.
			if err := s.f.SetFiles(s.cert, s.key); err != nil {
				log.Error("certificate changed during reload; keeping the old one", "file", s.cert, "err", err)
			}
		}
	}, nil
}

func (t *tlsPart) close() {
	if t == nil {
		return
	}
	if t.mux != nil {
		t.mux.Close()
	}
	if t.acme != nil {
		t.acme.Close()
	}
	for _, f := range []*certs.Files{t.files, t.signal, t.turn} {
		if f != nil {
			f.Close()
		}
	}
	t.metrics.Unregister()
}

// listenPort is the port of a host:port address, 0 if it has none.
func listenPort(addr string) int {
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		return 0
	}
	n, _ := strconv.Atoi(p)
	return n
}
