// Command icebox runs a STUN responder, a TURN relay and a WebRTC signaling
// relay from one config file. main parses flags, loads the config and wires
// the packages; each package does one job.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"icebox/internal/credentials"
	"icebox/internal/doctor"
	"icebox/internal/ipclass"
	"icebox/internal/publicip"
	"icebox/stunsrv"
	"icebox/turnsrv"
)

// usageFormat is icebox -h; usage fills in the defaults it names, from
// where they are set.
const usageFormat = `icebox: STUN, TURN and WebRTC signaling in one small daemon.

Usage:
  icebox [-config FILE]          run the daemon
  icebox credentials [-config FILE] [-ttl 1h] [-user NAME]
                                 print ICE servers JSON with a fresh TURN
                                 credential, for a browser or app, minted with
                                 the daemon's secret (never a new one)
  icebox token [-config FILE] -room R [-ttl %v]
                                 print a join token for one pairing
  icebox check [-insecure] [-timeout %v] [-origin O] [-token T] [-room R] [-v] URL
                                 check a deployment from outside: signaling,
                                 STUN, TURN allocation and relaying, with the
                                 likely cause of what fails; -insecure accepts
                                 any TLS certificate, -origin and -token get
                                 past access control, -room joins that room
                                 (default a random one), -v logs each step
  icebox version                 print version, commit and Go version
  icebox COMMAND -h              that command's flags in full

Options:
  -config FILE   YAML config; config.yaml in the source tree documents every
                 option with its default. Without -config: $ICEBOX_CONFIG,
                 else /etc/icebox/config.yaml if it exists, else the built-in
                 defaults (STUN and TURN on %s, signaling and the web page
                 on http://localhost%s/). The daemon and the commands look
                 alike, so they use the same config and secret.
  -h             this help

Signals: SIGHUP (systemctl reload) re-reads the config without dropping
calls (certificate files are re-read when they change, without it);
SIGINT or SIGTERM stop icebox cleanly.
`

func usage() string {
	d := DefaultConfig()
	return fmt.Sprintf(usageFormat, defaultTokenTTL, doctor.DefaultTimeout, d.STUN.Listen[0], d.Signal.Listen)
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run is main with its inputs and outputs made explicit, for tests.
func run(args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		switch args[0] {
		case "version":
			fmt.Fprintln(stdout, versionString())
			return 0
		case "credentials":
			return credentialsCmd(args[1:], stdout, stderr)
		case "check":
			return checkCmd(args[1:], stdout, stderr)
		case "token":
			return tokenCmd(args[1:], stdout, stderr)
		case "help":
			fmt.Fprint(stdout, usage())
			return 0
		default:
			fmt.Fprintf(stderr, "icebox: unknown command %q\n\n%s", args[0], usage())
			return 2
		}
	}
	fs := flag.NewFlagSet("icebox", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, usage()) }
	configPath := fs.String("config", "", "YAML config file")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "icebox: unexpected argument %q\n\n%s", fs.Arg(0), usage())
		return 2
	}
	loc, err := findConfig(*configPath, os.Getenv, systemConfigPath)
	if err != nil {
		fmt.Fprintf(stderr, "icebox: %v\n", err)
		return exitConfig
	}
	cfg, err := LoadConfig(loc.path)
	if err != nil {
		fmt.Fprintf(stderr, "icebox: invalid config:\n%v\n", err)
		return exitConfig
	}
	log, level := newLogger(stderr, cfg.Log)
	log.Info("config", "file", loc.String())
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	reload := reloader{
		signals: hup,
		load:    func() (Config, error) { return LoadConfig(loc.path) },
		level:   level,
	}
	if err := serve(ctx, cfg, log, reload); err != nil {
		if hint := fileProblem(err); hint != "" {
			log.Error("icebox cannot start until this is fixed; not worth restarting", "err", err, "fix", hint)
			return exitConfig
		}
		log.Error("icebox stopped", "err", err)
		return 1
	}
	return 0
}

// exitConfig is the exit status for a start that cannot succeed until the
// operator changes something (sysexits' EX_CONFIG): the unit's
// RestartPreventExitStatus= names it, so systemd stops instead of looping.
const exitConfig = 78

// fileProblem says how to fix a start-up error that a restart cannot
// cure, a file icebox may not read or that is not there (a secret or key
// the unit's DynamicUser cannot open) or a TURN secret too short to keep,
// or returns "".
func fileProblem(err error) string {
	var pe *fs.PathError
	switch {
	case errors.Is(err, credentials.ErrShortSecret):
		return fmt.Sprintf("write a secret of at least %d characters there, e.g. from `openssl rand -base64 32`", credentials.MinSecretLen)
	case !errors.As(err, &pe):
		return ""
	case errors.Is(err, fs.ErrPermission):
		return "icebox may not read " + pe.Path + ". Under the systemd unit it runs as its own user (DynamicUser) and cannot read root's files: " +
			"pass the TURN secret and TLS keys as systemd credentials (/etc/credstore/, LoadCredential=); see README, \"Secrets under systemd\""
	case errors.Is(err, fs.ErrNotExist):
		return pe.Path + " does not exist: create it, or correct the config"
	}
	return ""
}

// daemon is every running part of icebox.
type daemon struct {
	log      *slog.Logger
	reg      *prometheus.Registry
	publicIP netip.Addr
	stun     *stunsrv.Server
	turn     *turnsrv.Server // nil with TURN off
	signal   *signalPart     // nil with signaling off
	admin    *admin
	tls      *tlsPart
	// started is the config the parts started with: a setting that takes
	// a restart is compared with it at every reload, so it is named
	// until the restart, not only at the first reload after the change.
	started Config
}

// start brings up every enabled part; on error nothing is left running.
func start(cfg Config, log *slog.Logger) (_ *daemon, err error) {
	d := &daemon{log: log, reg: prometheus.NewRegistry(), started: cfg}
	defer func() {
		if err != nil {
			d.close(context.Background())
		}
	}()
	var how string
	if d.publicIP, how, err = publicip.Resolve(context.Background(), cfg.publicIP()); err != nil {
		return d, fmt.Errorf("public_ip: %w", err)
	}
	log.Info("public address chosen", "public_ip", d.publicIP, "how", how)
	if why := ipclass.NonPublic(d.publicIP); cfg.TURN.Enabled && why != "" {
		log.Warn("clients are told a non-public address for TURN relays: only clients on this network can use them; set public_ip to the address clients reach",
			"public_ip", d.publicIP, "range", why)
	}
	warnShortCredentialTTL(log, cfg.TURN)
	warnOpenCredentials(log, cfg)

	if d.tls, err = startTLS(cfg, log.With("part", "tls"), d.reg); err != nil {
		return d, err
	}
	d.stun, err = stunsrv.New(cfg.STUN, stunsrv.Options{
		Logger:          log.With("part", "stun"),
		Registerer:      d.reg,
		Passthrough:     cfg.TURN.Enabled,
		TURNIdleTimeout: cfg.TURN.StreamIdleTimeout(),
	})
	if err != nil {
		return d, err
	}
	state := stateDir(cfg.StateDir)
	secret := newSecretNote(cfg, state)
	if cfg.TURN.Enabled {
		opts := turnsrv.Options{
			Logger:         log.With("part", "turn"),
			Registerer:     d.reg,
			PublicIP:       d.publicIP,
			StateDir:       state,
			PacketConns:    d.stun.PacketConns(),
			Listeners:      d.stun.Listeners(),
			FrontDoor:      d.stun.AddListener,
			GetCertificate: d.tls.turnCert(),
		}
		turnFromSharedPort(&opts, d.tls)
		d.turn, err = turnsrv.New(cfg.TURN, opts)
		if err != nil {
			return d, err
		}
	}
	if cfg.Signal.Enabled {
		// The port actually bound, which differs from the config's only
		// when that says 0 (tests).
		port := d.stun.PacketConns()[0].LocalAddr().(*net.UDPAddr).Port
		urls := newICEURLs(cfg, iceHost(cfg.iceName(), d.publicIP), port, d.tls.sharedPort())
		if d.signal, err = startSignal(cfg, urls, d.turn, d.tls, log.With("part", "signal"), d.reg); err != nil {
			return d, err
		}
	}
	if err := d.tls.startACME(); err != nil {
		return d, err
	}
	if d.admin, err = startAdmin(cfg.Admin, d.reg, d.readyz, log); err != nil {
		return d, err
	}
	log.Info("icebox started", "version", version, "stun", d.stun.Addrs(), "turn", d.turnSummary(cfg),
		"signal", d.signal.addr(), "web", cfg.Signal.Enabled && cfg.Signal.Web, "admin", d.admin.addr(),
		"tls_port", d.tls.addr(), "state_dir", state, "turn_secret", secret.String(cfg))
	return d, nil
}

func (d *daemon) turnSummary(cfg Config) string {
	if d.turn == nil {
		return "off"
	}
	s := "on the STUN sockets, relays " + d.turn.RelayIP().String() + " ports " + cfg.TURN.Relay.Ports
	if a := d.turn.TLSAddr(); a != nil {
		s += ", tls " + a.String()
	}
	return s
}

// ready reports whether every read loop on the STUN/TURN sockets makes
// progress (stunsrv's Alive), the part that can hang unseen while the
// process looks fine: the readiness probe and the systemd watchdog ask it.
// The loops report their own progress: a probe over loopback could be
// drowned by a flood and restart a healthy relay. It only reads counters,
// so it cannot block and takes no context.
func (d *daemon) ready() error {
	return d.stun.Alive()
}

// readyz is ready plus the cluster's link to NATS: a node without it
// serves only pairings whose members are all local, which /readyz says,
// but the watchdog must not restart it for that.
func (d *daemon) readyz() error {
	if err := d.ready(); err != nil {
		return err
	}
	return d.signal.clusterReady()
}

func (d *daemon) close(ctx context.Context) {
	// Signaling first: its clients are told (close 1001) while TURN still
	// relays their calls.
	d.signal.close(ctx)
	d.admin.close(ctx)
	// TURN closes the STUN sockets it was handed (pion has no other way to
	// stop reading them), so it goes first; STUN's Close then finds them
	// closed, which it does not count as an error.
	if d.turn != nil {
		d.turn.Close()
	}
	if d.stun != nil {
		d.stun.Close()
	}
	d.tls.close()
}

// reloader is how serve learns of a reload (SIGHUP, systemctl reload)
// and re-reads the config.
type reloader struct {
	signals <-chan os.Signal
	load    func() (Config, error)
	level   *slog.LevelVar
}

// serve runs icebox until ctx ends, keeping systemd informed.
func serve(ctx context.Context, cfg Config, log *slog.Logger, rl reloader) error {
	d, err := start(cfg, log)
	if err != nil {
		return err
	}
	if err := sdNotify("READY=1"); err != nil {
		log.Warn("cannot tell systemd we are ready", "err", err)
	}
	var watchdog <-chan time.Time
	if every := watchdogInterval(); every > 0 {
		t := time.NewTicker(every)
		defer t.Stop()
		watchdog = t.C
	}
	for {
		select {
		case <-ctx.Done():
			log.Info("icebox stopping", "reason", context.Cause(ctx))
			sdNotify("STOPPING=1")
			stopCtx, cancel := context.WithTimeout(context.Background(), stopTimeout)
			defer cancel()
			d.close(stopCtx)
			return nil
		case <-rl.signals:
			sdNotify("RELOADING=1")
			next, err := rl.load()
			if err != nil {
				log.Error("reload refused, the running config stays", "err", err)
			} else if err := d.reload(next, rl.level); err != nil {
				log.Error("reload failed, the running config stays", "err", err)
			}
			sdNotify("READY=1")
		case <-watchdog:
			// A stuck reader must not be kept alive by a healthy timer:
			// ping only when every read loop makes progress.
			if err := d.ready(); err != nil {
				log.Error("self-check failed, not pinging the watchdog", "err", err)
			} else {
				sdNotify("WATCHDOG=1")
			}
		}
	}
}

// stopTimeout bounds a graceful stop; systemd's TimeoutStopSec is longer.
const stopTimeout = 10 * time.Second

// warnShortCredentialTTL says so when turn.credential_ttl is short enough
// to cut calls off, at start and on reload. Validate refuses what
// JudgeCredentialTTL refuses; a short one is allowed, as with icebox
// credentials -ttl, and said.
func warnShortCredentialTTL(log *slog.Logger, turn turnsrv.Config) {
	if why, fix, _ := turnsrv.JudgeCredentialTTL(turn.CredentialTTL); turn.Enabled && why != "" {
		log.Warn("turn.credential_ttl is short: "+why, "credential_ttl", turn.CredentialTTL, "fix", fix)
	}
}

// warnOpenCredentials says, at start, that anyone who reaches signaling
// gets TURN credentials (WsIceServers after WsInit, as the talk's app
// expects), unless join tokens are required or signaling listens on
// loopback only: unlike coturn, whose credentials come only from the
// operator's backend, icebox hands them out itself.
func warnOpenCredentials(log *slog.Logger, cfg Config) {
	if !cfg.TURN.Enabled || !cfg.Signal.Enabled || cfg.Signal.RequireToken {
		return
	}
	if loopbackOnly(cfg.Signal.Listen) && (cfg.TLS.Listen == "" || loopbackOnly(cfg.TLS.Listen)) {
		return // the shared TLS port, when there is one, serves signaling too
	}
	log.Warn("anyone who can reach signal.listen gets TURN credentials (rate-limited per address and bounded by turn.quotas); set signal.require_token: true once your app sends join tokens (README, Join tokens)",
		"signal_listen", cfg.Signal.Listen)
}

// loopbackOnly reports whether a listen address (host:port) takes
// connections from this host only.
func loopbackOnly(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.IsLoopback() || host == "localhost"
}
