package certs

import (
	"crypto/tls"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// FilesOptions are what OpenFiles needs besides the file names.
type FilesOptions struct {
	// Name says which config option the files come from ("tls",
	// "turn.tls"), in logs and metrics. Default "tls".
	Name string
	// Logger gets loads and refusals. Default: discard.
	Logger *slog.Logger
	// Metrics counts loads and refusals. Default: none.
	Metrics *Metrics
	// Interval is how often the files are looked at. Default 1s: a
	// renewal is served within about a second, for two stat calls.
	Interval time.Duration
}

// Files serves a certificate and key from PEM files and re-reads them
// when either changes (size or modification time; a replaced symlink, as
// certbot's, counts). A pair that fails to load, e.g. the key written but
// not yet the certificate, keeps the old one in service and is logged and
// counted once.
type Files struct {
	name  string
	log   *slog.Logger
	m     *Metrics
	every time.Duration
	cert  atomic.Pointer[tls.Certificate]

	mu       sync.Mutex
	certFile string
	keyFile  string
	stamp    string // of the files cert came from
	refused  string // stamp of the last pair refused, so it is reported once

	stop chan struct{}
	done chan struct{}
	once sync.Once
}

// OpenFiles loads the pair, failing if it cannot, and watches the files
// until Close.
func OpenFiles(certFile, keyFile string, opts FilesOptions) (*Files, error) {
	f := &Files{
		name: opts.Name, log: opts.Logger, m: opts.Metrics, every: opts.Interval,
		certFile: certFile, keyFile: keyFile,
		stop: make(chan struct{}), done: make(chan struct{}),
	}
	if f.name == "" {
		f.name = "tls"
	}
	if f.log == nil {
		f.log = slog.New(slog.DiscardHandler)
	}
	if f.every <= 0 {
		f.every = time.Second
	}
	f.mu.Lock()
	err := f.reloadLocked()
	f.mu.Unlock()
	if err != nil {
		return nil, err
	}
	go f.watch()
	return f, nil
}

// GetCertificate is tls.Config's GetCertificate: the pair last loaded.
func (f *Files) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	return f.cert.Load(), nil
}

// SetFiles switches to other files (a reload that renamed them): the new
// pair is loaded first, and on error the old one stays.
func (f *Files) SetFiles(certFile, keyFile string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if certFile == f.certFile && keyFile == f.keyFile {
		return f.reloadLocked()
	}
	oldCert, oldKey, oldStamp := f.certFile, f.keyFile, f.stamp
	f.certFile, f.keyFile, f.stamp = certFile, keyFile, ""
	if err := f.reloadLocked(); err != nil {
		f.certFile, f.keyFile, f.stamp = oldCert, oldKey, oldStamp
		return err
	}
	return nil
}

// Close stops watching the files.
func (f *Files) Close() {
	f.once.Do(func() { close(f.stop) })
	<-f.done
}

func (f *Files) watch() {
	defer close(f.done)
	t := time.NewTicker(f.every)
	defer t.Stop()
	for {
		select {
		case <-f.stop:
			return
		case <-t.C:
			f.mu.Lock()
			f.reloadLocked() // reports its own errors
			f.mu.Unlock()
		}
	}
}

// reloadLocked loads the pair if the files changed since the last load or
// refusal, and reports what happened.
func (f *Files) reloadLocked() error {
	stamp, err := fileStamp(f.certFile, f.keyFile)
	if err == nil && (stamp == f.stamp || stamp == f.refused) {
		return nil
	}
	var cert tls.Certificate
	if err == nil {
		cert, err = tls.LoadX509KeyPair(f.certFile, f.keyFile)
	}
	if err != nil {
		err = fmt.Errorf("%s: certificate %s, key %s: %w", f.name, f.certFile, f.keyFile, err)
		key := stamp
		if key == "" { // a file is missing: report each new reason once
			key = err.Error()
		}
		if key == f.refused {
			return err
		}
		f.refused = key
		f.count("refused")
		if f.cert.Load() != nil {
			f.log.Warn("TLS certificate files not loaded; the certificate in service stays", "source", f.name, "err", err)
		}
		return err
	}
	f.cert.Store(&cert)
	f.stamp, f.refused = stamp, ""
	f.count("loaded")
	if f.m != nil {
		f.m.expiry.WithLabelValues(f.name).Set(float64(cert.Leaf.NotAfter.Unix()))
	}
	f.log.Info("TLS certificate loaded", "source", f.name, "cert", f.certFile,
		"names", cert.Leaf.DNSNames, "not_after", cert.Leaf.NotAfter.UTC().Format(time.RFC3339))
	return nil
}

func (f *Files) count(result string) {
	if f.m != nil {
		f.m.loads.WithLabelValues(f.name, result).Inc()
	}
}

// fileStamp is the size and modification time of each file, which change
// when it is rewritten or its symlink is pointed elsewhere.
func fileStamp(names ...string) (string, error) {
	var stamp string
	for _, n := range names {
		fi, err := os.Stat(n)
		if err != nil {
			return "", err
		}
		stamp += fmt.Sprintf("%d/%d;", fi.Size(), fi.ModTime().UnixNano())
	}
	return stamp, nil
}
