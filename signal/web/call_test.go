package web_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// callStats is what the test reads from a tab's RTCPeerConnection itself,
// not from what the page chose to display.
type callStats struct {
	State  string `json:"state"`
	Local  string `json:"local"`  // candidateType of the selected pair's local side
	Remote string `json:"remote"` // and of its remote side
	// RemoteAddr is the selected remote candidate's address:port.
	RemoteAddr string  `json:"remoteAddr"`
	Relay      string  `json:"relay"` // relayProtocol, where Chromium tells it
	RTT        float64 `json:"rtt"`   // seconds; -1 when not measured yet
	Bytes      float64 `json:"bytes"` // inbound-rtp video bytesReceived
	Role       string  `json:"role"`  // the type of the tab's local description
}

// statsJS gives callStats once the tab is connected and video has arrived,
// null before.
const statsJS = `(async () => {
  const pc = window.icebox && window.icebox.pc;
  if (!pc || pc.connectionState !== 'connected') return null;
  const s = await pc.getStats();
  let pair = null, nominated = null, video = null;
  s.forEach((r) => {
    if (r.type === 'transport' && r.selectedCandidatePairId) pair = s.get(r.selectedCandidatePairId);
    if (r.type === 'candidate-pair' && r.nominated && r.state === 'succeeded') nominated = r;
    if (r.type === 'inbound-rtp' && r.kind === 'video') video = r;
  });
  pair = pair || nominated;
  if (!pair || !video || !video.bytesReceived) return null;
  const l = s.get(pair.localCandidateId), r = s.get(pair.remoteCandidateId);
  return {state: pc.connectionState, local: l.candidateType, remote: r.candidateType, remoteAddr: r.address + ':' + r.port,
    relay: l.relayProtocol || '', rtt: pair.currentRoundTripTime ?? -1,
    bytes: video.bytesReceived, role: pc.localDescription.type};
})()`

// TestCallRelayOnly opens the call page in two tabs of one room with
// "relay only" on and checks that they call each other through TURN:
// connected, relay on both ends of the selected pair, video flowing, and
// chat both ways, and a tab that comes back is called again.
func TestCallRelayOnly(t *testing.T) {
	r := startRelay(t)
	browser := newBrowser(t, r)
	url := serveIcebox(t, r.iceServers()).URL
	allocs := r.metric(t, "icebox_turn_allocations_total")
	toPeer := r.metric(t, "icebox_turn_relayed_packets_total", "direction", "to_peer")
	fromPeer := r.metric(t, "icebox_turn_relayed_packets_total", "direction", "from_peer")
	refused := r.metric(t, "icebox_turn_peer_refusals_total")
	stale := r.metric(t, "icebox_turn_peer_refusals_total", "reason", "relay_port")
	callRelayOnly(t, browser, url+"/?room=call", "signal")

	// icebox's TURN server relayed the call, both ways: each tab's
	// relay sent to the other's and received from it.
	allocs = r.metric(t, "icebox_turn_allocations_total") - allocs
	toPeer = r.metric(t, "icebox_turn_relayed_packets_total", "direction", "to_peer") - toPeer
	fromPeer = r.metric(t, "icebox_turn_relayed_packets_total", "direction", "from_peer") - fromPeer
	// The default peer policy lets one tab's relay reach the other's (the
	// relay address, on a live relay port), so the call needs no
	// turn.peers.allow. Checks still aimed at the relays of a page that
	// went away are refused as relay_port; nothing else may be.
	refused = r.metric(t, "icebox_turn_peer_refusals_total") - refused
	stale = r.metric(t, "icebox_turn_peer_refusals_total", "reason", "relay_port") - stale
	t.Logf("icebox TURN: %v allocations, %v packets to peers, %v from peers, %v refused by the peer policy (%v to closed relays)",
		allocs, toPeer, fromPeer, refused, stale)
	if refused != stale {
		t.Errorf("icebox's peer policy refused %v permissions or packets for other reasons than a closed relay port; the default policy should let relays reach each other", refused-stale)
	}
	if allocs < 2 || toPeer == 0 || fromPeer == 0 {
		t.Errorf("icebox TURN made %v allocations and relayed %v packets to peers, %v from them; want the call relayed", allocs, toPeer, fromPeer)
	}
}

// connectPair opens url in tab A, waits until A knows it is alone, then
// opens B, and returns both tabs' stats once they are connected with
// video, having checked that the path is relay.
func connectPair(t *testing.T, browser context.Context, url string) (a, b *tab, sa, sb callStats) {
	t.Helper()
	a = newTab(t, browser, "tab A")
	startCall(t, a, url, false)
	// Alone, A says it waits for the other side and how to bring it in,
	// not just "new".
	waitAlone(t, a)
	waiting := `document.getElementById('message').textContent.includes('link above') &&
		document.getElementById('conn').textContent.includes('waiting for the other side')`
	poll[bool](t, a, "tab A to say how to invite the other side", 5*time.Second, waiting)

	b = newTab(t, browser, "tab B")
	t0 := time.Now()
	startCall(t, b, url, true)
	sb = poll[callStats](t, b, "tab B connected with video", 20*time.Second, statsJS)
	sa = poll[callStats](t, a, "tab A connected with video", 10*time.Second, statsJS)
	t.Logf("connected with video %v after tab B's Start; A is the %s side, B the %s side",
		time.Since(t0).Round(time.Millisecond), roleOf(sa.Role), roleOf(sb.Role))
	checkThroughRelay(t, a, sa, b)
	checkThroughRelay(t, b, sb, a)
	for _, tb := range []*tab{a, b} {
		if eval[bool](t, tb, waiting) {
			t.Errorf("%s still says it waits for the other side while connected", tb.name)
		}
	}
	return a, b, sa, sb
}

// relaysJS lists a tab's own relay candidates, address:port.
const relaysJS = `(async () => {
  const out = [];
  (await window.icebox.pc.getStats()).forEach((r) => {
    if (r.type === 'local-candidate' && r.candidateType === 'relay') out.push(r.address + ':' + r.port);
  });
  return out;
})()`

// checkThroughRelay asserts what a relay-only call promises: the tab's
// selected pair leaves through its own TURN relay and reaches one of the
// other tab's relays. ICE may know that remote from signaling (relay) or
// first from a connectivity check (prflx); either way it is the relay.
func checkThroughRelay(t *testing.T, tb *tab, st callStats, other *tab) {
	t.Helper()
	t.Logf("%s: %+v", tb.name, st)
	if st.Local != "relay" {
		t.Errorf("%s: selected pair leaves through a %s candidate, want its TURN relay", tb.name, st.Local)
	}
	relays := eval[[]string](t, other, relaysJS)
	// Chromium leaves a prflx candidate's address out of getStats
	// (":port"); the relay port alone names the allocation.
	if !slices.ContainsFunc(relays, func(r string) bool {
		return r == st.RemoteAddr || strings.HasPrefix(st.RemoteAddr, ":") && strings.HasSuffix(r, st.RemoteAddr)
	}) {
		t.Errorf("%s: selected remote %s (%s) is none of %s's relays %v", tb.name, st.RemoteAddr, st.Remote, other.name, relays)
	}
}

func callRelayOnly(t *testing.T, browser context.Context, url, name string) {
	a, b, sa, sb := connectPair(t, browser, url)
	if sa.Role == sb.Role {
		t.Errorf("both tabs ended with a local %s; want one offer and one answer", sa.Role)
	}

	// Video keeps arriving, in both directions.
	for _, s := range []struct {
		tb *tab
		st callStats
	}{{a, sa}, {b, sb}} {
		poll[callStats](t, s.tb, "inbound video bytes to grow", 10*time.Second,
			fmt.Sprintf(`(async () => { const s = await %s; return s && s.bytes > %f ? s : null; })()`, statsJS, s.st.Bytes))
	}

	chat(t, a, b, "hello from A")
	chat(t, b, a, "hello from B")

	// What the page shows agrees with getStats. The display refreshes once a
	// second, so wait for it to have caught up.
	for _, tb := range []*tab{a, b} {
		shown := poll[string](t, tb, "the page to show the relay path and RTT", 5*time.Second,
			`document.getElementById('pair').dataset.local === 'relay' && /\d+ ms/.test(document.getElementById('rtt').textContent)
			 && document.getElementById('conn').textContent === 'connected'
			 && document.getElementById('pair').textContent + ' / ' + document.getElementById('rtt').textContent`)
		t.Logf("%s shows: %s", tb.name, shown)
	}
	a.screenshot(t, "call-"+name+"-tab-a.png")
	b.screenshot(t, "call-"+name+"-tab-b-phone.png")

	// B comes back as a new page: A, told that the old B left and the new
	// one joined, must answer the new B's offer on a fresh connection.
	eval[bool](t, a, `window.icebox.pc.oldCall = true`)
	t0 := time.Now()
	startCall(t, b, url, true)
	poll[callStats](t, a, "tab A to take the rejoined tab B's call", 20*time.Second,
		`(async () => !window.icebox.pc || window.icebox.pc.oldCall ? null : await `+statsJS+`)()`)
	sb = poll[callStats](t, b, "rejoined tab B connected with video", 10*time.Second, statsJS)
	if sb.Role != "offer" {
		t.Errorf("rejoined tab B: %+v; want a call that B offered", sb)
	}
	checkThroughRelay(t, b, sb, a)
	chat(t, a, b, "welcome back")
	t.Logf("rejoined after %v", time.Since(t0).Round(time.Millisecond))
}

// TestCallWithoutAllowLoopback records a finding: with Chromium's WebRTC
// sockets bound to the wildcard address (which
// --webrtc-ip-handling-policy=default_public_interface_only does), a call
// through TURN on 127.0.0.1 does not need --allow-loopback-in-peer-connection.
// Nor, for connecting, does it need mDNS host-candidate hiding turned off,
// but that switch stays on here: without it Chromium joins the mDNS group
// on the machine's outward interface (IGMP reports seen with tcpdump),
// and tests may only talk to loopback.
func TestCallWithoutAllowLoopback(t *testing.T) {
	r := startRelay(t)
	browser := newBrowser(t, r, "allow-loopback-in-peer-connection")
	srv := serveIcebox(t, r.iceServers())
	connectPair(t, browser, srv.URL+"/?room=no-allow-loopback")
}

func roleOf(descType string) string {
	if descType == "offer" {
		return "offering"
	}
	return "answering"
}

// startCall opens url in a new tab, switches on relay only and presses
// Start; phone makes the tab phone-sized, to see that the page fits.
func startCall(t *testing.T, tb *tab, url string, phone bool) {
	t.Helper()
	steps := []chromedp.Action[chromedp.Void]{}
	if phone {
		steps = append(steps, chromedp.EmulateViewport(390, 844, chromedp.EmulateMobile, chromedp.EmulateScale(2)))
	}
	steps = append(steps,
		chromedp.Navigate(url),
		chromedp.WaitVisible(chromedp.ID("start")),
		chromedp.Click(chromedp.ID("relay")),
		chromedp.Click(chromedp.ID("start")),
	)
	tb.do(t, steps...)
}

func chat(t *testing.T, from, to *tab, text string) {
	t.Helper()
	from.do(t,
		chromedp.SendKeys(chromedp.ID("text"), text),
		chromedp.Click(chromedp.ID("send")),
	)
	poll[bool](t, to, "chat text "+text, 10*time.Second,
		fmt.Sprintf(`[...document.querySelectorAll('#log li')].some((li) => li.textContent === %q)`, "them: "+text))
}
