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
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/prometheus/client_golang/prometheus"

	"icebox/stunsrv"
)

const usage = `icebox: STUN, TURN and WebRTC signaling in one small daemon.

Usage:
  icebox [-config FILE]          run the daemon (no FILE: built-in defaults,
                                 STUN on UDP and TCP :3478)
  icebox version                 print version, commit and Go version

Options:
  -config FILE   YAML config; config.yaml in the source tree documents every
                 option with its default. Usually /etc/icebox/config.yaml.
  -h             this help

Signals: SIGINT or SIGTERM stop icebox cleanly.
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
	log, _ := newLogger(stderr, cfg.Log)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := serve(ctx, cfg, log); err != nil {
		log.Error("icebox stopped", "err", err)
		return 1
	}
	return 0
}

// daemon is every running part of icebox.
type daemon struct {
	log  *slog.Logger
	stun *stunsrv.Server
}

// start brings up every enabled part; on error nothing is left running.
func start(cfg Config, log *slog.Logger) (_ *daemon, err error) {
	d := &daemon{log: log}
	defer func() {
		if err != nil {
			d.close()
		}
	}()
	reg := prometheus.NewRegistry()
	d.stun, err = stunsrv.New(cfg.STUN, stunsrv.Options{
		Logger:     log.With("part", "stun"),
		Registerer: reg,
	})
	if err != nil {
		return d, err
	}
	log.Info("icebox started", "version", version, "stun", d.stun.Addrs())
	return d, nil
}

func (d *daemon) close() {
	if d.stun != nil {
		d.stun.Close()
	}
}

// serve runs icebox until ctx ends.
func serve(ctx context.Context, cfg Config, log *slog.Logger) error {
	d, err := start(cfg, log)
	if err != nil {
		return err
	}
	defer d.close()
	<-ctx.Done()
	log.Info("icebox stopping", "reason", context.Cause(ctx))
	return nil
}
