package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"time"

	"icebox/signal"
)

// tokenCmd is `icebox token -room R -ttl 10m`: a join token for one
// pairing, minted with the same secret the daemon verifies with.
func tokenCmd(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("icebox token", flag.ContinueOnError)
	fs.SetOutput(stderr)
	configPath := fs.String("config", "", "YAML config file (the daemon's)")
	room := fs.String("room", "", "the pairing (controllerId) the token admits to")
	ttl := fs.Duration("ttl", 10*time.Minute, "how long the token may be used to join")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: icebox token [-config FILE] -room R [-ttl 10m]\n\nPrints a join token; the app passes it as ?token= or in WsInit.")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	switch {
	case fs.NArg() > 0:
		fmt.Fprintf(stderr, "icebox token: unexpected argument %q\n", fs.Arg(0))
		fs.Usage()
		return 2
	case *room == "":
		fmt.Fprintln(stderr, "icebox token: -room is required: the pairing (controllerId) the token admits to, e.g. -room tv-42")
		return 2
	case *ttl <= 0:
		fmt.Fprintf(stderr, "icebox token: -ttl %v must be positive, e.g. -ttl 10m\n", *ttl)
		return 2
	}
	_, keys, err := cliSecrets(*configPath, stderr)
	if err != nil {
		fmt.Fprintf(stderr, "icebox: %v\n", err)
		return 1
	}
	fmt.Fprintln(stdout, signal.MintToken(keys[0], *room, time.Now().Add(*ttl)))
	return 0
}
