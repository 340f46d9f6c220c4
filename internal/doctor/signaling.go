package doctor

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"syscall"
	"time"

	"github.com/gorilla/websocket"

	"icebox/internal/credentials"
	"icebox/internal/strictjson"
)

// signalingURL turns what the operator typed into the WebSocket URL to
// dial, and the same URL without the token for display.
func signalingURL(raw, room, token string) (dial *url.URL, shown string, err error) {
	if !strings.Contains(raw, "://") {
		raw = "ws://" + raw
	}
	u, err := url.Parse(raw)
	if err != nil {
		return nil, "", fmt.Errorf("not a URL: %v", err)
	}
	switch strings.ToLower(u.Scheme) {
	case "ws", "http":
		u.Scheme = "ws"
	case "wss", "https":
		u.Scheme = "wss"
	default:
		return nil, "", fmt.Errorf("scheme %q: want ws://, wss://, http:// or https://", u.Scheme)
	}
	if u.Hostname() == "" {
		return nil, "", errors.New("no host in the URL")
	}
	if u.Path == "" || u.Path == "/" {
		u.Path = "/connect"
	}
	q := u.Query()
	if q.Get("room") == "" && q.Get("controllerId") == "" {
		q.Set("room", room)
	}
	if token != "" {
		q.Set("token", token)
	}
	u.RawQuery = q.Encode()
	show := *u
	if q.Has("token") {
		sq := show.Query()
		sq.Set("token", "REDACTED")
		show.RawQuery = sq.Encode()
	}
	return u, show.String(), nil
}

// connect opens the signaling WebSocket.
func (c *checker) connect(ctx context.Context, u *url.URL, shown string) (*websocket.Conn, Step) {
	step := Step{Name: StepConnect, Target: shown}
	ctx, cancel := context.WithTimeout(ctx, c.opts.Timeout)
	defer cancel()
	d := websocket.Dialer{
		Proxy:            http.ProxyFromEnvironment,
		HandshakeTimeout: c.opts.Timeout,
		TLSClientConfig:  &tls.Config{InsecureSkipVerify: c.opts.Insecure},
	}
	hdr := http.Header{}
	if c.opts.Origin != "" {
		hdr.Set("Origin", c.opts.Origin)
	}
	start := time.Now()
	ws, resp, err := d.DialContext(ctx, u.String(), hdr)
	step.Took = time.Since(start)
	if err != nil {
		step.Detail, step.Cause = diagnoseDial(err, resp, u, c.opts.Timeout)
		c.log.Debug("doctor: signaling connect failed", "url", shown, "err", err)
		return nil, step
	}
	step.OK = true
	step.Detail = "WebSocket open"
	if cs, ok := ws.NetConn().(*tls.Conn); ok {
		st := cs.ConnectionState()
		step.Detail += ", " + tls.VersionName(st.Version)
		if len(st.PeerCertificates) > 0 {
			leaf := st.PeerCertificates[0]
			left := time.Until(leaf.NotAfter)
			step.Detail += fmt.Sprintf(", certificate valid until %s", leaf.NotAfter.UTC().Format(time.DateOnly))
			if left < 14*24*time.Hour {
				step.Cause = fmt.Sprintf("the TLS certificate expires in %s: %s", left.Round(time.Hour), renewCertificate)
			}
		}
	}
	return ws, step
}

// diagnoseDial explains a failed WebSocket handshake.
func diagnoseDial(err error, resp *http.Response, u *url.URL, timeout time.Duration) (detail, cause string) {
	hostport := u.Host
	if u.Port() == "" {
		port := "80"
		if u.Scheme == "wss" {
			port = "443"
		}
		hostport = net.JoinHostPort(u.Hostname(), port)
	}
	if resp != nil {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		resp.Body.Close()
		detail = "HTTP " + resp.Status
		if b := oneLine(string(body)); b != "" {
			detail += ": " + b
		}
		switch code := resp.StatusCode; {
		case code == http.StatusBadRequest && (bytes.Contains(body, []byte("TLS")) || bytes.Contains(body, []byte("HTTPS"))):
			cause = "this port speaks TLS: use wss://"
		case code == http.StatusBadRequest:
			cause = "the server refused the WebSocket upgrade: a reverse proxy in front of icebox may drop the Upgrade and Connection headers"
		case code == http.StatusUnauthorized || code == http.StatusForbidden:
			cause = "refused before the upgrade: a proxy's access rule, a missing or bad join token (--token), " +
				"or an Origin the server does not accept (--origin, signal.allowed_origins)"
		case code == http.StatusNotFound:
			cause = fmt.Sprintf("nothing at %s: icebox serves signaling at /connect; check the path and what a reverse proxy forwards", u.Path)
		case code == http.StatusTooManyRequests || code == http.StatusServiceUnavailable:
			cause = "the server is busy, rate-limiting or shutting down: try again, or raise its connection limits"
		case code == http.StatusBadGateway || code == http.StatusGatewayTimeout:
			cause = "a reverse proxy answered but cannot reach icebox: check that icebox runs and the proxy's upstream address"
		case code >= 300 && code < 400:
			cause = "redirected to " + resp.Header.Get("Location") + ": use the final URL (WebSocket clients do not follow redirects)"
		default:
			cause = "an HTTP server answered without upgrading to WebSocket: this is not icebox's signaling endpoint, " +
				"or a proxy does not pass WebSocket upgrades"
		}
		return detail, cause
	}

	detail = err.Error()
	var dnsErr *net.DNSError
	var recErr tls.RecordHeaderError
	switch {
	case errors.As(err, &dnsErr):
		cause = fmt.Sprintf("%s does not resolve: check its DNS records", u.Hostname())
	case errors.Is(err, syscall.ECONNREFUSED):
		cause = fmt.Sprintf("connection refused: nothing listens at %s (icebox not running, another port, or signal.listen on another address)", hostport)
	case errors.As(err, &recErr):
		cause = "the server does not speak TLS on this port: use ws://, or turn on signal.tls"
	case tlsCause(err, u.Hostname()) != "":
		cause = tlsCause(err, u.Hostname())
	case errors.Is(err, syscall.ECONNRESET) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF):
		cause = "the connection was cut during the handshake: a firewall or proxy, or a TLS/plain-text mismatch (ws:// vs wss://)"
	case isTimeout(err):
		detail = fmt.Sprintf("no answer within %s", timeout)
		cause = fmt.Sprintf("nothing answered at %s: a firewall drops tcp/%s, or the host is down", hostport, portOf(hostport))
	default:
		cause = "the WebSocket handshake failed: check the URL and that icebox runs"
	}
	return detail, cause
}

func portOf(hostport string) string {
	_, p, _ := net.SplitHostPort(hostport)
	return p
}

func isTimeout(err error) bool {
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, syscall.ETIMEDOUT) {
		return true
	}
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// iceServer is one WsIceServers entry, with exactly the keys the app's
// strict decoder knows.
type iceServer struct {
	URLs       []string `json:"urls"`
	Username   string   `json:"username,omitempty"`
	Credential string   `json:"credential,omitempty"`
}

type frame struct {
	ID   string `json:"id"`
	Data string `json:"data"`
}

// init sends WsInit and waits for WsIceServers.
func (c *checker) init(ctx context.Context, ws *websocket.Conn, shown string) (_ []iceServer, step Step) {
	step = Step{Name: StepInit, Target: shown}
	start := time.Now()
	defer func() { step.Took = time.Since(start) }()
	deadline := time.Now().Add(c.opts.Timeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	stop := context.AfterFunc(ctx, func() { ws.NetConn().SetDeadline(time.Unix(1, 0)) })
	defer stop()
	ws.SetWriteDeadline(deadline)
	if err := ws.WriteMessage(websocket.TextMessage, []byte(`{"id":"WsInit","data":""}`)); err != nil {
		step.Detail = "sending WsInit: " + err.Error()
		step.Cause = "the server closed the connection right after the upgrade: see its log"
		return nil, step
	}
	ws.SetReadDeadline(deadline)
	mt, msg, err := ws.ReadMessage()
	if err != nil {
		step.Detail, step.Cause = diagnoseRead(err, c.opts.Timeout)
		return nil, step
	}
	if mt != websocket.TextMessage {
		step.Detail = "the answer to WsInit is a binary message"
		step.Cause = "the app expects text frames: this is not icebox, or a proxy rewrites frames"
		return nil, step
	}
	var f frame
	if err := strictjson.Decode(msg, &f); err != nil {
		step.Detail = fmt.Sprintf("bad frame %.120q: %v", msg, err)
		step.Cause = `frames must be exactly {"id":kind,"data":string} (docs/protocol.md); the app's strict decoder rejects anything else`
		return nil, step
	}
	switch f.ID {
	case "WsIceServers":
	case "WsError":
		step.Detail, step.Cause = diagnoseWsError(f.Data)
		return nil, step
	default:
		step.Detail = fmt.Sprintf("the answer to WsInit is %q, not WsIceServers", f.ID)
		step.Cause = "the app waits for WsIceServers before it calls: this server does not speak icebox's protocol (docs/protocol.md)"
		return nil, step
	}
	var data struct {
		ICEServers []iceServer `json:"iceServers"`
	}
	if err := strictjson.Decode([]byte(f.Data), &data); err != nil {
		step.Detail = fmt.Sprintf("bad WsIceServers data %.160q: %v", f.Data, err)
		step.Cause = `the app's strict decoder rejects it: want {"iceServers":[{"urls":[...],"username":...,"credential":...}]}`
		return nil, step
	}
	if len(data.ICEServers) == 0 {
		step.Detail = "WsIceServers lists no ICE servers"
		step.Cause = "icebox has no STUN or TURN URL to advertise: set signal.ice_host (or public_ip) and turn on STUN/TURN"
		return nil, step
	}
	step.OK = true
	var nstun, nturn int
	var expiry time.Time
	for _, s := range data.ICEServers {
		for _, u := range s.URLs {
			if strings.HasPrefix(strings.ToLower(u), "turn") {
				nturn++
			} else {
				nstun++
			}
		}
		if t, _, ok := credentials.ParseUsername(s.Username); ok && (expiry.IsZero() || t.Before(expiry)) {
			expiry = t
		}
	}
	step.Detail = fmt.Sprintf("WsIceServers: %d STUN and %d TURN URLs", nstun, nturn)
	if !expiry.IsZero() {
		left := time.Until(expiry)
		step.Detail += fmt.Sprintf(", TURN credentials valid for %s", left.Round(time.Second))
		if left < time.Minute {
			step.Cause = fmt.Sprintf("the TURN username expires at %s, %s from now by this machine's clock: "+
				"the clocks differ or turn.credential_ttl is too short", expiry.UTC().Format(time.RFC3339), left.Round(time.Second))
		}
	}
	return data.ICEServers, step
}

// diagnoseRead explains why no answer to WsInit arrived.
func diagnoseRead(err error, timeout time.Duration) (detail, cause string) {
	var ce *websocket.CloseError
	switch {
	case errors.As(err, &ce):
		detail = fmt.Sprintf("the server closed the WebSocket: %d %s", ce.Code, ce.Text)
		switch ce.Code {
		case websocket.ClosePolicyViolation:
			cause = "refused by policy: an Origin not in signal.allowed_origins (--origin), or a missing or bad join token (--token)"
		case websocket.CloseTryAgainLater:
			cause = "the server is at its connection limit or shutting down: try again, or raise signal.max_conns"
		case websocket.CloseGoingAway:
			cause = "the server is shutting down"
		case websocket.CloseInternalServerErr:
			cause = "icebox failed to build its answer: see its log"
		default:
			cause = "the server ended the session instead of answering WsInit: see its log"
		}
	case isTimeout(err):
		detail = fmt.Sprintf("no WsIceServers within %s", timeout)
		cause = "the WebSocket opened but nothing answered WsInit: this endpoint is not icebox, or it is overloaded"
	default:
		detail = "reading the answer to WsInit: " + err.Error()
		cause = "the connection broke before WsIceServers arrived: a proxy with a short idle timeout, or the server crashed"
	}
	return detail, cause
}

// diagnoseWsError explains a WsError answer to WsInit. The codes are
// icebox's (signal/wserror.go); they never change meaning.
func diagnoseWsError(data string) (detail, cause string) {
	var e struct {
		Code    int    `json:"code"`
		Message string `json:"message"`
	}
	if err := json.Unmarshal([]byte(data), &e); err != nil {
		return fmt.Sprintf("WsError with bad data %.120q", data), "the server refused WsInit: see its log"
	}
	detail = fmt.Sprintf("WsError %d: %s", e.Code, e.Message)
	switch e.Code {
	case 4005:
		cause = "the pairing is full: pass another --room"
	case 4006:
		cause = "a join token is required (signal.require_token): pass --token with a token minted for --room"
	case 4007:
		cause = "the Origin is not in signal.allowed_origins: add your web app's origin, or pass the one it uses with --origin"
	case 4008:
		cause = "the server saw no WsInit in time: a proxy delays or drops frames"
	case 4012:
		cause = "the server is at max_conns or max_conns_per_ip, or shutting down: try again later, or raise the limits"
	case 4014:
		cause = "icebox could not build the ICE server list: see its log (TURN secret, ice_host)"
	default:
		cause = "the server refused WsInit: see the message and docs/protocol.md"
	}
	return detail, cause
}

// closeWS ends the signaling session politely; the check needs nothing
// more from it once it has the ICE servers.
func closeWS(ws *websocket.Conn) {
	ws.WriteControl(websocket.CloseMessage,
		websocket.FormatCloseMessage(websocket.CloseNormalClosure, "icebox check done"),
		time.Now().Add(time.Second))
	ws.Close()
}
