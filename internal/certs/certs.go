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

	"icebox/internal/cfgerr"
)

// Source hands out the certificate for a TLS handshake.
type Source interface {
	GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error)
}

// Config is the certificate every TLS listener shares unless it names its
// own files: PEM files, or ACME, or neither (no shared certificate).
type Config struct {
	// Cert is a PEM certificate chain file. Default "". Re-read when it
	// changes; a bad new file keeps the old certificate in service.
	Cert string `yaml:"cert"`
	// Key is the PEM private key file for Cert. Default "".
	Key string `yaml:"key"`
	// ACME obtains and renews the certificate from a CA. Default off.
	ACME ACMEConfig `yaml:"acme"`
}

// ACMEConfig asks an ACME CA (Let's Encrypt by default) for a certificate.
type ACMEConfig struct {
	// Domains the certificate names; the first is the one clients are
	// told in ICE URLs when signal.ice_host is empty. Default none: ACME
	// off. Setting them accepts the CA's terms of service.
	Domains []string `yaml:"domains"`
	// Email is the contact the CA warns about expiry and problems.
	// Default "": none.
	Email string `yaml:"email"`
	// Directory is the CA's ACME directory URL. Default Let's Encrypt's.
	Directory string `yaml:"directory"`
	// CARoot is a PEM file of roots to trust for the directory's HTTPS,
	// for a private ACME server. Default "": the system's roots.
	CARoot string `yaml:"ca_root"`
}

// LetsEncrypt is Let's Encrypt's production ACME directory, the default.
const LetsEncrypt = "https://acme-v02.api.letsencrypt.org/directory"

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
		if !validDomain(d) {
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

func validDomain(d string) bool {
	if d == "" || len(d) > 253 || strings.HasPrefix(d, ".") || strings.HasSuffix(d, ".") {
		return false
	}
	for i, label := range strings.Split(d, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for _, r := range label {
			if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '*' && i == 0 && label == "*") {
				return false
			}
		}
	}
	return true
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
