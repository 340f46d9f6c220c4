package doctor

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/pion/stun/v3"

	"icebox/internal/stunclient"
)

// iceURL is one stun:, stuns:, turn: or turns: URL (RFC 7064, RFC 7065).
type iceURL struct {
	raw       string
	scheme    string // stun, stuns, turn, turns
	host      string // without brackets
	port      int
	transport string // udp or tcp

	username, credential string // from the WsIceServers entry
}

func (u iceURL) isTURN() bool     { return u.scheme == "turn" || u.scheme == "turns" }
func (u iceURL) secure() bool     { return u.scheme == "stuns" || u.scheme == "turns" }
func (u iceURL) hostport() string { return net.JoinHostPort(u.host, strconv.Itoa(u.port)) }

// names says where the URL's address comes from, after that address.
func (u iceURL) names() string {
	if _, err := netip.ParseAddr(u.host); err == nil {
		return "the address in the TURN URL"
	}
	return "what " + u.host + " resolves to"
}

// transportName says how the client reaches the server: UDP, TCP or TLS.
func (u iceURL) transportName() string {
	switch {
	case u.scheme == "stuns":
		return "STUN over TLS"
	case u.secure() && u.transport == "tcp":
		return "TLS"
	case u.secure():
		return "DTLS"
	}
	return strings.ToUpper(u.transport)
}

// parseICEURL reads a URL from WsIceServers with pion/stun's parser
// (RFC 7064, RFC 7065), after the checks whose message says more than
// pion's: "//" after the scheme, and the port's range.
func parseICEURL(raw string) (iceURL, error) {
	u := iceURL{raw: raw}
	if _, rest, _ := strings.Cut(raw, ":"); strings.HasPrefix(rest, "//") {
		return u, errors.New(`ICE URLs have no "//" (RFC 7064): write stun:host:port`)
	}
	p, err := stun.ParseURI(raw)
	if err != nil {
		return u, fmt.Errorf("want stun:, stuns:, turn: or turns:host[:port][?transport=udp|tcp]: %w", err)
	}
	if p.Port <= 0 || p.Port > 65535 {
		return u, fmt.Errorf("bad port %d", p.Port)
	}
	u.scheme, u.host, u.port, u.transport = p.Scheme.String(), p.Host, p.Port, p.Proto.String()
	return u, nil
}

// resolve4 returns the IPv4 addresses of host: icebox relays over IPv4,
// and pion's TURN client dials udp4.
func resolve4(ctx context.Context, host string) ([]netip.Addr, error) {
	if a, err := netip.ParseAddr(host); err == nil {
		if !a.Unmap().Is4() {
			return nil, fmt.Errorf("%s is not an IPv4 address", host)
		}
		return []netip.Addr{a.Unmap()}, nil
	}
	addrs, err := net.DefaultResolver.LookupNetIP(ctx, "ip4", host)
	if err != nil {
		return nil, err
	}
	for i, a := range addrs {
		addrs[i] = a.Unmap()
	}
	return addrs, nil
}

// begin starts the step for u: it bounds it by the step timeout, times
// it, and resolves u's host. When it returns ok=false the step is done:
// skipped (a transport the check does not speak) or failed (no address).
func (c *checker) begin(ctx context.Context, u iceURL, step *Step) (_ context.Context, ips []netip.Addr, done func(), ok bool) {
	if t := u.transportName(); t == "STUN over TLS" || t == "DTLS" {
		step.OK, step.Skipped = true, true
		step.Cause = u.scheme + ": URLs (over " + strings.TrimPrefix(t, "STUN over ") + ") are not checked"
		return ctx, nil, func() {}, false
	}
	start := time.Now()
	ctx, cancel := context.WithTimeout(ctx, c.opts.Timeout)
	done = func() {
		cancel()
		step.Took = time.Since(start)
	}
	ips, err := resolve4(ctx, u.host)
	if err != nil {
		step.Detail = err.Error()
		switch {
		case isTimeout(err):
			step.Cause = fmt.Sprintf("resolving %s timed out: check this machine's DNS", u.host)
		case strings.Contains(err.Error(), "IPv4"):
			step.Cause = "icebox serves STUN and TURN over IPv4: advertise an IPv4 address or a name with an A record"
		default:
			step.Cause = fmt.Sprintf("%s has no IPv4 address (A record): fix DNS, or set signal.ice_host to a name clients can resolve", u.host)
		}
		return ctx, nil, done, false
	}
	return ctx, ips, done, true
}

// stunBind sends a Binding request over UDP and reports the mapped address.
func (c *checker) stunBind(ctx context.Context, u iceURL) (step Step) {
	step = Step{Name: StepSTUN, Target: u.raw}
	ctx, ips, done, ok := c.begin(ctx, u, &step)
	defer done()
	if !ok {
		return step
	}
	server := netip.AddrPortFrom(ips[0], uint16(u.port))
	mapped, err := stunclient.MappedAddress(ctx, server.String())
	var refused *stunclient.RefusedError
	switch {
	case err == nil:
		step.OK = true
		step.Detail = "mapped address " + mapped.String()
	case errors.As(err, &refused):
		step.Detail = strings.TrimSpace(refused.Error())
		step.Cause = "the server refused a plain Binding request: it is not icebox's STUN listener"
	case errors.Is(err, stunclient.ErrNoMappedAddress):
		step.Detail = err.Error()
		step.Cause = "the server at this port does not speak STUN properly"
	default:
		step.Detail = err.Error()
		if isTimeout(err) {
			step.Detail = fmt.Sprintf("no Binding answer within %s", c.opts.Timeout)
		}
		step.Cause = stunUnreachable(u, err, c.opts.Timeout)
	}
	return step
}

func stunUnreachable(u iceURL, err error, timeout time.Duration) string {
	if errors.Is(err, syscall.ECONNREFUSED) {
		return fmt.Sprintf("udp/%d on %s answers \"port unreachable\": nothing listens there (icebox not running, or stun.listen has another port)", u.port, u.host)
	}
	if isTimeout(err) {
		return fmt.Sprintf("STUN over UDP unreachable: no answer from %s within %s; a firewall blocks udp/%d, or icebox does not listen there", u.hostport(), timeout, u.port)
	}
	return "sending to the STUN server failed: check the network path"
}
