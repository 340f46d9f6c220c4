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
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"icebox/stunsrv"
	"icebox/turnsrv"
)

const usage = `icebox: STUN, TURN and WebRTC signaling in one small daemon.

Usage:
  icebox [-config FILE]          run the daemon (no FILE: built-in defaults:
                                 STUN and TURN on :3478, signaling and the
                                 web page on http://localhost:8080/)
  icebox credentials [-config FILE] [-ttl 1h] [-user NAME]
                                 print ICE servers JSON with a fresh TURN
                                 credential, for a browser or app
  icebox token [-config FILE] -room R [-ttl 10m]
                                 print a join token for one pairing
  icebox check [-insecure] URL   check a deployment from outside: signaling,
                                 STUN, TURN allocation and relaying, with the
                                 likely cause of what fails
  icebox version                 print version, commit and Go version

Options:
  -config FILE   YAML config; config.yaml in the source tree documents every
                 option with its default. Usually /etc/icebox/config.yaml.
  -h             this help

Signals: SIGHUP (systemctl reload) re-reads the config and certificates
without dropping calls; SIGINT or SIGTERM stop icebox cleanly.
`

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
			fmt.Fprint(stdout, usage)
			return 0
		default:
			fmt.Fprintf(stderr, "icebox: unknown command %q\n\n%s", args[0], usage)
			return 2
		}
	}
	fs := flag.NewFlagSet("icebox", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, usage) }
	configPath := fs.String("config", "", "YAML config file")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "icebox: unexpected argument %q\n\n%s", fs.Arg(0), usage)
		return 2
	}
	cfg, err := LoadConfig(*configPath)
	if err != nil {
		fmt.Fprintf(stderr, "icebox: invalid config:\n%v\n", err)
		return 1
	}
	log, level := newLogger(stderr, cfg.Log)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	reload := reloader{
		signals: hup,
		load:    func() (Config, error) { return LoadConfig(*configPath) },
		level:   level,
	}
	if err := serve(ctx, cfg, log, reload); err != nil {
		log.Error("icebox stopped", "err", err)
		return 1
	}
	return 0
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
}

// start brings up every enabled part; on error nothing is left running.
func start(cfg Config, log *slog.Logger) (_ *daemon, err error) {
	d := &daemon{log: log, reg: prometheus.NewRegistry()}
	defer func() {
		if err != nil {
			d.close(context.Background())
		}
	}()
	var how string
	if d.publicIP, how, err = resolvePublicIP(context.Background(), cfg); err != nil {
		return d, fmt.Errorf("public_ip: %w", err)
	}
	log.Info("public address chosen", "public_ip", d.publicIP, "how", how)
	if cfg.TURN.Enabled && !isPublic(d.publicIP) {
		log.Warn("clients are told a non-public address for TURN relays: only clients on this network can use them; set public_ip to the address clients reach",
			"public_ip", d.publicIP)
	}

	d.stun, err = stunsrv.New(cfg.STUN, stunsrv.Options{
		Logger:      log.With("part", "stun"),
		Registerer:  d.reg,
		Passthrough: cfg.TURN.Enabled,
		// A TURN connection is quiet between refreshes, which come before
		// the allocation's lifetime runs out.
		TURNIdleTimeout: cfg.TURN.Quotas.MaxLifetime + time.Minute,
	})
	if err != nil {
		return d, err
	}
	if cfg.TURN.Enabled {
		d.turn, err = turnsrv.New(cfg.TURN, turnsrv.Options{
			Logger:      log.With("part", "turn"),
			Registerer:  d.reg,
			PublicIP:    d.publicIP,
			StateDir:    stateDir(cfg.StateDir),
			PacketConns: d.stun.PacketConns(),
			Listeners:   d.stun.Listeners(),
		})
		if err != nil {
			return d, err
		}
	}
	if cfg.Signal.Enabled {
		// The port actually bound, which differs from the config's only
		// when that says 0 (tests).
		port := d.stun.PacketConns()[0].LocalAddr().(*net.UDPAddr).Port
		urls := newICEURLs(cfg, iceHost(cfg.iceName(), d.publicIP), port)
		if d.signal, err = startSignal(cfg, urls, d.turn, log.With("part", "signal"), d.reg); err != nil {
			return d, err
		}
	}
	if d.admin, err = startAdmin(cfg.Admin, d.reg, d.readyz, log); err != nil {
		return d, err
	}
	log.Info("icebox started", "version", version, "stun", d.stun.Addrs(), "turn", d.turnSummary(cfg),
		"signal", d.signal.addr(), "web", cfg.Signal.Enabled && cfg.Signal.Web, "admin", d.admin.addr())
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

// ready is true when every part answers: the readiness probe and the
// systemd watchdog ask it.
func (d *daemon) ready(ctx context.Context) error {
	return d.stun.SelfCheck(ctx)
}

// readyz is ready plus the cluster's link to NATS: a node without it
// serves only pairings whose members are all local, which /readyz says,
// but the watchdog must not restart it for that.
func (d *daemon) readyz(ctx context.Context) error {
	if err := d.ready(ctx); err != nil {
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
	// stop reading them), so it goes first; STUN's second close is a no-op.
	if d.turn != nil {
		d.turn.Close()
	}
	if d.stun != nil {
		d.stun.Close()
	}
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
			} else if err := d.reload(cfg, next, rl.level); err != nil {
				log.Error("reload failed, the running config stays where it could", "err", err)
			} else {
				cfg = next
			}
			sdNotify("READY=1")
		case <-watchdog:
			// A stuck reader must not be kept alive by a healthy timer:
			// ping only when STUN still answers.
			checkCtx, cancel := context.WithTimeout(ctx, 2*time.Second)
			if err := d.ready(checkCtx); err != nil {
				log.Error("self-check failed, not pinging the watchdog", "err", err)
			} else {
				sdNotify("WATCHDOG=1")
			}
			cancel()
		}
	}
}

// stopTimeout bounds a graceful stop; systemd's TimeoutStopSec is longer.
const stopTimeout = 10 * time.Second
