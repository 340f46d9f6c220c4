package certs

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"time"

	"github.com/caddyserver/certmagic"
	"go.uber.org/zap"
)

// ACMEOptions are what NewACME needs besides the config.
type ACMEOptions struct {
	// Logger gets obtained certificates and failures (info and error),
	// and certmagic's own account of each step at debug. Default: discard.
	Logger *slog.Logger
	// Metrics counts certificates obtained and failures. Default: none.
	Metrics *Metrics
	// StateDir keeps the account key and certificates, under acme/.
	StateDir string
	// RenewCheckInterval is how often certificates are checked for
	// renewal. Default 10m (certmagic's); tests use less.
	RenewCheckInterval time.Duration
}

// ACME obtains certificates from an ACME CA with certmagic, keeps them in
// the state directory and renews them when a third of their lifetime is
// left, or earlier when the CA's renewal information (ARI) says so. A
// failed renewal is logged and counted and retried; the certificate in
// service stays until a new one is in hand.
//
// The CA checks control of each domain with the TLS-ALPN-01 challenge,
// which certmagic answers in GetCertificate: a listener using this source
// must be reachable on port 443 of every domain (tls.listen: ":443").
type ACME struct {
	cfg    ACMEConfig
	log    *slog.Logger
	m      *Metrics
	cache  *certmagic.Cache
	magic  *certmagic.Config
	issuer *certmagic.ACMEIssuer
	ctx    context.Context // ends with Close, and with it the renewals
	cancel context.CancelFunc
}

// NewACME prepares the ACME source; Start begins obtaining certificates,
// once the listeners that answer the CA's challenge are up.
func NewACME(cfg ACMEConfig, opts ACMEOptions) (*ACME, error) {
	if !cfg.On() {
		return nil, errors.New("tls.acme: no domains")
	}
	a := &ACME{cfg: cfg, log: opts.Logger, m: opts.Metrics}
	if a.log == nil {
		a.log = slog.New(slog.DiscardHandler)
	}
	zl := zap.New(slogCore{log: a.log.With("from", "certmagic")})
	a.ctx, a.cancel = context.WithCancel(context.Background())
	a.cache = certmagic.NewCache(certmagic.CacheOptions{
		GetConfigForCert:   func(certmagic.Certificate) (*certmagic.Config, error) { return a.magic, nil },
		RenewCheckInterval: opts.RenewCheckInterval,
		OCSPCheckInterval:  24 * time.Hour,
		Logger:             zl,
	})
	a.magic = certmagic.New(a.cache, certmagic.Config{
		Storage: &certmagic.FileStorage{Path: filepath.Join(opts.StateDir, "acme")},
		// Clients that send no name (dialled by IP) get the first domain's.
		DefaultServerName: cfg.Domains[0],
		// Let's Encrypt no longer runs OCSP; stapling would only cost
		// requests to other hosts.
		OCSP:    certmagic.OCSPConfig{DisableStapling: true},
		OnEvent: a.event,
		Logger:  zl,
	})
	tmpl := certmagic.ACMEIssuer{
		CA:     cfg.Directory,
		Email:  cfg.Email,
		Agreed: true,
		// TLS-ALPN-01 only, answered by icebox's own TLS listeners:
		// certmagic would otherwise bind port 80 itself.
		DisableHTTPChallenge: true,
		Logger:               zl,
	}
	if cfg.CARoot != "" {
		pool, err := loadRoots(cfg.CARoot)
		if err != nil {
			a.cache.Stop()
			return nil, fmt.Errorf("tls.acme.ca_root: %w", err)
		}
		tmpl.TrustedRoots = pool
	}
	a.issuer = certmagic.NewACMEIssuer(a.magic, tmpl)
	a.magic.Issuers = []certmagic.Issuer{a.issuer}
	return a, nil
}

// GetCertificate is tls.Config's GetCertificate. It also answers the CA's
// TLS-ALPN-01 challenge, so the listener's NextProtos must include
// acmez.ACMETLS1Protocol.
func (a *ACME) GetCertificate(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	return a.magic.GetCertificate(hello)
}

// Start loads certificates kept from earlier runs and obtains missing
// ones in the background. host and port are where the listener the CA
// reaches is bound ("" for every address): certmagic finds that port
// taken and leaves the challenge to GetCertificate there, instead of
// binding 443 itself.
func (a *ACME) Start(host string, port int) error {
	a.issuer.ListenHost = host
	a.issuer.AltTLSALPNPort = port
	if err := a.magic.ManageAsync(a.ctx, a.cfg.Domains); err != nil {
		return fmt.Errorf("tls.acme: %w", err)
	}
	a.log.Info("ACME: managing certificates", "domains", a.cfg.Domains, "directory", a.cfg.Directory)
	return nil
}

// Close stops renewing.
func (a *ACME) Close() {
	a.cancel()
	a.cache.Stop()
}

// event logs and counts certmagic's results; it never vetoes anything.
func (a *ACME) event(_ context.Context, name string, data map[string]any) error {
	kind := "new"
	if r, _ := data["renewal"].(bool); r {
		kind = "renewal"
	}
	switch name {
	case "cert_obtained":
		if a.m != nil {
			a.m.obtained[kind].Inc()
		}
		a.log.Info("ACME: certificate obtained", "domain", data["identifier"], "kind", kind)
	case "cert_failed":
		if a.m != nil {
			a.m.failures[kind].Inc()
		}
		a.log.Error("ACME: could not obtain a certificate; will retry, the certificate in service stays",
			"domain", data["identifier"], "kind", kind, "remaining", data["remaining"], "err", data["error"])
	}
	return nil
}
