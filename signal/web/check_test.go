package web_test

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// checkRow is one line of /check's result table.
type checkRow struct {
	Kind string `json:"kind"`
	OK   bool   `json:"ok"`
	Text string `json:"text"`
	Time string `json:"time"`
}

// checkResultJS waits for /check to finish and returns its summary and rows.
const checkResultJS = `document.getElementById('summary').dataset.done === 'true' && JSON.stringify({
  summary: document.getElementById('summary').textContent,
  rows: [...document.querySelectorAll('#results tr')].map((tr) => ({
    kind: tr.dataset.kind, ok: tr.dataset.ok === 'true',
    text: tr.cells[1].textContent, time: tr.cells[2].textContent,
  })),
})`

func runCheck(t *testing.T, tb *tab, url string) (summary string, rows map[string]checkRow) {
	t.Helper()
	tb.do(t, chromedp.Navigate(url))
	raw := poll[string](t, tb, "/check to finish", 25*time.Second, checkResultJS)
	var res struct {
		Summary string     `json:"summary"`
		Rows    []checkRow `json:"rows"`
	}
	if err := json.Unmarshal([]byte(raw), &res); err != nil {
		t.Fatal(err)
	}
	rows = map[string]checkRow{}
	for _, r := range res.Rows {
		t.Logf("%s: %-9s %s (%s)", tb.name, r.Kind, r.Text, r.Time)
		rows[r.Kind] = r
	}
	t.Logf("%s: summary: %s", tb.name, res.Summary)
	return res.Summary, rows
}

// TestCheckPage runs /check against icebox's own STUN and TURN, and against
// ICE servers whose credentials were minted from another secret than the
// TURN server's, which it must report as refused.
func TestCheckPage(t *testing.T) {
	r := startRelay(t)
	browser := newBrowser(t, r)

	good := serveIcebox(t, r.iceServers())
	tb := newTab(t, browser, "check")
	_, rows := runCheck(t, tb, good.URL+"/check")
	for _, kind := range []string{"stun", "turn-udp", "turn-tcp", "turn-tls"} {
		if row, ok := rows[kind]; !ok || !row.OK {
			t.Errorf("/check says %s does not work: %+v", kind, row)
		}
	}
	// icebox saw it: its STUN port answered Binding itself and passed TURN
	// on to turnsrv over UDP, TCP and TLS, and turnsrv allocated for each of
	// the three TURN URLs.
	for _, seen := range [][2]string{{"udp", "answered"}, {"udp", "passed"}, {"tcp", "passed"}, {"tls", "passed"}} {
		if n := r.metric(t, "icebox_stun_requests_total", "transport", seen[0], "outcome", seen[1]); n == 0 {
			t.Errorf("icebox's STUN port %s nothing over %s", seen[1], seen[0])
		}
	}
	if n := r.metric(t, "icebox_turn_allocations_total"); n < 3 {
		t.Errorf("icebox TURN made %v allocations; want UDP, TCP and TLS from /check", n)
	}
	tb.screenshot(t, "check.png")

	bad := serveIcebox(t, r.iceServers("not the secret"))
	_, rows = runCheck(t, tb, bad.URL+"/check")
	if !rows["stun"].OK {
		t.Errorf("STUN needs no credentials and should still work: %+v", rows["stun"])
	}
	for _, kind := range []string{"turn-udp", "turn-tcp", "turn-tls"} {
		if row := rows[kind]; row.OK || !strings.Contains(row.Text, "credentials were not accepted") {
			t.Errorf("/check should say %s refused the credentials: %+v", kind, row)
		}
	}
	if n := r.metric(t, "icebox_turn_auth_failures_total", "reason", "bad_mac"); n == 0 {
		t.Error("icebox TURN refused nothing, so the wrong-credentials case tested nothing")
	}
	tb.screenshot(t, "check-wrong-secret.png")
}

// TestCheckPageNamesABrowserBlockedTCP is the finding behind a report that
// /check failed TURN over TCP against the host's own address while
// `icebox check` passed: Chromium applies --host-resolver-rules to
// WebRTC's TCP connections (not to UDP), so with the test switches, which
// map every host but localhost and 127.0.0.1 to nowhere, TURN over TCP to
// any other address fails at once with 701 (net error -105 in Chromium's
// log) and never reaches icebox. Here icebox listens on 127.0.0.2: UDP
// works, TCP is stopped in the browser, and the page must say so rather
// than blame a firewall in between.
func TestCheckPageNamesABrowserBlockedTCP(t *testing.T) {
	r := startRelayAt(t, "127.0.0.2")
	browser := newBrowser(t, r)
	srv := serveIcebox(t, r.iceServers())
	_, rows := runCheck(t, newTab(t, browser, "check"), srv.URL+"/check")
	if !rows["turn-udp"].OK {
		t.Fatalf("TURN over UDP on 127.0.0.2 should work: %+v", rows["turn-udp"])
	}
	tcp := rows["turn-tcp"]
	for _, want := range []string{"before it reached icebox", "--host-resolver-rules", "TURN over UDP to the same address works"} {
		if tcp.OK || !strings.Contains(tcp.Text, want) {
			t.Errorf("TURN over TCP row %+v; want a failure that says %q", tcp, want)
		}
	}
	if strings.Contains(tcp.Text, "firewall between here and icebox") {
		t.Errorf("TURN over TCP is blamed on a firewall in between: %q", tcp.Text)
	}
	// The browser stopped it: icebox never saw a TCP connection.
	if n := r.metric(t, "icebox_stun_requests_total", "transport", "tcp"); n != 0 {
		t.Errorf("icebox saw %v requests over TCP; the browser was expected to stop them", n)
	}
}
