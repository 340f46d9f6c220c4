package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"time"

	"icebox/internal/credentials"
	"icebox/internal/publicip"
	"icebox/signal"

	"icebox/turnsrv"
)

// credentialsCmd is `icebox credentials`: ICE servers with a fresh TURN
// credential, like eturnalctl credentials, minted from the same secret the
// daemon uses (its config, file, env, systemd credential or generated
// state), found where the daemon finds it; it never makes one up.
func credentialsCmd(args []string, stdout, stderr io.Writer) int {
	fs, configPath := commandFlags("credentials", "usage: icebox credentials [-config FILE] [-ttl 1h] [-user NAME]\n\nPrints the iceServers list for an RTCPeerConnection.", stderr)
	ttl := fs.Duration("ttl", 0, "credential lifetime (default: turn.credential_ttl)")
	user := fs.String("user", "", "name after the ':' in the username (quotas count per name)")
	if code, ok := parseFlags(fs, args); !ok {
		return code
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "icebox credentials: unexpected argument %q\n", fs.Arg(0))
		fs.Usage()
		return 2
	}
	cfg, secrets, err := cliSecrets(*configPath, stderr)
	if err != nil {
		fmt.Fprintf(stderr, "icebox: %v\n", err)
		return 1
	}
	if !cfg.TURN.Enabled {
		fmt.Fprintln(stderr, "icebox: turn.enabled is false: there is no TURN server to mint credentials for")
		return 1
	}
	lifetime := cfg.TURN.CredentialLifetime(*ttl)
	if *ttl > lifetime {
		fmt.Fprintf(stderr, "icebox: -ttl %v is longer than turn.max_ttl (%v): the server would refuse it\n", *ttl, cfg.TURN.MaxTTL)
		return 2
	}
	*ttl = lifetime
	if why, fix, refuse := turnsrv.JudgeCredentialTTL(*ttl); refuse {
		fmt.Fprintf(stderr, "icebox: -ttl %v is too short: %s; %s\n", *ttl, why, fix)
		return 2
	} else if why != "" {
		fmt.Fprintf(stderr, "icebox: warning: -ttl %v: %s; %s\n", *ttl, why, fix)
	}
	ip, _, err := publicip.Resolve(context.Background(), cfg.publicIP())
	if err != nil {
		fmt.Fprintf(stderr, "icebox: public_ip: %v\n", err)
		return 1
	}
	username, password, _ := credentials.Mint(secrets[0], *user, *ttl, time.Now())
	servers := newICEURLs(cfg, iceHost(cfg.iceName(), ip), configPort(cfg), listenPort(cfg.TLS.Listen)).servers(username, password)
	enc := json.NewEncoder(stdout)
	enc.SetIndent("", "  ")
	if err := enc.Encode(servers); err != nil {
		fmt.Fprintf(stderr, "icebox: %v\n", err)
		return 1
	}
	return 0
}

// defaultTokenTTL is icebox token's -ttl when none is given.
const defaultTokenTTL = 10 * time.Minute

// tokenCmd is `icebox token -room R -ttl 10m`: a join token for one
// pairing, minted with the same secret the daemon verifies with.
func tokenCmd(args []string, stdout, stderr io.Writer) int {
	fs, configPath := commandFlags("token", fmt.Sprintf("usage: icebox token [-config FILE] -room R [-ttl %v]\n\nPrints a join token; the app passes it as ?token= or in WsInit.", defaultTokenTTL), stderr)
	room := fs.String("room", "", "the pairing (controllerId) the token admits to")
	ttl := fs.Duration("ttl", defaultTokenTTL, "how long the token may be used to join")
	if code, ok := parseFlags(fs, args); !ok {
		return code
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
