// Package doctor checks an icebox deployment from the outside, as a client
// would: it opens the signaling WebSocket, sends WsInit, takes the ICE
// servers of the WsIceServers answer, STUN-binds to each stun: URL,
// allocates on each turn:/turns: URL with the credentials it was given, and
// relays a packet from one allocation to another and back. Each step is
// reported with what it saw and, when it failed or looks wrong, the likely
// cause in plain words. It is the engine of `icebox check URL`.
//
// The check never sends a packet to an address it has not verified: the
// relay round trip runs only between relayed addresses equal to the address
// their TURN URL names, so a misconfigured public_ip is diagnosed without
// relaying anything towards the wrong address.
package doctor

import (
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"icebox/internal/pionlog"
)

// Options tune a check. The zero value is usable.
type Options struct {
	// Timeout bounds each step. Default DefaultTimeout.
	Timeout time.Duration
	// Insecure skips TLS certificate verification for wss: and turns:
	// (self-signed test certificates).
	Insecure bool
	// Origin, when set, is sent as the Origin header, as a browser would.
	Origin string
	// Token is a join token, sent as ?token=. Join tokens are minted for one
	// pairing, so set Room to the pairing it was minted for.
	Token string
	// Room is the pairing the check names in ?room=. Default: a random
	// "icebox-check-…", so that the check never joins a real pairing.
	Room string
	// Logger receives debug lines (pion's included). Default: discard.
	Logger *slog.Logger
}

// DefaultTimeout is the per-step timeout when Options.Timeout is zero.
const DefaultTimeout = 5 * time.Second

// Step names.
const (
	StepConnect   = "signaling connect"
	StepInit      = "signaling WsInit"
	StepSTUN      = "STUN binding"
	StepTURN      = "TURN allocate"
	StepRoundTrip = "TURN relay round trip"
)

// Step is the outcome of one check.
type Step struct {
	Name   string        // one of the Step* constants
	Target string        // the URL checked (never with a token or credential)
	OK     bool          // the step worked (or was skipped without harm)
	Took   time.Duration // how long it took
	Detail string        // what was seen: addresses, codes, errors
	// Cause is, when !OK, the likely reason and what to do about it; when
	// OK, a warning about something that works but looks wrong (or why the
	// step was skipped).
	Cause   string
	Skipped bool // the step was not run; Cause says why
}

// Status is the step's verdict as the table shows it: "ok", "WARN", "skip"
// or "FAIL".
func (s Step) Status() string {
	switch {
	case !s.OK:
		return "FAIL"
	case s.Skipped:
		return "skip"
	case s.Cause != "":
		return "WARN"
	}
	return "ok"
}

// Report is the outcome of a check, steps in the order they ran.
type Report struct {
	Steps []Step
}

// OK reports whether the check ran and every step passed (warnings and
// harmless skips included).
func (r Report) OK() bool {
	if len(r.Steps) == 0 {
		return false
	}
	for _, s := range r.Steps {
		if !s.OK {
			return false
		}
	}
	return true
}

// WriteTable writes the report as an aligned plain-text table, one row per
// step with its cause or warning on the line below, and a summary line.
func (r Report) WriteTable(w io.Writer) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "STATUS\tSTEP\tTARGET\tTIME\tDETAIL")
	var ok, warn, skip, fail int
	for _, s := range r.Steps {
		took := "-"
		if !s.Skipped {
			took = fmtDuration(s.Took)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", s.Status(), s.Name, s.Target, took, oneLine(s.Detail))
		if s.Cause != "" {
			label := "cause"
			switch s.Status() {
			case "WARN":
				label = "warning"
			case "skip":
				label = "skipped"
			}
			fmt.Fprintf(tw, "\t\t\t\t%s: %s\n", label, oneLine(s.Cause))
		}
		switch s.Status() {
		case "ok":
			ok++
		case "WARN":
			warn++
		case "skip":
			skip++
		default:
			fail++
		}
	}
	tw.Flush()
	verdict := "PASS"
	if !r.OK() {
		verdict = "FAIL"
	}
	fmt.Fprintf(w, "%s: %d ok, %d warnings, %d skipped, %d failed\n", verdict, ok, warn, skip, fail)
}

func fmtDuration(d time.Duration) string {
	if d < time.Millisecond {
		return "<1ms"
	}
	if d >= time.Second {
		return d.Round(10 * time.Millisecond).String()
	}
	return d.Round(time.Millisecond).String()
}

// oneLine keeps a table cell on one line whatever a server sent.
func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}

// Run checks the deployment whose signaling endpoint is signalURL (ws://,
// wss://, http://, https:// or a bare host:port; the path defaults to
// /connect). It never returns an error: everything that goes wrong is a
// failed step of the report.
func Run(ctx context.Context, signalURL string, opts Options) Report {
	if opts.Timeout <= 0 {
		opts.Timeout = DefaultTimeout
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Room == "" {
		opts.Room = "icebox-check-" + strings.ToLower(rand.Text()[:12])
	}
	c := &checker{opts: opts, log: opts.Logger, pionLog: pionlog.New(opts.Logger)}
	c.run(ctx, signalURL)
	c.pionLog.Shut()
	return Report{Steps: c.steps}
}

type checker struct {
	opts    Options
	log     *slog.Logger
	pionLog pionlog.Factory
	steps   []Step
}

func (c *checker) add(s Step) { c.steps = append(c.steps, s) }

func (c *checker) run(ctx context.Context, signalURL string) {
	u, shown, err := signalingURL(signalURL, c.opts.Room, c.opts.Token)
	if err != nil {
		c.add(Step{Name: StepConnect, Target: signalURL, Detail: err.Error(),
			Cause: "give the signaling URL as wss://host[:port][/connect] (or ws:// without TLS)"})
		return
	}
	ws, step := c.connect(ctx, u, shown)
	c.add(step)
	if !step.OK {
		return
	}
	servers, step := c.init(ctx, ws, shown)
	closeWS(ws)
	c.add(step)
	if !step.OK {
		return
	}

	var stuns, turns []iceURL
	for _, s := range servers {
		for _, raw := range s.URLs {
			iu, err := parseICEURL(raw)
			if err != nil {
				c.add(Step{Name: "ICE URL", Target: raw, Detail: err.Error(),
					Cause: "WsIceServers lists a URL no client can use: check signal.ice_host and the TURN ports in the config"})
				continue
			}
			iu.username, iu.credential = s.Username, s.Credential
			if iu.isTURN() {
				turns = append(turns, iu)
			} else {
				stuns = append(stuns, iu)
			}
		}
	}
	if len(stuns) == 0 {
		c.add(Step{Name: StepSTUN, Target: "(none offered)", OK: true, Skipped: true,
			Cause: "WsIceServers lists no stun: URL; clients still learn their address from TURN, but most apps expect one"})
	}
	if len(turns) == 0 {
		c.add(Step{Name: StepTURN, Target: "(none offered)",
			Detail: "WsIceServers lists no turn: or turns: URL",
			Cause: "TURN is off (turn.enabled is false) or signaling does not advertise it: " +
				"clients behind symmetric NATs or UDP-blocking firewalls will not connect"})
	}

	// STUN and TURN checks are independent: run them side by side so that
	// a few unreachable servers cost one timeout, not one each.
	stunSteps := make([]Step, len(stuns))
	turnResults := make([]turnResult, len(turns))
	var wg sync.WaitGroup
	for i, u := range stuns {
		wg.Go(func() { stunSteps[i] = c.stunBind(ctx, u) })
	}
	for i, u := range turns {
		wg.Go(func() { turnResults[i] = c.allocate(ctx, u) })
	}
	wg.Wait()
	refineSilentTURN(turnResults, turns, stunSteps, stuns)
	c.steps = append(c.steps, stunSteps...)
	for _, r := range turnResults {
		c.add(r.step)
	}

	var live []*allocation
	for _, r := range turnResults {
		if r.alloc != nil {
			live = append(live, r.alloc)
		}
	}
	if len(live) > 0 {
		c.add(c.roundTrip(ctx, live))
	}
	for _, a := range live {
		a.close()
	}
}
