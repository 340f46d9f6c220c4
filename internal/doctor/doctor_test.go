package doctor

import (
	"crypto/x509"
	"net"
	"net/netip"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

const secret = "s3cret"

func mustStep(t *testing.T, r Report, name string) Step {
	t.Helper()
	steps := r.find(name)
	if len(steps) != 1 {
		t.Fatalf("want one %q step, got %d: %+v", name, len(steps), r.Steps)
	}
	return steps[0]
}

func wantFail(t *testing.T, s Step, causeParts ...string) {
	t.Helper()
	if s.OK {
		t.Errorf("%s %s: OK, want a failure", s.Name, s.Target)
	}
	for _, p := range causeParts {
		if !strings.Contains(s.Cause, p) {
			t.Errorf("%s %s: cause %q lacks %q (detail %q)", s.Name, s.Target, s.Cause, p, s.Detail)
		}
	}
}

func TestAllGood(t *testing.T) {
	ts := startTURN(t, turnConfig{secret: secret, relayIP: "127.0.0.1"})
	sig := startSignal(t, iceAnswer(t, secret,
		urls("stun:127.0.0.1:%d", ts.udpPort),
		urls("turn:127.0.0.1:%d?transport=udp turn:127.0.0.1:%d?transport=tcp", ts.udpPort, ts.tcpPort)))

	r := runCheck(t, sig.url, testOpts(t, generous))
	if !r.OK() {
		t.Fatalf("report not OK: %+v", failedSteps(r))
	}
	names := []string{StepConnect, StepInit, StepSTUN, StepTURN, StepTURN, StepRoundTrip}
	if len(r.Steps) != len(names) {
		t.Fatalf("got %d steps, want %d: %+v", len(r.Steps), len(names), r.Steps)
	}
	for i, s := range r.Steps {
		if s.Name != names[i] || s.Status() != "ok" {
			t.Errorf("step %d: %s %s (%s: %s), want %s ok", i, s.Name, s.Status(), s.Detail, s.Cause, names[i])
		}
	}
	if d := r.Steps[2].Detail; !strings.Contains(d, "mapped address 127.0.0.1:") {
		t.Errorf("STUN detail %q lacks the mapped address", d)
	}
	if d := r.Steps[3].Detail; !strings.Contains(d, "relayed address 127.0.0.1:") || !strings.Contains(d, "UDP") {
		t.Errorf("TURN UDP detail %q", d)
	}
	if d := r.Steps[4].Detail; !strings.Contains(d, "over TCP") {
		t.Errorf("TURN TCP detail %q", d)
	}
	if d := r.Steps[5].Detail; !strings.Contains(d, "and back") {
		t.Errorf("round trip detail %q", d)
	}
	if room := <-sig.rooms; !strings.HasPrefix(room, "icebox-check-") || len(room) < 20 {
		t.Errorf("room %q: want a random icebox-check-…", room)
	}
	for _, p := range ts.permittedPeers() {
		if !p.IsLoopback() {
			t.Errorf("a permission for %v left loopback", p)
		}
	}

	var b strings.Builder
	r.WriteTable(&b)
	out := b.String()
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if len(lines) != 1+len(r.Steps)+1 {
		t.Fatalf("table has %d lines, want header, %d steps and a summary:\n%s", len(lines), len(r.Steps), out)
	}
	col := strings.Index(lines[0], "STEP")
	for i, l := range lines[1 : len(lines)-1] {
		if !strings.HasPrefix(l, "ok ") || strings.Index(l, r.Steps[i].Name) != col {
			t.Errorf("row not aligned under the header: %q", l)
		}
	}
	if want := "PASS: 6 ok, 0 warnings, 0 skipped, 0 failed"; lines[len(lines)-1] != want {
		t.Errorf("summary %q, want %q", lines[len(lines)-1], want)
	}
}

func TestTLS(t *testing.T) {
	// The TURN server takes the signaling server's certificate, so it
	// starts second and hands its port over.
	var tlsPort atomic.Int64
	sig := startSignalServer(t, true, func() (string, any) {
		return iceAnswer(t, secret, nil, urls("turns:127.0.0.1:%d?transport=tcp", int(tlsPort.Load())))()
	})
	tlsPort.Store(int64(startTURN(t, turnConfig{secret: secret, relayIP: "127.0.0.1", tls: sig.tls}).tlsPort))

	// httptest's certificate is self-signed: trusted only with Insecure.
	r := runCheck(t, sig.url, testOpts(t, generous))
	wantFail(t, mustStep(t, r, StepConnect), "not trusted", "--insecure")
	if !strings.HasPrefix(r.Steps[0].Target, "wss://127.0.0.1:") {
		t.Errorf("target %q", r.Steps[0].Target)
	}

	opts := testOpts(t, generous)
	opts.Insecure = true
	r = runCheck(t, sig.url, opts)
	if !r.OK() {
		t.Fatalf("report not OK over TLS: %+v", failedSteps(r))
	}
	if s := mustStep(t, r, StepConnect); !strings.Contains(s.Detail, "TLS 1.3") {
		t.Errorf("connect detail %q lacks the TLS version", s.Detail)
	}
	if s := mustStep(t, r, StepTURN); !strings.Contains(s.Detail, "over TLS") {
		t.Errorf("TURN detail %q", s.Detail)
	}
	// One TURN URL: the round trip makes its second allocation itself.
	if s := mustStep(t, r, StepRoundTrip); !strings.Contains(s.Detail, "(TLS) and back") {
		t.Errorf("round trip detail %q", s.Detail)
	}
}

func TestTURNDisabled(t *testing.T) {
	port := startSTUNOnly(t)
	sig := startSignal(t, iceAnswer(t, secret,
		urls("stun:127.0.0.1:%d", port), urls("turn:127.0.0.1:%d?transport=udp", port)))

	const timeout = 3 * time.Second
	r := runCheck(t, sig.url, testOpts(t, timeout))
	if r.OK() {
		t.Fatal("report OK with TURN off")
	}
	if s := mustStep(t, r, StepSTUN); !s.OK {
		t.Errorf("STUN failed: %s: %s", s.Detail, s.Cause)
	}
	turnStep := mustStep(t, r, StepTURN)
	wantFail(t, turnStep, "TURN over UDP unreachable", "turn.enabled is false")
	if want := "no answer to Allocate within 3s"; turnStep.Detail != want {
		t.Errorf("TURN detail %q, want %q", turnStep.Detail, want)
	}
	// A step that reports the timeout waited it out: never less (a lower
	// bound, which load cannot break; how much more is load's business).
	if turnStep.Took < timeout {
		t.Errorf("TURN step reports no answer within %v after %v", timeout, turnStep.Took)
	}
	if len(r.find(StepRoundTrip)) != 0 {
		t.Error("a round trip step without allocations")
	}

	var b strings.Builder
	r.WriteTable(&b)
	// The TIME column shows the step's own duration.
	took := regexp.QuoteMeta(fmtDuration(turnStep.Took))
	for _, want := range []string{`(?m)^FAIL +TURN allocate +turn:127\.0\.0\.1:\d+\?transport=udp +` + took + ` +no answer to Allocate within 3s$`,
		`(?m)^ +cause: TURN over UDP unreachable: .* turn.enabled is false$`, `(?m)^FAIL: 3 ok, 0 warnings, 0 skipped, 1 failed$`} {
		if !regexp.MustCompile(want).MatchString(b.String()) {
			t.Errorf("table lacks %q:\n%s", want, b.String())
		}
	}
}

func TestTURNNotOffered(t *testing.T) {
	port := startSTUNOnly(t)
	sig := startSignal(t, iceAnswer(t, secret, urls("stun:127.0.0.1:%d", port), nil))
	r := runCheck(t, sig.url, testOpts(t, generous))
	wantFail(t, mustStep(t, r, StepTURN), "turn.enabled is false")
	if r.OK() {
		t.Fatal("report OK without TURN")
	}
}

func TestTURNPortUnreachable(t *testing.T) {
	port := freeUDPPort(t)
	sig := startSignal(t, iceAnswer(t, secret,
		urls("stun:127.0.0.1:%d", port), urls("turn:127.0.0.1:%d?transport=udp", port)))
	// A long timeout: ICMP "port unreachable" must end the steps at once.
	start := time.Now()
	r := runCheck(t, sig.url, testOpts(t, 20*time.Second))
	if took := time.Since(start); took > 10*time.Second {
		t.Errorf("took %s: port unreachable should not wait for the timeout", took)
	}
	wantFail(t, mustStep(t, r, StepSTUN), "port unreachable", "nothing listens")
	wantFail(t, mustStep(t, r, StepTURN), "port unreachable", "nothing listens")
}

func TestWrongPublicIP(t *testing.T) {
	// The server announces 192.0.2.1 (TEST-NET-1) while its relays listen
	// on 127.0.0.1: what a wrong public_ip does. Nothing may go to it.
	ts := startTURN(t, turnConfig{secret: secret, relayIP: "192.0.2.1"})
	sig := startSignal(t, iceAnswer(t, secret,
		urls("stun:127.0.0.1:%d", ts.udpPort),
		urls("turn:127.0.0.1:%d?transport=udp turn:127.0.0.1:%d?transport=tcp", ts.udpPort, ts.tcpPort)))

	r := runCheck(t, sig.url, testOpts(t, 5*time.Second))
	if r.OK() {
		t.Fatal("report OK with a wrong public IP")
	}
	for _, s := range r.find(StepTURN) {
		if s.Status() != "WARN" || !strings.Contains(s.Cause, "192.0.2.1") || !strings.Contains(s.Cause, "public_ip") {
			t.Errorf("%s: %s %q, want a public_ip warning naming 192.0.2.1", s.Target, s.Status(), s.Cause)
		}
	}
	rt := mustStep(t, r, StepRoundTrip)
	wantFail(t, rt, "public_ip is probably wrong", "set it to 127.0.0.1")
	if !rt.Skipped {
		t.Error("round trip ran towards an unverified relayed address")
	}
	if peers := ts.permittedPeers(); len(peers) != 0 {
		t.Errorf("permissions requested for %v: the check must not relay towards an unverified address", peers)
	}
}

func TestRelayedPacketsDropped(t *testing.T) {
	ts := startTURN(t, turnConfig{secret: secret, relayIP: "127.0.0.1", dropRelayed: true})
	sig := startSignal(t, iceAnswer(t, secret, nil,
		urls("turn:127.0.0.1:%d?transport=udp", ts.udpPort)))
	r := runCheck(t, sig.url, testOpts(t, 3*time.Second))
	if s := mustStep(t, r, StepTURN); !s.OK {
		t.Fatalf("allocation failed: %s: %s", s.Detail, s.Cause)
	}
	wantFail(t, mustStep(t, r, StepRoundTrip), "relayed packets don't arrive", "relay port range", "public_ip")
}

func TestWrongSecret(t *testing.T) {
	ts := startTURN(t, turnConfig{secret: secret, relayIP: "127.0.0.1"})
	sig := startSignal(t, iceAnswer(t, "another secret", nil,
		urls("turn:127.0.0.1:%d?transport=udp turn:127.0.0.1:%d?transport=tcp", ts.udpPort, ts.tcpPort)))
	r := runCheck(t, sig.url, testOpts(t, generous))
	steps := r.find(StepTURN)
	if len(steps) != 2 {
		t.Fatalf("got %d TURN steps", len(steps))
	}
	for _, s := range steps {
		wantFail(t, s, "credentials rejected", "TURN secret differs", "clock skew")
		// This test's plain pion server answers bad credentials with 400
		// after its 401 challenge (icebox with 401).
		if !strings.Contains(s.Detail, "Allocate error 400") {
			t.Errorf("detail %q lacks the 400", s.Detail)
		}
	}
	if r.OK() {
		t.Fatal("report OK with a wrong secret")
	}
}

func TestSignalingNotListening(t *testing.T) {
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	r := runCheck(t, "ws://"+addr, testOpts(t, generous))
	if len(r.Steps) != 1 {
		t.Fatalf("want only the connect step, got %+v", r.Steps)
	}
	s := mustStep(t, r, StepConnect)
	wantFail(t, s, "connection refused", "nothing listens at "+addr)
	if !strings.HasPrefix(s.Target, "ws://"+addr+"/connect?room=icebox-check-") {
		t.Errorf("target %q: want the default path and a random room", s.Target)
	}
}

func TestSignalingWrongPath(t *testing.T) {
	sig := startSignal(t, iceAnswer(t, secret, nil, nil))
	r := runCheck(t, strings.TrimSuffix(sig.url, "/connect")+"/signal", testOpts(t, generous))
	s := mustStep(t, r, StepConnect)
	wantFail(t, s, "/connect")
	if !strings.Contains(s.Detail, "404") {
		t.Errorf("detail %q lacks the 404", s.Detail)
	}
}

func TestWsError(t *testing.T) {
	sig := startSignal(t, func() (string, any) {
		return "WsError", map[string]any{"code": 4006, "message": "join token missing, invalid, expired or for another pairing"}
	})
	opts := testOpts(t, generous)
	opts.Token = "tok-do-not-print"
	opts.Room = "lab"
	r := runCheck(t, sig.url, opts)
	s := mustStep(t, r, StepInit)
	wantFail(t, s, "join token", "--token")
	if !strings.Contains(s.Detail, "WsError 4006: join token missing") {
		t.Errorf("detail %q does not show the code and message", s.Detail)
	}
	var b strings.Builder
	r.WriteTable(&b)
	if strings.Contains(b.String(), "tok-do-not-print") {
		t.Errorf("the table shows the token:\n%s", b.String())
	}
	if !strings.Contains(b.String(), "token=REDACTED") || <-sig.rooms != "lab" {
		t.Errorf("want the token redacted and the given room used:\n%s", b.String())
	}
}

func TestStrictFrames(t *testing.T) {
	sig := startSignal(t, func() (string, any) {
		return "WsIceServers", map[string]any{"iceServers": []map[string]any{{"urls": []string{"stun:127.0.0.1:3478"}, "extra": 1}}}
	})
	r := runCheck(t, sig.url, testOpts(t, generous))
	wantFail(t, mustStep(t, r, StepInit), "strict decoder")
}

func TestParseICEURL(t *testing.T) {
	for _, tc := range []struct {
		in, hostport, transport string
		ok                      bool
	}{
		{"stun:example.com", "example.com:3478", "udp", true},
		{"stun:1.2.3.4:19302", "1.2.3.4:19302", "udp", true},
		{"turn:h:3478?transport=tcp", "h:3478", "tcp", true},
		{"turn:h", "h:3478", "udp", true},
		{"turns:h", "h:5349", "tcp", true},
		{"turns:h:443?transport=tcp", "h:443", "tcp", true},
		{"TURN:[2001:db8::1]:3478", "[2001:db8::1]:3478", "udp", true},
		{"stun:[::1]", "[::1]:3478", "udp", true},
		{"stun://h:3478", "", "", false},
		{"stun:h?transport=tcp", "", "", false},
		{"turn:h:99999", "", "", false},
		{"turn:h?transport=sctp", "", "", false},
		{"http://h", "", "", false},
		{"turn:", "", "", false},
	} {
		u, err := parseICEURL(tc.in)
		if (err == nil) != tc.ok {
			t.Errorf("%q: err %v, want ok=%v", tc.in, err, tc.ok)
			continue
		}
		if tc.ok && (u.hostport() != tc.hostport || u.transport != tc.transport) {
			t.Errorf("%q: %s %s, want %s %s", tc.in, u.hostport(), u.transport, tc.hostport, tc.transport)
		}
	}
}

func TestSkippedTransports(t *testing.T) {
	c := &checker{opts: Options{Timeout: time.Second}}
	for in, want := range map[string]string{
		"stuns:h":                   "stuns: URLs (over TLS) are not checked",
		"turns:h:443?transport=udp": "turns: URLs (over DTLS) are not checked",
	} {
		u, err := parseICEURL(in)
		if err != nil {
			t.Fatal(err)
		}
		var s Step
		if u.isTURN() {
			s = c.allocate(t.Context(), u).step
		} else {
			s = c.stunBind(t.Context(), u)
		}
		if s.Status() != "skip" || s.Cause != want {
			t.Errorf("%s: %s %q, want skip %q", in, s.Status(), s.Cause, want)
		}
	}
}

func TestSignalingURL(t *testing.T) {
	for in, want := range map[string]string{
		"example.com":                    "ws://example.com/connect?room=r",
		"https://example.com":            "wss://example.com/connect?room=r",
		"wss://example.com:8443/connect": "wss://example.com:8443/connect?room=r",
		"ws://h/x?controllerId=tv":       "ws://h/x?controllerId=tv",
	} {
		u, _, err := signalingURL(in, "r", "")
		if err != nil || u.String() != want {
			t.Errorf("%q: %v %v, want %s", in, u, err, want)
		}
	}
	if _, _, err := signalingURL("ftp://h", "r", ""); err == nil {
		t.Error("ftp:// accepted")
	}
}

func TestRelayedCause(t *testing.T) {
	// Public addresses, not documentation ranges: those are not public.
	u, _ := parseICEURL("turn:turn.example.com:3478?transport=udp")
	pub := []netip.Addr{netip.MustParseAddr("1.2.3.7")}
	fail, cause := relayedCause(u, netip.MustParseAddr("10.0.0.5"), pub)
	if !fail || !strings.Contains(cause, "TURN UDP allocated but relayed address 10.0.0.5 is private: set public_ip") {
		t.Errorf("private relay behind a public name: fail=%v %q", fail, cause)
	}
	fail, cause = relayedCause(u, netip.MustParseAddr("1.2.3.9"), pub)
	if fail || !strings.Contains(cause, "1.2.3.7, what turn.example.com resolves to: if clients cannot reach 1.2.3.9, public_ip is wrong (set it to 1.2.3.7?)") {
		t.Errorf("other public relay: fail=%v %q", fail, cause)
	}
	// A LAN deployment: private name, private relay elsewhere: a warning.
	fail, _ = relayedCause(u, netip.MustParseAddr("10.0.0.5"), []netip.Addr{netip.MustParseAddr("192.168.1.2")})
	if fail {
		t.Error("private relay behind a private name failed")
	}
}

func TestReportOK(t *testing.T) {
	if (Report{}).OK() {
		t.Error("an empty report is OK")
	}
	r := Report{Steps: []Step{{Name: "a", OK: true}, {Name: "b", OK: true, Cause: "hmm"}, {Name: "c", OK: true, Skipped: true, Cause: "n/a"}}}
	if !r.OK() {
		t.Error("warnings and skips failed the report")
	}
	got := []string{}
	for _, s := range r.Steps {
		got = append(got, s.Status())
	}
	if strings.Join(got, ",") != "ok,WARN,skip" {
		t.Errorf("statuses %v", got)
	}
	r.Steps = append(r.Steps, Step{Name: "d", Took: 1500 * time.Millisecond})
	if r.OK() || len(failedSteps(r)) != 1 {
		t.Error("a failed step did not fail the report")
	}
	var b strings.Builder
	r.WriteTable(&b)
	for _, want := range []string{"warning: hmm", "skipped: n/a", "1.5s", "FAIL: 1 ok, 1 warnings, 1 skipped, 1 failed"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, b.String())
		}
	}
}

// TestCertificateCauseNeedsNoReload: an expired certificate's advice
// does not send the operator to SIGHUP, which icebox does not need for
// certificates: files are re-read within seconds and ACME renews itself.
func TestCertificateCauseNeedsNoReload(t *testing.T) {
	cause := tlsCause(x509.CertificateInvalidError{Reason: x509.Expired}, "turn.example.com")
	for _, want := range []string{"expired", "no reload needed", "tls.acme"} {
		if !strings.Contains(cause, want) {
			t.Errorf("cause %q lacks %q", cause, want)
		}
	}
	if strings.Contains(cause, "SIGHUP") {
		t.Errorf("cause %q asks for SIGHUP", cause)
	}
}
