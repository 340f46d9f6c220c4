// Package certs is where every TLS listener of icebox gets its
// certificate: PEM files, re-read when they change, or ACME, obtained and
// renewed by icebox itself. Listeners take a Source's GetCertificate, so a
// new certificate is served on the next handshake without a restart.
package certs

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strings"

	"github.com/caddyserver/certmagic"

	"icebox/internal/cfgerr"
	"icebox/internal/dnsname"
)

// Source hands out the certificate for a TLS handshake.
type Source interface {
	GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error)
}

// Config is the certificate every TLS listener shares unless it names its
// own files: PEM files, or ACME, or neither (no shared certificate).
type Config struct {
	// PEM certificate chain file, re-read when it changes (a bad new pair
	// keeps the old certificate in service and is logged and counted).
	// Default "".
	Cert string `yaml:"cert"`
	// The PEM private key file for cert. Default "".
	Key string `yaml:"key"`
	// icebox obtains and renews the certificate itself from an ACME CA.
	// The CA checks each domain over TLS on port 443 (TLS-ALPN-01), so
	// tls.listen must be ":443" (or a port that 443 is forwarded to).
	// Certificates live in state_dir/acme and are renewed when a third of
	// their lifetime is left; a failed renewal is logged, counted
	// (icebox_tls_acme_failures_total) and retried, and the certificate in
	// service stays. Not together with cert and key.
	ACME ACMEConfig `yaml:"acme"`
}

// ACMEConfig asks an ACME CA (Let's Encrypt by default) for a certificate.
type ACMEConfig struct {
	// The domains (pointing at this box) the certificate names; setting
	// them turns ACME on and accepts the CA's terms of service. The first
	// is the one ICE URLs carry when signal.ice_host is empty.
	// Default none: ACME off.
	Domains []string `yaml:"domains"`
	// Contact for the CA's expiry and problem notices. Default "": none.
	Email string `yaml:"email"`
	// The CA's ACME directory. Default
	// "https://acme-v02.api.letsencrypt.org/directory": Let's Encrypt's
	// production CA.
	Directory string `yaml:"directory"`
	// A PEM file of roots to trust for the directory's HTTPS, for a
	// private ACME server (step-ca, Pebble); under systemd it may be a
	// credential, ${CREDENTIALS_DIRECTORY}/NAME. Default "": the system's
	// roots.
	CARoot string `yaml:"ca_root"`
}

// LetsEncrypt is Let's Encrypt's production ACME directory, the default.
const LetsEncrypt = certmagic.LetsEncryptProductionCA

// DefaultConfig is the shared certificate's config when the file says
// nothing: none.
func DefaultConfig() Config {
	return Config{ACME: ACMEConfig{Directory: LetsEncrypt}}
}

// On reports whether there is a shared certificate.
func (c Config) On() bool { return c.Cert != "" || c.ACME.On() }

// On reports whether ACME is configured.
func (c ACMEConfig) On() bool { return len(c.Domains) > 0 }

// Validate reports every mistake at once, keyed relative to the section.
func (c *Config) Validate() error {
	var errs []error
	add := func(key, problem, fix string) { errs = append(errs, cfgerr.New(key, problem, fix)) }
	// Reported at the option that is written, so the line number points
	// at something in the file.
	switch {
	case c.Cert != "" && c.Key == "":
		add("cert", "is set without key", "set key to the private key file too, or neither")
	case c.Cert == "" && c.Key != "":
		add("key", "is set without cert", "set cert to the certificate chain file too, or neither")
	}
	if c.Cert != "" && c.ACME.On() {
		add("acme.domains", "certificate files and ACME are both set", "use cert and key, or acme, not both")
	}
	a := c.ACME
	for i, d := range a.Domains {
		switch {
		case strings.Contains(d, "*"):
			// TLS-ALPN-01, the one challenge icebox answers, cannot
			// prove a wildcard (RFC 8737 §3); ICE URLs need a host too.
			add(fmt.Sprintf("acme.domains[%d]", i), fmt.Sprintf("%q is a wildcard, which the TLS-ALPN-01 challenge cannot obtain", d), `name each host, e.g. "turn.example.com", or use tls.cert and tls.key for a wildcard certificate`)
		case !dnsname.Valid(d):
			add(fmt.Sprintf("acme.domains[%d]", i), fmt.Sprintf("%q is not a DNS name", d), `write a bare name such as "turn.example.com"`)
		}
	}
	if u, err := url.Parse(a.Directory); err != nil || u.Scheme != "https" || u.Host == "" {
		add("acme.directory", fmt.Sprintf("%q is not an https:// URL", a.Directory), "write the CA's directory URL, e.g. "+LetsEncrypt)
	}
	if a.Email != "" && (!strings.Contains(a.Email, "@") || strings.ContainsAny(a.Email, " \t<>")) {
		add("acme.email", fmt.Sprintf("%q is not an email address", a.Email), `write e.g. "ops@example.com", or "" for none`)
	}
	if a.CARoot != "" {
		if _, err := loadRoots(a.CARoot); err != nil {
			add("acme.ca_root", err.Error(), "name a readable PEM file of CA certificates")
		}
	}
	return errors.Join(errs...)
}

func loadRoots(file string) (*x509.CertPool, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	n := 0
	for {
		var block *pem.Block
		block, b = pem.Decode(b)
		if block == nil {
			break
		}
		if c, err := x509.ParseCertificate(block.Bytes); err == nil && block.Type == "CERTIFICATE" {
			pool.AddCert(c)
			n++
		}
	}
	if n == 0 {
		return nil, fmt.Errorf("%s holds no PEM certificate", file)
	}
	return pool, nil
}
