package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"icebox/internal/credentials"
	"icebox/internal/testenv"
	"icebox/signal"
)

func TestFindConfig(t *testing.T) {
	system := filepath.Join(t.TempDir(), "config.yaml")
	env := map[string]string{}
	getenv := func(k string) string { return env[k] }
	check := func(flag, wantPath, wantHow string) {
		t.Helper()
		loc, err := findConfig(flag, getenv, system)
		if err != nil || loc.path != wantPath || !strings.Contains(loc.how, wantHow) {
			t.Errorf("findConfig(%q) with env %v = %+v, %v; want %q (%s)", flag, env, loc, err, wantPath, wantHow)
		}
	}
	check("", "", "no -config, no $ICEBOX_CONFIG, no "+system)
	if err := os.WriteFile(system, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	check("", system, "the default place")
	env[configEnv] = "/srv/icebox.yaml"
	check("", "/srv/icebox.yaml", "$ICEBOX_CONFIG")
	check("/x.yaml", "/x.yaml", "-config")
}

// daemonWithConfigFile writes cfg to a file, loads it as the daemon does
// (with systemd credentials applied) and starts the daemon on it. It
// returns the file and the daemon's TURN address.
func daemonWithConfigFile(t *testing.T, cfg Config) (string, string, *testenv.LogBuffer) {
	t.Helper()
	path := writeTestConfig(t, cfg)
	loaded, err := LoadConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	d, logs := startDaemon(t, loaded)
	return path, d.stun.PacketConns()[0].LocalAddr().String(), logs
}

// mintWithCLI runs `icebox credentials` with args and returns the TURN
// username and password it printed, and its stderr.
func mintWithCLI(t *testing.T, args ...string) (user, pass, stderr string) {
	t.Helper()
	var out, errOut bytes.Buffer
	if code := run(append([]string{"credentials"}, args...), &out, &errOut); code != 0 {
		t.Fatalf("icebox credentials %v: exit %d: %s", args, code, errOut.String())
	}
	var servers []signal.ICEServer
	if err := json.Unmarshal(out.Bytes(), &servers); err != nil || len(servers) != 2 {
		t.Fatalf("icebox credentials printed %q (%v)", out.String(), err)
	}
	return servers[1].Username, servers[1].Credential, errOut.String()
}

// TestCredentialsUseTheDaemonsSecret is the operator's first hour: the
// daemon runs on a config with no secret (it generates one in its state
// directory), and `icebox credentials`, run without -config, must find
// that config, mint with that secret, and say where both came from. The
// credentials must allocate on the running daemon.
func TestCredentialsUseTheDaemonsSecret(t *testing.T) {
	cfg := testConfig(t)
	path, server, logs := daemonWithConfigFile(t, cfg)
	t.Setenv(configEnv, path)

	user, pass, stderr := mintWithCLI(t, "-ttl", "1h", "-user", "tv-42")
	secretFile := filepath.Join(cfg.StateDir, credentials.StateFileName)
	for _, want := range []string{"config: " + path + " ($ICEBOX_CONFIG)", "TURN secret: " + secretFile} {
		if !strings.Contains(stderr, want) {
			t.Errorf("stderr %q does not say %q", stderr, want)
		}
	}
	if _, _, err := allocate(t, server, user, pass); err != nil {
		t.Fatalf("the daemon refused credentials the CLI minted from its config: %v", err)
	}
	// The daemon said at start where its state is and that it made the secret.
	if !strings.Contains(logs.String(), "state_dir="+cfg.StateDir) || !strings.Contains(logs.String(), `turn_secret="generated, kept in `+secretFile+`"`) {
		t.Errorf("start-up log does not say where state lives and that the secret was generated:\n%s", logs)
	}
	// The next start finds it: loaded, not generated.
	if got := newSecretNote(cfg, cfg.StateDir).String(cfg); got != "loaded from "+secretFile {
		t.Errorf("after the first start the secret note is %q", got)
	}
	secret, _ := os.ReadFile(secretFile)
	if s := strings.TrimSpace(string(secret)); s == "" || strings.Contains(logs.String(), s) || strings.Contains(stderr, s) {
		t.Error("the secret is empty, or it was logged")
	}
}

// TestCredentialsFromSystemdCredential: under the unit the secret is a
// systemd credential in $CREDENTIALS_DIRECTORY; the daemon and the CLI
// both take it from there without any turn.secret* option.
func TestCredentialsFromSystemdCredential(t *testing.T) {
	creds := t.TempDir()
	if err := os.WriteFile(filepath.Join(creds, turnSecretCredential), []byte("credential-secret-0123456789\n"), 0o400); err != nil {
		t.Fatal(err)
	}
	t.Setenv("CREDENTIALS_DIRECTORY", creds)
	cfg := testConfig(t)
	path, server, logs := daemonWithConfigFile(t, cfg)

	user, pass, stderr := mintWithCLI(t, "-config", path)
	if want := "TURN secret: systemd credential " + turnSecretCredential; !strings.Contains(stderr, want) {
		t.Errorf("stderr %q does not say %q", stderr, want)
	}
	if pass != expectedPassword([]byte("credential-secret-0123456789"), user) {
		t.Error("the CLI did not mint with the credential's secret")
	}
	if _, _, err := allocate(t, server, user, pass); err != nil {
		t.Fatalf("the daemon refused credentials minted from the systemd credential: %v", err)
	}
	if !strings.Contains(logs.String(), "turn_secret=\"loaded from systemd credential "+turnSecretCredential) {
		t.Errorf("start-up log does not name the credential:\n%s", logs)
	}
	if entries, _ := os.ReadDir(cfg.StateDir); len(entries) != 0 {
		t.Errorf("the daemon generated a secret although the credential holds one: %v", entries)
	}
}

// TestCLINeverGeneratesASecret: with no secret anywhere, credentials and
// token fail with a message that says what to do, and create nothing.
func TestCLINeverGeneratesASecret(t *testing.T) {
	t.Setenv("CREDENTIALS_DIRECTORY", t.TempDir()) // empty: no credential
	cfg := testConfig(t)
	cfg.StateDir = filepath.Join(t.TempDir(), "state") // does not exist
	path := writeTestConfig(t, cfg)
	for _, args := range [][]string{
		{"credentials", "-config", path},
		{"token", "-config", path, "-room", "tv-42"},
	} {
		var out, errOut bytes.Buffer
		code := run(args, &out, &errOut)
		if code != 1 || out.Len() != 0 || !strings.Contains(errOut.String(), "no TURN secret found") ||
			!strings.Contains(errOut.String(), "Only the daemon generates a secret") {
			t.Errorf("%v: exit %d, stdout %q, stderr %q; want exit 1 and why", args, code, out.String(), errOut.String())
		}
		if _, err := os.Stat(cfg.StateDir); !os.IsNotExist(err) {
			t.Fatalf("%v created %s (%v)", args, cfg.StateDir, err)
		}
	}
}

func TestCLIArgumentMistakes(t *testing.T) {
	cfg := testConfig(t)
	cfg.TURN.Secrets = []string{"a-secret-of-some-length"}
	path := writeTestConfig(t, cfg)
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"token", "-config", path}, 2, "-room is required"},
		// Before, credentials ignored what followed its flags.
		{[]string{"credentials", "-config", path, "-ttl", "1h", "extra"}, 2, `unexpected argument "extra"`},
		{[]string{"credentials", "-config", path, "-ttl", "25h"}, 2, "longer than turn.max_ttl"},
		{[]string{"credentials", "-config", path, "-ttl", "5s"}, 2, "-ttl 5s is too short"},
		{[]string{"credentials", "-config", path, "-ttl", "5m"}, 0, "warning: -ttl 5m0s: icebox checks the credential on every TURN request"},
	} {
		var out, errOut bytes.Buffer
		if code := run(tc.args, &out, &errOut); code != tc.code || !strings.Contains(errOut.String(), tc.want) {
			t.Errorf("%v: exit %d, stderr %q; want exit %d and %q", tc.args, code, errOut.String(), tc.code, tc.want)
		}
	}
}

// TestTLSKeyFromSystemdCredential: a key written as
// ${CREDENTIALS_DIRECTORY}/NAME is read from the unit's credentials
// directory (TURN over TLS serves with it); a missing one stops loading
// with the name and where it was looked for.
func TestTLSKeyFromSystemdCredential(t *testing.T) {
	creds := t.TempDir()
	t.Setenv("CREDENTIALS_DIRECTORY", creds)
	cfg := testConfig(t)
	cfg.TURN.Secrets = []string{"a-secret-of-some-length"}
	cfg.TURN.TLS.Listen = "127.0.0.1:0"
	cfg.TURN.TLS.Cert = filepath.Join(t.TempDir(), "cert.pem")
	cfg.TURN.TLS.Key = "${CREDENTIALS_DIRECTORY}/icebox.turn-tls.key"
	path := writeTestConfig(t, cfg)

	if _, err := LoadConfig(path); err == nil || !strings.Contains(err.Error(), "turn.tls.key: systemd credential icebox.turn-tls.key not found") {
		t.Fatalf("missing credential: %v", err)
	}
	cert := testenv.WriteCert(t, cfg.TURN.TLS.Cert, filepath.Join(creds, "icebox.turn-tls.key"), time.Time{})
	loaded, err := LoadConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	if want := filepath.Join(creds, "icebox.turn-tls.key"); loaded.TURN.TLS.Key != want {
		t.Errorf("key path %q, want %q", loaded.TURN.TLS.Key, want)
	}
	d, _ := startDaemon(t, loaded)
	if got := tlsSerial(t, d.turn.TLSAddr().String()); got != cert.SerialNumber.String() {
		t.Errorf("TURN over TLS serves certificate %s, want %s", got, cert.SerialNumber)
	}

	// The shared certificate (tls:) comes from a credential the same way.
	shared := testConfig(t)
	shared.TURN.Secrets = cfg.TURN.Secrets
	shared.TLS.Cert = cfg.TURN.TLS.Cert
	shared.TLS.Key = "${CREDENTIALS_DIRECTORY}/icebox.turn-tls.key"
	loaded, err = LoadConfig(writeTestConfig(t, shared))
	if err != nil {
		t.Fatalf("tls.key from a credential: %v", err)
	}
	if want := filepath.Join(creds, "icebox.turn-tls.key"); loaded.TLS.Key != want {
		t.Errorf("tls.key path %q, want %q", loaded.TLS.Key, want)
	}
}

// TestACMERootFromSystemdCredential: tls.acme.ca_root, the root of a
// private ACME server, comes from a systemd credential like the TLS files,
// resolved before the config is validated (which reads it): missing, it
// is reported once, at its line; present, the daemon trusts Pebble's
// directory with it and gets its certificate.
func TestACMERootFromSystemdCredential(t *testing.T) {
	creds := t.TempDir()
	t.Setenv("CREDENTIALS_DIRECTORY", creds)
	port := testenv.FreePort(t)
	pebble := testenv.StartPebble(t, port, 0)
	cfg := testConfig(t)
	cfg.TURN.Secrets = []string{"a-secret-of-some-length"}
	cfg.TLS.Listen = fmt.Sprintf("127.0.0.1:%d", port)
	cfg.TLS.ACME.Domains = []string{"icebox.test"}
	cfg.TLS.ACME.Directory = pebble.Directory
	cfg.TLS.ACME.CARoot = "${CREDENTIALS_DIRECTORY}/icebox.acme-root.pem"
	path := writeTestConfig(t, cfg)

	_, err := LoadConfig(path)
	const want = "tls.acme.ca_root: systemd credential icebox.acme-root.pem not found"
	if err == nil || !strings.Contains(err.Error(), want) || strings.Count(err.Error(), "tls.acme.ca_root") != 1 ||
		!regexp.MustCompile(`config\.yaml:\d+: `+regexp.QuoteMeta(want)).MatchString(err.Error()) {
		t.Fatalf("missing credential: %v, want %q once, at its line", err, want)
	}
	root, err := os.ReadFile(pebble.CARootFile)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(creds, "icebox.acme-root.pem"), root, 0o600); err != nil {
		t.Fatal(err)
	}
	loaded, err := LoadConfig(path)
	if err != nil {
		t.Fatalf("ca_root from a credential: %v", err)
	}
	if want := filepath.Join(creds, "icebox.acme-root.pem"); loaded.TLS.ACME.CARoot != want {
		t.Errorf("ca_root %q, want %q", loaded.TLS.ACME.CARoot, want)
	}
	d, _ := startDaemon(t, loaded)
	testenv.WaitFor(t, 60*time.Second, "Pebble's certificate on tls.listen", func() bool {
		_, err := servedCert(t, d.tls.mux.Addr().String(), "icebox.test", pebble.Roots())
		return err == nil
	})
}

// TestShortSecretStopsStartup: a TURN secret shorter than 16 characters
// in secret_file, secret_env or the systemd credential stops the daemon
// at start with exit 78 (no restart loop) and a message naming the
// source and the fix, never the secret; icebox credentials and icebox
// token refuse to mint from it. Before, such a secret gave working
// credentials and join tokens.
func TestShortSecretStopsStartup(t *testing.T) {
	const short = "k"
	dir := t.TempDir()
	file := filepath.Join(dir, "turn-secret")
	creds := t.TempDir()
	for _, p := range []string{file, filepath.Join(creds, turnSecretCredential)} {
		if err := os.WriteFile(p, []byte(short+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct {
		name string
		mut  func(*Config)
		env  []string
		want string
	}{
		{"secret_file", func(c *Config) { c.TURN.SecretFile = file }, nil, file + ", line 1"},
		{"secret_env", func(c *Config) { c.TURN.SecretEnv = "ICEBOX_TEST_SHORT_SECRET" }, []string{"ICEBOX_TEST_SHORT_SECRET=" + short}, "ICEBOX_TEST_SHORT_SECRET"},
		{"systemd credential", func(*Config) {}, []string{"CREDENTIALS_DIRECTORY=" + creds}, filepath.Join(creds, turnSecretCredential) + ", line 1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testConfig(t)
			tc.mut(&cfg)
			path := writeTestConfig(t, cfg)
			// The deadline only ends a daemon that wrongly started.
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			cmd := exec.CommandContext(ctx, testenv.IceboxBinary(t), "-config", path)
			cmd.Env = append(os.Environ(), tc.env...)
			out, err := cmd.CombinedOutput()
			var exit *exec.ExitError
			if !errors.As(err, &exit) || exit.ExitCode() != exitConfig {
				t.Fatalf("icebox exited with %v, want status %d:\n%s", err, exitConfig, out)
			}
			for _, want := range []string{tc.want, "shorter than 16 characters", "openssl rand"} {
				if !strings.Contains(string(out), want) {
					t.Errorf("start-up error lacks %q:\n%s", want, out)
				}
			}
			if strings.Contains(string(out), "="+short) || strings.Contains(string(out), `"`+short+`"`) {
				t.Errorf("start-up error shows the secret:\n%s", out)
			}

			for _, kv := range tc.env {
				k, v, _ := strings.Cut(kv, "=")
				t.Setenv(k, v)
			}
			for _, args := range [][]string{{"credentials", "-config", path}, {"token", "-config", path, "-room", "tv-42"}} {
				var stdout, stderr bytes.Buffer
				if code := run(args, &stdout, &stderr); code != 1 || stdout.Len() != 0 || !strings.Contains(stderr.String(), tc.want) {
					t.Errorf("%v: exit %d, stdout %q, stderr %q; want exit 1 naming %q", args, code, stdout.String(), stderr.String(), tc.want)
				}
			}
		})
	}
}
