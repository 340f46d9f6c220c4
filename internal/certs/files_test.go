package certs

import (
	"bytes"
	"crypto/tls"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"icebox/internal/testenv"
)

// TestFilesFollowTheFiles: a rewritten pair is served within a poll or
// two; a broken one keeps the old certificate, is counted once however
// long it stays broken, and SetFiles to missing files changes nothing.
func TestFilesFollowTheFiles(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	first := testenv.WriteCert(t, certFile, keyFile, time.Now().Add(-time.Hour))
	m, err := NewMetrics(prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	f, err := OpenFiles(certFile, keyFile, FilesOptions{Name: "tls", Metrics: m, Interval: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	leaf := func() []byte {
		c, err := f.GetCertificate(&tls.ClientHelloInfo{})
		if err != nil {
			t.Fatal(err)
		}
		return c.Leaf.Raw
	}
	if !bytes.Equal(leaf(), first.Raw) {
		t.Fatal("not serving the files' certificate")
	}
	loads := func(result string) float64 {
		return testenv.MetricValue(t, m.loads.WithLabelValues("tls", result))
	}
	if got := testenv.MetricValue(t, m.expiry.WithLabelValues("tls")); got != float64(first.NotAfter.Unix()) {
		t.Errorf("expiry gauge %v, want %v", got, first.NotAfter.Unix())
	}

	second := testenv.WriteCert(t, certFile, keyFile, time.Time{})
	testenv.WaitFor(t, 5*time.Second, "the rewritten pair", func() bool { return bytes.Equal(leaf(), second.Raw) })

	// Written aside and renamed into place, so the poller sees one broken
	// file, not an empty one first.
	if err := os.WriteFile(certFile+".new", []byte("half-written"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(certFile+".new", certFile); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, 5*time.Second, "the broken file to be refused", func() bool { return loads("refused") == 1 })
	// Several more polls see the same broken file: still counted once.
	testenv.WaitFor(t, 5*time.Second, "more polls", func() bool {
		f.mu.Lock()
		defer f.mu.Unlock()
		return f.refused != ""
	})
	for range 3 {
		f.mu.Lock()
		f.reloadLocked()
		f.mu.Unlock()
	}
	if got := loads("refused"); got != 1 {
		t.Errorf("refused counted %v times for one broken file, want 1", got)
	}
	if !bytes.Equal(leaf(), second.Raw) {
		t.Fatal("a broken file replaced the working certificate")
	}

	if err := f.SetFiles(filepath.Join(dir, "missing.pem"), keyFile); err == nil {
		t.Fatal("SetFiles accepted a missing file")
	}
	if !bytes.Equal(leaf(), second.Raw) {
		t.Fatal("a failed SetFiles replaced the working certificate")
	}
	third := testenv.WriteCert(t, certFile, keyFile, time.Time{})
	testenv.WaitFor(t, 5*time.Second, "the repaired pair", func() bool { return bytes.Equal(leaf(), third.Raw) })
	if got := loads("loaded"); got != 3 {
		t.Errorf("loaded %v times, want 3", got)
	}
}

func TestOpenFilesRefusesABrokenPair(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	testenv.WriteCert(t, certFile, keyFile, time.Time{})
	os.WriteFile(keyFile, []byte("not a key"), 0o600)
	if _, err := OpenFiles(certFile, keyFile, FilesOptions{Name: "turn.tls"}); err == nil {
		t.Fatal("OpenFiles accepted a broken key")
	} else if !bytes.Contains([]byte(err.Error()), []byte("turn.tls")) {
		t.Errorf("error %q does not name the option", err)
	}
}
