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

func parseICEURL(raw string) (iceURL, error) {
	u := iceURL{raw: raw}
	scheme, rest, ok := strings.Cut(raw, ":")
	if !ok {
		return u, errors.New("no scheme: want stun:, stuns:, turn: or turns:")
	}
	u.scheme = strings.ToLower(scheme)
	switch u.scheme {
	case "stun", "turn":
		u.port = 3478
	case "stuns", "turns":
		u.port = 5349
	default:
		return u, fmt.Errorf("scheme %q: want stun:, stuns:, turn: or turns:", scheme)
	}
	rest, query, _ := strings.Cut(rest, "?")
	if strings.HasPrefix(rest, "//") {
		return u, errors.New(`ICE URLs have no "//" (RFC 7064): write stun:host:port`)
	}
	u.host = rest
	if h, p, err := net.SplitHostPort(rest); err == nil {
		n, err := strconv.Atoi(p)
		if err != nil || n <= 0 || n > 65535 {
			return u, fmt.Errorf("bad port %q", p)
		}
		u.host, u.port = h, n
	} else if strings.HasPrefix(rest, "[") && strings.HasSuffix(rest, "]") {
		u.host = rest[1 : len(rest)-1]
	} else if strings.Contains(rest, ":") {
		return u, fmt.Errorf("bad host:port %q", rest)
	}
	if u.host == "" {
		return u, errors.New("no host")
	}
	u.transport = "udp"
	if u.secure() {
		u.transport = "tcp"
	}
	if query != "" {
		q, _, _ := strings.Cut(query, "&")
		k, v, _ := strings.Cut(q, "=")
		if k != "transport" || (v != "udp" && v != "tcp") {
			return u, fmt.Errorf("query %q: the only parameter is transport=udp or transport=tcp", query)
		}
		if !u.isTURN() {
			return u, errors.New("stun: URLs take no transport parameter (RFC 7064)")
		}
		u.transport = v
	}
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
	// A connected socket, so that an ICMP "port unreachable" comes back
	// as ECONNREFUSED instead of a silent timeout.
	conn, err := net.DialUDP("udp4", nil, net.UDPAddrFromAddrPort(server))
	if err != nil {
		step.Detail, step.Cause = err.Error(), "cannot open a UDP socket towards the server"
		return step
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.SetReadDeadline(time.Unix(1, 0)) })
	defer stop()

	req := stun.MustBuild(stun.TransactionID, stun.BindingRequest, stun.Fingerprint)
	buf := make([]byte, 1500)
	rto := 250 * time.Millisecond
	for ctx.Err() == nil {
		if _, err := conn.Write(req.Raw); err != nil {
			step.Detail, step.Cause = err.Error(), stunUnreachable(u, err, c.opts.Timeout)
			return step
		}
		next := time.Now().Add(rto)
		rto = min(2*rto, 2*time.Second)
		if d, _ := ctx.Deadline(); d.Before(next) {
			next = d
		}
		conn.SetReadDeadline(next)
		for {
			n, err := conn.Read(buf)
			if err != nil {
				if isTimeout(err) && ctx.Err() == nil {
					break // retransmit
				}
				step.Detail = err.Error()
				if ctx.Err() != nil {
					step.Detail = fmt.Sprintf("no Binding answer within %s", c.opts.Timeout)
				}
				step.Cause = stunUnreachable(u, err, c.opts.Timeout)
				return step
			}
			res := &stun.Message{Raw: append([]byte(nil), buf[:n]...)}
			if res.Decode() != nil || res.TransactionID != req.TransactionID {
				continue // not our answer
			}
			if res.Type.Class == stun.ClassErrorResponse {
				var code stun.ErrorCodeAttribute
				code.GetFrom(res)
				step.Detail = strings.TrimSpace(fmt.Sprintf("Binding error %d %s", code.Code, code.Reason))
				step.Cause = "the server refused a plain Binding request: it is not icebox's STUN listener"
				return step
			}
			var xor stun.XORMappedAddress
			if err := xor.GetFrom(res); err != nil {
				var m stun.MappedAddress
				if err := m.GetFrom(res); err != nil {
					step.Detail = "Binding answer without a mapped address"
					step.Cause = "the server at this port does not speak STUN properly"
					return step
				}
				xor.IP, xor.Port = m.IP, m.Port
			}
			step.OK = true
			step.Detail = fmt.Sprintf("mapped address %s", net.JoinHostPort(xor.IP.String(), strconv.Itoa(xor.Port)))
			return step
		}
	}
	step.Detail = fmt.Sprintf("no Binding answer within %s", c.opts.Timeout)
	step.Cause = stunUnreachable(u, context.DeadlineExceeded, c.opts.Timeout)
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
