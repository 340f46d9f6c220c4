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

// TestCheckPage runs /check against working STUN and TURN, and against a
// TURN server that refuses the credentials, which it must report as such.
func TestCheckPage(t *testing.T) {
	browser := newBrowser(t)
	ts := startTURN(t)

	good := serveIcebox(t, ts.iceServers(ts.secret))
	tb := newTab(t, browser, "check")
	_, rows := runCheck(t, tb, good.URL+"/check")
	for _, kind := range []string{"stun", "turn-udp", "turn-tcp"} {
		if r, ok := rows[kind]; !ok || !r.OK {
			t.Errorf("/check says %s does not work: %+v", kind, r)
		}
	}
	if r := rows["turn-tls"]; r.OK || !strings.Contains(r.Text, "not offered") {
		t.Errorf("/check should say TURN over TLS is not offered: %+v", r)
	}
	allocs, _, _ := ts.counts()
	if allocs["udp"] == 0 || allocs["tcp"] == 0 {
		t.Errorf("TURN server saw allocations %v; want UDP and TCP from /check", allocs)
	}
	tb.screenshot(t, "check.png")

	bad := serveIcebox(t, ts.iceServers("not the secret"))
	_, rows = runCheck(t, tb, bad.URL+"/check")
	if !rows["stun"].OK {
		t.Errorf("STUN needs no credentials and should still work: %+v", rows["stun"])
	}
	for _, kind := range []string{"turn-udp", "turn-tcp"} {
		if r := rows[kind]; r.OK || !strings.Contains(r.Text, "credentials were not accepted") {
			t.Errorf("/check should say %s refused the credentials: %+v", kind, r)
		}
	}
	if _, _, fails := ts.counts(); fails == 0 {
		t.Error("TURN server refused nothing, so the wrong-credentials case tested nothing")
	}
	tb.screenshot(t, "check-wrong-secret.png")
}
