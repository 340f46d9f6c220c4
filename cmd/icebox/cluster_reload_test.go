package main

import (
	"log/slog"
	"strings"
	"testing"
	"time"

	"icebox/internal/testenv"
)

// TestReloadClusterNeedsRestart: a reload that changes the cluster section
// applies the rest of the config, keeps the running cluster settings (the
// node keeps its name and stays in the cluster), and names each changed
// option with "restart needed", at every reload until a restart, never
// with its value.
func TestReloadClusterNeedsRestart(t *testing.T) {
	nats := testenv.StartNATS(t, "reload-token")
	cfg := testConfig(t)
	cfg.Cluster.Enabled = true
	cfg.Cluster.URLs = []string{nats.URL()}
	cfg.Cluster.Token = "reload-token"
	cfg.Cluster.Secret = "0123456789abcdef0123456789abcdef-reload"
	cfg.Cluster.Node = "first-name"
	d, logs := startDaemon(t, cfg)
	ready := func() bool { return d.signal.node.Ready() == nil }
	testenv.WaitFor(t, 10*time.Second, "the node to reach NATS", ready)
	level := &slog.LevelVar{}

	next := cfg
	next.Cluster.Node = "second-name"
	next.Cluster.Secret = "a-new-secret-that-must-never-be-logged-0123"
	next.Cluster.TLS.CA = "/nonexistent/ca.pem"
	next.TURN.CredentialTTL = time.Hour
	for range 2 { // the second reload compares with the running settings, not the last file
		before := len(logs.String())
		if err := d.reload(next, level); err != nil {
			t.Fatalf("reload with cluster changes failed: %v", err)
		}
		out := logs.String()[before:]
		for _, key := range []string{"cluster.node", "cluster.secret", "cluster.tls.ca"} {
			if !strings.Contains(out, "restart needed") || !strings.Contains(out, "key="+key+"\n") {
				t.Errorf("reload did not log %s as needing a restart:\n%s", key, out)
			}
		}
		for _, key := range []string{"cluster.urls", "cluster.token", "cluster.enabled"} {
			if strings.Contains(out, "key="+key+"\n") {
				t.Errorf("reload logged unchanged %s:\n%s", key, out)
			}
		}
		if strings.Contains(logs.String(), "must-never-be-logged") {
			t.Fatal("the new cluster secret is in the log")
		}
		cfg = next // as serve does after a reload that succeeded
	}
	if got := d.signal.node.Name(); got != "first-name" {
		t.Errorf("after reload the node is named %q, want the running %q", got, "first-name")
	}
	if !ready() {
		t.Error("after reload the node lost NATS")
	}
	if _, _, exp := d.turn.MintCredential("probe", 0); time.Until(exp).Round(time.Hour) != time.Hour {
		t.Error("the rest of the config was not applied with the cluster changes")
	}
}
