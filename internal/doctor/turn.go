package doctor

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/pion/stun/v3"
	"github.com/pion/turn/v4"

	"icebox/internal/credentials"
	"icebox/internal/ipclass"
)

// allocation is one live TURN allocation made by the check.
type allocation struct {
	url       iceURL
	serverIPs []netip.Addr // what the URL's host resolves to
	conn      net.PacketConn
	client    *turn.Client
	relay     net.PacketConn
	relayed   netip.AddrPort
	// verified: the relayed address is one the URL's host resolves to, so
	// sending to it reaches this very server. Only verified relayed
	// addresses are ever used as peers.
	verified bool
}

func (a *allocation) close() {
	if a.relay != nil {
		a.relay.Close() // a Refresh with lifetime 0, not waited for
	}
	a.client.Close()
	a.conn.Close()
}

// udpConn is a connected UDP socket as a net.PacketConn for pion's client.
// Being connected, it learns of an ICMP "port unreachable" (ECONNREFUSED),
// which an unconnected socket would silently drop.
type udpConn struct {
	*net.UDPConn
	refused   atomic.Bool
	onRefused func() // set before use
}

func (c *udpConn) WriteTo(p []byte, _ net.Addr) (int, error) {
	n, err := c.Write(p)
	c.check(err)
	return n, err
}

func (c *udpConn) ReadFrom(p []byte) (int, net.Addr, error) {
	n, err := c.Read(p)
	c.check(err)
	return n, c.RemoteAddr(), err
}

func (c *udpConn) check(err error) {
	if errors.Is(err, syscall.ECONNREFUSED) && !c.refused.Swap(true) && c.onRefused != nil {
		go c.onRefused()
	}
}

// turnResult is what allocate learned, for run to cross-check.
type turnResult struct {
	alloc  *allocation // nil when the allocation failed
	step   Step
	silent bool // the server never answered over UDP
}

// allocate connects to a TURN URL as its transport says and allocates a
// UDP relay with the credentials from WsIceServers.
func (c *checker) allocate(ctx context.Context, u iceURL) (res turnResult) {
	res.step = Step{Name: StepTURN, Target: u.raw}
	step := &res.step
	ctx, ips, done, ok := c.begin(ctx, u, step)
	defer done()
	if !ok {
		return res
	}
	var err error
	server := netip.AddrPortFrom(ips[0], uint16(u.port))
	a := &allocation{url: u, serverIPs: ips}
	var uc *udpConn
	switch u.transportName() {
	case "UDP":
		conn, err := net.DialUDP("udp4", nil, net.UDPAddrFromAddrPort(server))
		if err != nil {
			step.Detail, step.Cause = err.Error(), "cannot open a UDP socket towards the server"
			return res
		}
		uc = &udpConn{UDPConn: conn}
		a.conn = uc
	case "TCP", "TLS":
		var conn net.Conn
		if u.transportName() == "TLS" {
			d := tls.Dialer{Config: &tls.Config{ServerName: u.host, InsecureSkipVerify: c.opts.Insecure}}
			conn, err = d.DialContext(ctx, "tcp4", server.String())
		} else {
			var d net.Dialer
			conn, err = d.DialContext(ctx, "tcp4", server.String())
		}
		if err != nil {
			step.Detail, step.Cause = err.Error(), streamCause(u, err, c.opts.Timeout)
			return res
		}
		a.conn = turn.NewSTUNConn(conn)
	}

	// Retransmitting over a stream only duplicates requests: let one
	// transaction wait the whole step.
	rto := time.Duration(0) // pion's default, 200ms doubling
	if uc == nil {
		rto = c.opts.Timeout
	}
	client, err := turn.NewClient(&turn.ClientConfig{
		STUNServerAddr: server.String(),
		TURNServerAddr: server.String(),
		Username:       u.username,
		Password:       u.credential,
		Software:       "icebox-check",
		RTO:            rto,
		Conn:           a.conn,
		LoggerFactory:  c.pionLog,
	})
	if err != nil {
		a.conn.Close()
		step.Detail, step.Cause = err.Error(), "cannot set up a TURN client"
		return res
	}
	a.client = client
	if uc != nil {
		uc.onRefused = client.Close
	}
	client.Listen()

	// pion's transactions take a minute to give up: the step's deadline
	// closes the socket (failing new transactions) and the transactions
	// under way.
	stop := context.AfterFunc(ctx, func() {
		a.conn.Close()
		client.Close()
	})
	relay, err := client.Allocate()
	if !stop() {
		if err == nil {
			relay.Close()
		}
		err = context.DeadlineExceeded
	}
	if err != nil {
		a.close()
		c.log.Debug("doctor: TURN allocate failed", "url", u.raw, "err", err)
		refused := uc != nil && uc.refused.Load()
		step.Detail, step.Cause = allocateDiagnosis(u, err, refused, c.opts.Timeout)
		if step.Detail == "" {
			step.Detail = err.Error()
		}
		res.silent = uc != nil && !refused && errors.Is(err, context.DeadlineExceeded)
		return res
	}
	a.relay = relay
	ra, _ := relay.LocalAddr().(*net.UDPAddr)
	if ra == nil {
		a.close()
		step.Detail = fmt.Sprintf("relayed address %v is not UDP", relay.LocalAddr())
		step.Cause = "the server allocated something other than a UDP relay"
		return res
	}
	rip, _ := netip.AddrFromSlice(ra.IP)
	a.relayed = netip.AddrPortFrom(rip.Unmap(), uint16(ra.Port))
	a.verified = slices.Contains(ips, a.relayed.Addr())
	res.alloc = a
	step.OK = true
	step.Detail = fmt.Sprintf("relayed address %s (over %s)", a.relayed, u.transportName())
	if !a.verified {
		fail, cause := relayedCause(u, a.relayed.Addr(), ips)
		step.OK = !fail
		step.Cause = cause
	}
	return res
}

// relayedCause judges a relayed address that is not one of ips, the
// addresses the TURN URL's host resolves to: a private one behind a public
// name fails (clients cannot reach it), any other is a warning.
func relayedCause(u iceURL, relayed netip.Addr, ips []netip.Addr) (fail bool, cause string) {
	if !ipclass.IsPublic(relayed) && ipclass.IsPublic(ips[0]) {
		return true, fmt.Sprintf("TURN %s allocated but relayed address %s is private: set public_ip to the address clients reach (%s, %s?)",
			u.transportName(), relayed, ips[0], u.names())
	}
	return false, fmt.Sprintf("relayed address %s is not %s, %s: if clients cannot reach %s, public_ip is wrong (set it to %s?)",
		relayed, ips[0], u.names(), relayed, ips[0])
}

// streamCause explains a failed TCP or TLS connection to a TURN server.
func streamCause(u iceURL, err error, timeout time.Duration) string {
	if cause := tlsCause(err, u.host); cause != "" {
		return cause
	}
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return fmt.Sprintf("connection refused: nothing listens on tcp/%d at %s (turn.enabled is false, stun.tcp is off, or another port)", u.port, u.host)
	case isTimeout(err):
		return fmt.Sprintf("TURN over %s unreachable: no answer from tcp/%d within %s; a firewall blocks it, or the host is down", u.transportName(), u.port, timeout)
	}
	return "cannot connect to the TURN server: check the network path"
}

// renewCertificate is what to do about a certificate near or past its
// end. icebox needs no signal for it: it serves a replaced certificate
// file within seconds, and renews an ACME one by itself, so an ACME one
// this old means renewal keeps failing.
const renewCertificate = "renew it; icebox serves a replaced certificate file within seconds, no reload needed. " +
	"With tls.acme icebox renews by itself: renewal is failing, see its log and icebox_tls_acme_failures_total"

// tlsCause explains certificate and protocol errors, or returns "".
func tlsCause(err error, host string) string {
	var unknownCA x509.UnknownAuthorityError
	var hostErr x509.HostnameError
	var invalid x509.CertificateInvalidError
	var recErr tls.RecordHeaderError
	switch {
	case errors.As(err, &unknownCA):
		return "the TLS certificate is not trusted: self-signed, or the server does not send its intermediate chain (serve fullchain.pem); --insecure skips this check for tests"
	case errors.As(err, &hostErr):
		return fmt.Sprintf("the TLS certificate is not for %s: get one that names it", host)
	case errors.As(err, &invalid) && invalid.Reason == x509.Expired:
		return "the TLS certificate has expired or is not valid yet (or this machine's clock is wrong): " + renewCertificate
	case errors.As(err, &recErr):
		return "the server does not speak TLS on this port"
	}
	return ""
}

// allocateDiagnosis explains a failed Allocate.
func allocateDiagnosis(u iceURL, err error, refused bool, timeout time.Duration) (detail, cause string) {
	var te *stun.TurnError
	switch {
	case refused || errors.Is(err, syscall.ECONNREFUSED):
		return "port unreachable",
			fmt.Sprintf("udp/%d on %s answers \"port unreachable\": nothing listens there (icebox not running, turn.enabled is false, or another port)", u.port, u.host)
	case errors.Is(err, context.DeadlineExceeded):
		detail = fmt.Sprintf("no answer to Allocate within %s", timeout)
		if u.transportName() == "UDP" {
			return detail, fmt.Sprintf("TURN over UDP unreachable: a firewall blocks udp/%d, or turn.enabled is false", u.port)
		}
		return detail, fmt.Sprintf("connected over %s but no TURN answer: turn.enabled is false, or another service holds tcp/%d", u.transportName(), u.port)
	case errors.As(err, &te):
		code := te.ErrorCodeAttr
		detail = strings.TrimSpace(fmt.Sprintf("Allocate error %d %s", code.Code, code.Reason))
		cause = allocateRefusals[code.Code]
		if c := code.Code; c == stun.CodeBadRequest || c == stun.CodeUnauthorized || c == stun.CodeWrongCredentials {
			// icebox answers a bad MESSAGE-INTEGRITY or an unknown or
			// expired username with 401 (pion alone, and older icebox,
			// with 400); the error comes from the authenticated request,
			// after the server's 401 challenge.
			cause = "credentials rejected: the TURN secret differs from the one signaling mints with, or clock skew"
			if u.username == "" {
				cause = "WsIceServers gave no username/credential for this URL: signaling does not mint TURN credentials (no turn secret?)"
			} else if exp, _, ok := credentials.ParseUsername(u.username); ok && time.Until(exp) <= 0 {
				cause = fmt.Sprintf("credentials rejected: the username expired at %s by this machine's clock; signaling's clock is behind, or turn.credential_ttl is too short",
					exp.UTC().Format(time.RFC3339))
			}
		}
		if cause == "" {
			cause = "the TURN server refused the allocation: see its log"
		}
		return detail, cause
	case errors.Is(err, stun.ErrAttributeNotFound):
		return "answered Allocate without an authentication challenge",
			fmt.Sprintf("%s speaks STUN but not TURN: turn.enabled is false, or another STUN server holds the port", u.hostport())
	case errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET) || strings.Contains(err.Error(), "closed"):
		return err.Error(), fmt.Sprintf("the server closed the %s connection without answering: turn.enabled is false, or a connection limit was reached", u.transportName())
	}
	return err.Error(), "the allocation failed: see the detail and the server's log"
}

// refineSilentTURN sharpens the diagnosis of a TURN URL that never
// answered over UDP when a STUN Binding to the same address worked: the
// port is open and icebox is there, it just does not relay.
func refineSilentTURN(turns []turnResult, turnURLs []iceURL, stunSteps []Step, stunURLs []iceURL) {
	for i := range turns {
		if !turns[i].silent {
			continue
		}
		for j, su := range stunURLs {
			if stunSteps[j].OK && !stunSteps[j].Skipped && su.hostport() == turnURLs[i].hostport() {
				turns[i].step.Cause = fmt.Sprintf("TURN over UDP unreachable: %s answers STUN Binding but not TURN Allocate: turn.enabled is false",
					su.hostport())
				break
			}
		}
	}
}

// roundTrip relays a packet from one allocation's relayed address to
// another's and back, through the server. Only verified relayed addresses
// (equal to the address the TURN URL names) are used as peers, so no
// packet ever heads for an address that may not be this server.
func (c *checker) roundTrip(ctx context.Context, allocs []*allocation) (step Step) {
	step = Step{Name: StepRoundTrip, Target: allocs[0].url.raw}
	var ok []*allocation
	for _, a := range allocs {
		if a.verified {
			ok = append(ok, a)
		}
	}
	if len(ok) == 0 {
		a := allocs[0]
		step.Skipped = true
		step.Detail = fmt.Sprintf("not run: relayed address %s is not %s, %s", a.relayed.Addr(), a.serverIPs[0], a.url.names())
		step.Cause = fmt.Sprintf("clients would be told to send to %s, which may not be this server: public_ip is probably wrong, set it to %s "+
			"(the check sends nothing to an unverified address)", a.relayed.Addr(), a.serverIPs[0])
		return step
	}
	start := time.Now()
	defer func() { step.Took = time.Since(start) }()

	a, b := ok[0], (*allocation)(nil)
	if len(ok) > 1 {
		b = ok[1]
	} else {
		res := c.allocate(ctx, a.url)
		if res.alloc == nil || !res.alloc.verified {
			if res.alloc != nil {
				res.alloc.close()
			}
			step.Detail = "a second allocation for the round trip failed: " + res.step.Detail
			step.Cause = res.step.Cause
			return step
		}
		b = res.alloc
		defer b.close()
	}
	if a.url.raw != b.url.raw {
		step.Target = a.url.raw + " + " + b.url.transportName()
	}

	ctx, cancel := context.WithTimeout(ctx, c.opts.Timeout)
	defer cancel()
	// On timeout, close the sockets and transactions so nothing blocks;
	// the allocations are not used after this step.
	stop := context.AfterFunc(ctx, func() {
		for _, x := range []*allocation{a, b} {
			x.conn.Close()
			x.client.Close()
			x.relay.SetReadDeadline(time.Now())
		}
	})
	defer stop()

	aAddr := net.UDPAddrFromAddrPort(a.relayed)
	bAddr := net.UDPAddrFromAddrPort(b.relayed)
	for _, p := range []struct {
		x    *allocation
		peer *net.UDPAddr
	}{{b, aAddr}, {a, bAddr}} {
		if err := createPermission(p.x.client, p.peer); err != nil {
			step.Detail = fmt.Sprintf("CreatePermission for %s: %v", p.peer, err)
			var te *stun.TurnError
			switch {
			case ctx.Err() != nil:
				step.Detail = fmt.Sprintf("no answer to CreatePermission within %s", c.opts.Timeout)
				step.Cause = "the server stopped answering after the allocation: see its log"
			case errors.As(err, &te) && te.ErrorCodeAttr.Code == stun.CodeForbidden:
				step.Cause = "the peer policy refuses the server's own relayed addresses: relay-to-relay must be allowed (turn.peers, public_ip)"
			default:
				step.Cause = "the server refused a permission towards its own relayed address: see its log"
			}
			return step
		}
	}

	nonce := strings.ToLower(rand.Text()[:16])
	ping, pong := []byte("icebox-check ping "+nonce), []byte("icebox-check pong "+nonce)
	b.relay.SetReadDeadline(time.Time{})
	echoDone := make(chan struct{})
	go func() {
		defer close(echoDone)
		buf := make([]byte, 1500)
		for {
			n, from, err := b.relay.ReadFrom(buf)
			if err != nil {
				return
			}
			if bytes.Equal(buf[:n], ping) {
				b.relay.WriteTo(pong, from)
			}
		}
	}()
	defer func() {
		b.relay.SetReadDeadline(time.Now())
		<-echoDone
	}()

	buf := make([]byte, 1500)
	wait := 200 * time.Millisecond
	for ctx.Err() == nil {
		sent := time.Now()
		if _, err := a.relay.WriteTo(ping, bAddr); err != nil && ctx.Err() == nil {
			step.Detail = "sending through the relay: " + err.Error()
			step.Cause = "the TURN client could not send through its allocation: see the server's log"
			return step
		}
		next := sent.Add(wait)
		wait = min(2*wait, time.Second)
		if d, _ := ctx.Deadline(); d.Before(next) {
			next = d
		}
		a.relay.SetReadDeadline(next)
		for {
			n, from, err := a.relay.ReadFrom(buf)
			if err != nil {
				break // resend, or give up when ctx is done
			}
			if bytes.Equal(buf[:n], pong) {
				step.OK = true
				step.Detail = fmt.Sprintf("%s (%s) → %s (%s) and back in %s", a.relayed, a.url.transportName(),
					b.relayed, b.url.transportName(), fmtDuration(time.Since(sent)))
				c.log.Debug("doctor: relay round trip", "from", from, "rtt", time.Since(sent))
				return step
			}
		}
	}
	step.Detail = fmt.Sprintf("no packet came back within %s", c.opts.Timeout)
	step.Cause = "allocations work but relayed packets don't arrive: open the relay port range (turn.relay.ports, e.g. 49152-65535/udp) in the firewall, or public_ip is wrong"
	return step
}

// createPermission installs a permission, retrying once on a stale nonce
// (pion returns "try again" then).
func createPermission(c *turn.Client, peer net.Addr) error {
	var err error
	for range 3 {
		if err = c.CreatePermission(peer); err == nil || !strings.Contains(err.Error(), "try again") {
			return err
		}
	}
	return err
}

// allocateRefusals explains the Allocate error codes that need no more
// context than the code.
var allocateRefusals = map[stun.ErrorCode]string{
	stun.CodeForbidden:            "forbidden: the TURN server refuses this client (its address is blocked, or too many failed logins: wait and retry)",
	stun.CodeAllocMismatch:        "a previous allocation from this address is still alive: retry in a minute",
	stun.CodeAllocQuotaReached:    "allocation quota reached (turn.quotas.per_user, per_ip or total): raise it, or wait for old allocations to end",
	stun.CodeInsufficientCapacity: "the server has no free relay port: widen turn.relay.ports or raise turn.quotas.total",
	stun.CodeUnknownAttribute:     "the server did not understand Allocate: it is not a TURN server, or TURN is off on this port",
}
