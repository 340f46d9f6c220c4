package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"

	"icebox/internal/doctor"
)

// checkCmd is `icebox check URL`: a deployment checked from outside, as a
// client would use it. Exit 0 when everything works, 1 when something
// does not, 2 on bad usage.
func checkCmd(args []string, stdout, stderr io.Writer) int {
	fs, opts, verbose := checkFlags()
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintln(stderr, `usage: icebox check [flags] URL

Checks an icebox deployment from the outside: connects to the signaling URL
(ws://host:8080/connect, wss://..., or host:port), does WsInit, STUN-binds to
each STUN URL it is given, allocates on each TURN URL with the credentials it
received, relays a packet through TURN and back, and prints what works, what
does not and the likely cause.`)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() != 1 {
		fs.Usage()
		return 2
	}
	if *verbose {
		opts.Logger = slog.New(slog.NewTextHandler(stderr, nil))
	}
	report := doctor.Run(context.Background(), fs.Arg(0), *opts)
	report.WriteTable(stdout)
	if !report.OK() {
		return 1
	}
	return 0
}

// checkFlags defines check's flags; icebox -h lists every one of them.
func checkFlags() (fs *flag.FlagSet, opts *doctor.Options, verbose *bool) {
	fs = flag.NewFlagSet("icebox check", flag.ContinueOnError)
	opts = &doctor.Options{}
	fs.DurationVar(&opts.Timeout, "timeout", doctor.DefaultTimeout, "time allowed for each step")
	fs.BoolVar(&opts.Insecure, "insecure", false, "accept any TLS certificate (self-signed test setups)")
	fs.StringVar(&opts.Origin, "origin", "", "Origin header to send, when signal.allowed_origins is set")
	fs.StringVar(&opts.Token, "token", "", "join token, when signal.require_token is on (icebox token -room R)")
	fs.StringVar(&opts.Room, "room", "", "room to join (default: a random one, so no real call is touched)")
	verbose = fs.Bool("v", false, "log each step as it runs")
	return fs, opts, verbose
}
