package main

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"icebox/internal/cfgerr"
	"icebox/internal/credentials"
)

// Where icebox looks for its config when -config is not given. The daemon
// and the subcommands look in the same places, so `icebox credentials`
// run from a shell mints with the secret the daemon verifies with.
const (
	// configEnv names a config file, for deployments that keep it elsewhere
	// (set it in a unit drop-in and in the operator's shell alike).
	configEnv = "ICEBOX_CONFIG"
	// systemConfigPath is where README installs the config; used when it
	// exists, so a box without one runs on the built-in defaults.
	systemConfigPath = "/etc/icebox/config.yaml"
	// systemStateDir is the unit's StateDirectory=icebox: where the daemon
	// under systemd keeps the secret it generated.
	systemStateDir = "/var/lib/icebox"
)

// configLocation is the file icebox reads ("" for the built-in defaults)
// and how it was found, for the start-up log and the subcommands' stderr.
type configLocation struct {
	path string
	how  string
}

func (l configLocation) String() string {
	if l.path == "" {
		return "none, built-in defaults (" + l.how + ")"
	}
	return l.path + " (" + l.how + ")"
}

// findConfig picks the config file: -config, else $ICEBOX_CONFIG, else
// systemPath when it exists, else none. getenv and systemPath are
// parameters so tests need not touch the real /etc.
func findConfig(flagPath string, getenv func(string) string, systemPath string) (configLocation, error) {
	if flagPath != "" {
		return configLocation{flagPath, "-config"}, nil
	}
	if p := getenv(configEnv); p != "" {
		return configLocation{p, "$" + configEnv}, nil
	}
	switch _, err := os.Stat(systemPath); {
	case err == nil:
		return configLocation{systemPath, "the default place"}, nil
	case errors.Is(err, fs.ErrNotExist):
		return configLocation{"", "no -config, no $" + configEnv + ", no " + systemPath}, nil
	default:
		// Unreadable is not absent: defaults would hide the operator's file.
		return configLocation{}, fmt.Errorf("config: %w", err)
	}
}

// systemd credentials (LoadCredential=) icebox takes without being told:
// the unit loads them from the system credential store (/etc/credstore/)
// into $CREDENTIALS_DIRECTORY, readable by its DynamicUser only.
const turnSecretCredential = "icebox.turn-secret"

// credentialStores are systemd's search path for LoadCredential=ID, in its
// order. A shell has no $CREDENTIALS_DIRECTORY; looking where systemd
// looks finds the same file the unit passes to the daemon.
var credentialStores = []string{"/etc/credstore", "/run/credstore", "/usr/lib/credstore"}

// credentialFile returns the file holding the systemd credential name: in
// $CREDENTIALS_DIRECTORY when set (under the unit), else in the system
// credential store. ok is false when there is none.
func credentialFile(name string, getenv func(string) string) (path string, ok bool) {
	dirs := credentialStores
	if d := getenv("CREDENTIALS_DIRECTORY"); d != "" {
		dirs = []string{d}
	}
	for _, d := range dirs {
		p := filepath.Join(d, name)
		// Lstat: existence is enough; a file root reads and this user
		// cannot still names the source, and reading it says why it fails.
		if _, err := os.Lstat(p); err == nil {
			return p, true
		}
	}
	return "", false
}

// credentialPrefixes are how a config names a file in the unit's
// credentials directory, e.g. key: ${CREDENTIALS_DIRECTORY}/icebox.turn-tls.key.
var credentialPrefixes = []string{"${CREDENTIALS_DIRECTORY}/", "$CREDENTIALS_DIRECTORY/"}

// resolveCredentialPath turns a path written relative to systemd's
// credentials directory into a real file path: in $CREDENTIALS_DIRECTORY
// under the unit, else where systemd loads it from. Other paths are
// returned as they are.
func resolveCredentialPath(p string, getenv func(string) string) (string, error) {
	for _, prefix := range credentialPrefixes {
		name, ok := strings.CutPrefix(p, prefix)
		if !ok {
			continue
		}
		if f, ok := credentialFile(name, getenv); ok {
			return f, nil
		}
		return "", fmt.Errorf("systemd credential %s not found: $CREDENTIALS_DIRECTORY is unset or lacks it, and %s hold no %s",
			name, strings.Join(credentialStores, ", "), name)
	}
	return p, nil
}

// resolveAndValidate applies the systemd credentials (applyCredentials),
// then validates cfg: Validate reads some files (tls.acme.ca_root), which
// must be the real ones by then. An option whose credential is missing is
// reported once, for that.
func resolveAndValidate(cfg *Config, getenv func(string) string) error {
	credErr := applyCredentials(cfg, getenv)
	missing := map[string]bool{}
	for _, e := range cfgerr.Flatten(credErr) {
		var ce *cfgerr.Error
		if errors.As(e, &ce) {
			missing[ce.Key] = true
		}
	}
	errs := []error{credErr}
	for _, e := range cfgerr.Flatten(cfg.Validate()) {
		var ce *cfgerr.Error
		if errors.As(e, &ce) && missing[ce.Key] {
			continue
		}
		errs = append(errs, e)
	}
	return errors.Join(errs...)
}

// applyCredentials fills in what the unit passes as systemd credentials:
// files written as ${CREDENTIALS_DIRECTORY}/NAME (TLS certificates and
// keys, the ACME CA root), and the TURN secret from icebox.turn-secret
// when the config names no secret of its own. It runs on every load
// (start, reload, the subcommands), before Validate.
func applyCredentials(cfg *Config, getenv func(string) string) error {
	var errs []error
	// In file order, so that errors come out the same every time.
	for _, f := range []struct {
		key  string
		path *string
	}{
		{"turn.tls.cert", &cfg.TURN.TLS.Cert},
		{"turn.tls.key", &cfg.TURN.TLS.Key},
		{"signal.tls.cert", &cfg.Signal.TLS.Cert},
		{"signal.tls.key", &cfg.Signal.TLS.Key},
		{"tls.cert", &cfg.TLS.Cert},
		{"tls.key", &cfg.TLS.Key},
		{"tls.acme.ca_root", &cfg.TLS.ACME.CARoot},
	} {
		resolved, err := resolveCredentialPath(*f.path, getenv)
		if err != nil {
			errs = append(errs, cfgerr.New(f.key, err.Error(), "load it into the unit with LoadCredential=, or name the file by its own path"))
			continue
		}
		*f.path = resolved
	}
	t := &cfg.TURN
	if len(t.Secrets) == 0 && t.SecretFile == "" && t.SecretEnv == "" {
		if p, ok := credentialFile(turnSecretCredential, getenv); ok {
			t.SecretFile = p
			cfg.secretCredential = turnSecretCredential
		}
	}
	return errors.Join(errs...)
}

// secretSource says where the TURN secret that mints comes from, never
// the secret itself. inState is true when it is the one the daemon
// generates in its state directory.
func secretSource(cfg Config, stateDir string) (desc string, inState bool) {
	t := cfg.TURN
	switch {
	case len(t.Secrets) > 0:
		return "turn.secrets in the config", false
	case t.SecretFile != "" && cfg.secretCredential != "":
		return "systemd credential " + cfg.secretCredential + " (" + t.SecretFile + ")", false
	case t.SecretFile != "":
		return "turn.secret_file " + t.SecretFile, false
	case t.SecretEnv != "":
		return "environment variable " + t.SecretEnv + " (turn.secret_env)", false
	}
	return filepath.Join(stateDir, credentials.StateFileName), true
}

// cliStateDir is the state directory of the daemon that uses cfg, as far
// as a subcommand run from a shell can tell: the configured one, else the
// unit's StateDirectory= for the system config, else what the daemon
// would pick when run by this user.
func cliStateDir(cfg Config, loc configLocation) string {
	if cfg.StateDir == "" && loc.path == systemConfigPath && os.Getenv("STATE_DIRECTORY") == "" {
		return systemStateDir
	}
	return stateDir(cfg.StateDir)
}

// cliSecrets loads the TURN secrets for a subcommand: the config the
// daemon uses, and its secret, never a new one (only the daemon generates
// it). It says on stderr which config and which secret it used.
func cliSecrets(flagPath string, stderr io.Writer) (Config, [][]byte, error) {
	loc, err := findConfig(flagPath, os.Getenv, systemConfigPath)
	if err != nil {
		return Config{}, nil, err
	}
	cfg, err := LoadConfig(loc.path)
	if err != nil {
		return cfg, nil, fmt.Errorf("invalid config:\n%w", err)
	}
	fmt.Fprintf(stderr, "icebox: config: %s\n", loc)
	dir := cliStateDir(cfg, loc)
	desc, inState := secretSource(cfg, dir)
	secrets, err := credentials.Load(cfg.TURN.SecretSources(), dir, false)
	if err != nil {
		if inState {
			return cfg, nil, fmt.Errorf("no TURN secret found: the config names none, and the one the daemon generates (%s) cannot be read: %w. "+
				"Only the daemon generates a secret: pass the daemon's config with -config (or $%s), run this as the user the daemon runs as (root for the systemd unit), or configure the secret (turn.secret_file, or the systemd credential %s)",
				desc, err, configEnv, turnSecretCredential)
		}
		return cfg, nil, fmt.Errorf("TURN secret from %s: %w", desc, err)
	}
	fmt.Fprintf(stderr, "icebox: TURN secret: %s\n", desc)
	return cfg, secrets, nil
}

// secretNote is what start-up logs about the TURN secret: where it comes
// from and, for the one in the state directory, whether this start
// generated it. Taken before the secret is loaded; never the secret.
type secretNote struct {
	source           string
	inState, existed bool
}

func newSecretNote(cfg Config, stateDir string) secretNote {
	n := secretNote{}
	n.source, n.inState = secretSource(cfg, stateDir)
	if n.inState {
		_, err := os.Stat(n.source)
		n.existed = !errors.Is(err, fs.ErrNotExist)
	}
	return n
}

func (n secretNote) String(cfg Config) string {
	switch {
	case !cfg.TURN.Enabled && !cfg.Signal.Enabled:
		return "none needed (turn and signal are off)"
	case n.inState && !n.existed:
		return "generated, kept in " + n.source
	}
	return "loaded from " + n.source
}
