package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"time"

	"icebox/turnsrv"
)

// credentialsCmd is `icebox credentials`: ICE servers with a fresh TURN
// credential, like eturnalctl credentials, minted from the same secret the
// daemon uses (its config, file, env or generated state).
func credentialsCmd(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("icebox credentials", flag.ContinueOnError)
	fs.SetOutput(stderr)
	configPath := fs.String("config", "", "YAML config file (the daemon's)")
	ttl := fs.Duration("ttl", 0, "credential lifetime (default: turn.credential_ttl)")
	user := fs.String("user", "", "name after the ':' in the username (quotas count per name)")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: icebox credentials [-config FILE] [-ttl 1h] [-user NAME]\n\nPrints the iceServers list for an RTCPeerConnection.")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	cfg, err := LoadConfig(*configPath)
	if err != nil {
		fmt.Fprintf(stderr, "icebox: invalid config:\n%v\n", err)
		return 1
	}
	if !cfg.TURN.Enabled {
		fmt.Fprintln(stderr, "icebox: turn.enabled is false: there is no TURN server to mint credentials for")
		return 1
	}
	if *ttl <= 0 {
		*ttl = cfg.TURN.CredentialTTL
	}
	if *ttl > cfg.TURN.MaxTTL {
		fmt.Fprintf(stderr, "icebox: -ttl %v is longer than turn.max_ttl (%v): the server would refuse it\n", *ttl, cfg.TURN.MaxTTL)
		return 2
	}
	secrets, err := turnsrv.LoadSecrets(cfg.TURN, stateDir(cfg.StateDir), true)
	if err != nil {
		fmt.Fprintf(stderr, "icebox: %v\n", err)
		return 1
	}
	ip, _, err := resolvePublicIP(context.Background(), cfg)
	if err != nil {
		fmt.Fprintf(stderr, "icebox: public_ip: %v\n", err)
		return 1
	}
	servers := newICEURLs(cfg, iceHost(cfg.iceName(), ip), configPort(cfg), listenPort(cfg.TLS.Listen)).servers(secrets[0], *user, *ttl, time.Now())
	enc := json.NewEncoder(stdout)
	enc.SetIndent("", "  ")
	if err := enc.Encode(servers); err != nil {
		fmt.Fprintf(stderr, "icebox: %v\n", err)
		return 1
	}
	return 0
}
