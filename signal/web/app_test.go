package web_test

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/pion/webrtc/v4"
	"github.com/prometheus/client_golang/prometheus"

	"icebox/internal/ktapp"
)

// The product's promise, checked where it matters most: the talk's app,
// unchanged, controls icebox's page, and the page stands in for the app.
// Every run is a fresh call in a fresh room; the browser and its tabs are
// reused across runs to keep CI time down, each run loading the page anew.

// runs is how many calls each join order makes: 20, or $ICEBOX_CALL_RUNS.
func runs(t *testing.T) int {
	if s := os.Getenv("ICEBOX_CALL_RUNS"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			t.Fatalf("ICEBOX_CALL_RUNS=%q: want a positive number", s)
		}
		return n
	}
	return 20
}

// pathJS gives the page's call once it is connected: its state, the
// candidate types of the selected pair, and how it met its peer; null
// before.
const pathJS = `(async () => {
  const pc = window.icebox && window.icebox.pc;
  if (!pc || pc.connectionState !== 'connected') return null;
  const s = await pc.getStats();
  let pair = null;
  s.forEach((r) => {
    if (r.type === 'transport' && r.selectedCandidatePairId) pair = s.get(r.selectedCandidatePairId);
  });
  if (!pair) return null;
  return {state: pc.connectionState, local: s.get(pair.localCandidateId).candidateType,
    remote: s.get(pair.remoteCandidateId).candidateType, met: window.icebox.met,
    role: pc.localDescription.type};
})()`

type pagePath struct {
	State  string `json:"state"`
	Local  string `json:"local"`
	Remote string `json:"remote"`
	Met    string `json:"met"`
	Role   string `json:"role"` // the type of the page's local description
}

// shownJS lists the bytes the device view shows, newest first.
const shownJS = `[...document.querySelectorAll('#commands li')].map((li) => li.dataset.byte).join(',')`

// callBench is what every run of one test shares.
type callBench struct {
	relay   *relay
	browser context.Context
	url     string // http://127.0.0.1:port
	reg     *prometheus.Registry
}

func newCallBench(t *testing.T) *callBench {
	r := startRelay(t)
	b := &callBench{relay: r, browser: newBrowser(t, r), reg: prometheus.NewRegistry()}
	b.url = serveIceboxMetrics(t, r.iceServers(), b.reg).URL
	t.Cleanup(func() {
		if t.Failed() { // what TURN refused, to tell a stuck call's cause
			t.Logf("TURN: %v allocations active, quota refusals %v, unanswered unsigned requests %v, auth failures %v",
				r.metric(t, "icebox_turn_allocations_active"), r.metric(t, "icebox_turn_quota_refusals_total"),
				r.metric(t, "icebox_turn_unanswered_total"), r.metric(t, "icebox_turn_auth_failures_total"))
		}
	})
	return b
}

func (b *callBench) wsURL(query string) string {
	u := "ws" + strings.TrimPrefix(b.url, "http") + "/connect"
	if query != "" {
		u += "?" + query
	}
	return u
}

// offersReceived is icebox_signal_frames_received_total for WsSDPOffer.
func (b *callBench) offersReceived(t *testing.T) float64 {
	t.Helper()
	mfs, err := b.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "icebox_signal_frames_received_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "kind" && l.GetValue() == "WsSDPOffer" {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}

// waitOffers waits until icebox has received n offers in all: there is no
// event to wait on for the server having an app's offer in hand.
func (b *callBench) waitOffers(t *testing.T, n float64, peer *ktapp.Peer) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for b.offersReceived(t) < n {
		select {
		case err := <-peer.Errs:
			t.Fatal(err)
		case <-tick.C:
		}
		if time.Now().After(deadline) {
			t.Fatalf("icebox has %v offers, want %v", b.offersReceived(t), n)
		}
	}
}

// openPage loads the call page for room in tb, relay only, and presses
// Start; it returns once the page is in the room.
func openPage(t *testing.T, tb *tab, url, room, role string) {
	t.Helper()
	q := "/?room=" + room
	if role == "controller" {
		q += "&role=controller"
	}
	startCall(t, tb, url+q, false)
	poll[bool](t, tb, "the page to join room "+room, 10*time.Second,
		`document.getElementById('sig').textContent === 'connected to room `+room+`'`)
}

// waitAlone waits until the page says it waits for the other side: it
// has joined and been told the room is empty.
func waitAlone(t *testing.T, tb *tab) {
	t.Helper()
	poll[bool](t, tb, "the page to wait for the other side", 10*time.Second,
		`document.getElementById('message').textContent.startsWith('Waiting for the other side')`)
}

// waitPeer waits for p to connect and open "input", or fails with what
// went wrong for it.
func waitPeer(t *testing.T, p *ktapp.Peer, what string) {
	t.Helper()
	timeout := time.NewTimer(20 * time.Second)
	defer timeout.Stop()
	for _, ch := range []chan struct{}{p.Connected, p.Open} {
		select {
		case <-ch:
		case err := <-p.Errs:
			t.Fatal(err)
		case <-timeout.C:
			t.Fatalf("%s: not connected with input open after 20s", what)
		}
	}
}

func noErrors(t *testing.T, peers ...*ktapp.Peer) {
	t.Helper()
	for _, p := range peers {
		select {
		case err := <-p.Errs:
			t.Error(err)
		default:
		}
	}
}

// checkRelayed checks that p's selected pair goes through the TURN relay.
func checkRelayed(t *testing.T, p *ktapp.Peer, what string) {
	t.Helper()
	pair := p.SelectedPair()
	if pair == nil || pair.Local.Typ != webrtc.ICECandidateTypeRelay {
		t.Errorf("%s: selected pair %v, want its own side through icebox's TURN relay", what, pair)
	}
}

// eachRun runs call(i, room) runs(t) times for each join order, in a
// fresh room each time, stopping an order at its first failed run.
func eachRun(t *testing.T, orders []string, call func(t *testing.T, order string, i int, room string)) {
	for _, order := range orders {
		t.Run(order, func(t *testing.T) {
			start := time.Now()
			for i := range runs(t) {
				call(t, order, i, fmt.Sprintf("%s-%d", order, i))
				if t.Failed() {
					return
				}
			}
			t.Logf("%d calls, %s, in %v", runs(t), order, time.Since(start).Round(time.Millisecond))
		})
	}
}

// commandsFor are the bytes run i sends: key + 128 × state, every key and
// both states over the runs.
func commandsFor(i int) []int {
	return []int{i % 8, i%8 + 128, (i+3)%8 + 128}
}

// TestAppCallsPage: a client that does exactly what the talk's app does
// (ktapp.App) calls icebox's page, relay only through icebox's TURN,
// with the page joining first and with the app joining first. Every run
// connects, the app's "input" keeps stream id 0 on the page too, and the
// commands the app sends appear in the page's device view. The app never
// gets a frame its strict decoder refuses or a kind it does not handle
// (an offer, a presence frame).
func TestAppCallsPage(t *testing.T) {
	b := newCallBench(t)
	page := newTab(t, b.browser, "page")
	toPeer := b.relay.metric(t, "icebox_turn_relayed_packets_total", "direction", "to_peer")
	eachRun(t, []string{"page-first", "app-first"}, func(t *testing.T, order string, i int, room string) {
		var app *ktapp.Peer
		if order == "page-first" {
			openPage(t, page, b.url, room, "device")
			waitAlone(t, page)
			app = ktapp.App(t, b.wsURL(""), room)
		} else {
			before := b.offersReceived(t)
			app = ktapp.App(t, b.wsURL(""), room)
			b.waitOffers(t, before+1, app)
			openPage(t, page, b.url, room, "device")
		}
		defer app.Close()
		waitPeer(t, app, fmt.Sprintf("run %d: app", i))
		p := poll[pagePath](t, page, "the page connected", 10*time.Second, pathJS)
		wantMet := map[string]string{"page-first": "joined", "app-first": "here"}[order]
		if p.Local != "relay" || p.Met != wantMet || p.Role != "answer" {
			t.Errorf("run %d: page %+v; want its relay, the app met as %q, the page answering", i, p, wantMet)
		}
		checkRelayed(t, app, fmt.Sprintf("run %d: app", i))
		if id := app.InputID(); id == nil || *id != 0 {
			t.Errorf("run %d: the app's input channel has id %v, want 0", i, id)
		}
		// The page's only channel is the app's: no chat, nothing of its own.
		if got := eval[string](t, page, `(window.icebox.input ? window.icebox.input.label + ' ' + window.icebox.input.id : 'none') + (window.icebox.chat ? ' and chat' : '')`); got != "input 0" {
			t.Errorf("run %d: the page's channels are %q, want only the app's: input 0", i, got)
		}

		sent := commandsFor(i)
		for _, c := range sent {
			if err := app.Send(c%128, c/128); err != nil {
				t.Fatalf("run %d: send: %v", i, err)
			}
		}
		want := make([]string, len(sent))
		for j, c := range sent {
			want[len(sent)-1-j] = strconv.Itoa(c)
		}
		poll[bool](t, page, "the app's commands in the device view", 10*time.Second,
			fmt.Sprintf(`%s === %q`, shownJS, strings.Join(want, ",")))
		last := sent[len(sent)-1]
		if got := eval[string](t, page, `document.querySelector('#commands li').textContent`); got != fmt.Sprintf("key %d · state %d", last%128, last/128) {
			t.Errorf("run %d: the newest command reads %q", i, got)
		}
		noErrors(t, app)
		if t.Failed() {
			page.screenshot(t, "app-"+order+".png")
		}
	})
	if d := b.relay.metric(t, "icebox_turn_relayed_packets_total", "direction", "to_peer") - toPeer; d == 0 {
		t.Error("icebox's TURN relayed nothing: the calls did not go through it")
	}
}

// TestPageControlsPage: a page in controller role calls a page in device
// role, both join orders; the keys pressed on the controller appear on
// the device. Whoever joins later offers, with video and chat.
func TestPageControlsPage(t *testing.T) {
	b := newCallBench(t)
	ctl := newTab(t, b.browser, "controller page")
	dev := newTab(t, b.browser, "device page")
	eachRun(t, []string{"device-first", "controller-first"}, func(t *testing.T, order string, i int, room string) {
		first, second := dev, ctl
		firstRole, secondRole := "device", "controller"
		if order == "controller-first" {
			first, second, firstRole, secondRole = ctl, dev, "controller", "device"
		}
		openPage(t, first, b.url, room, firstRole)
		waitAlone(t, first)
		openPage(t, second, b.url, room, secondRole)

		pf := poll[pagePath](t, first, "the first page connected", 20*time.Second, pathJS)
		ps := poll[pagePath](t, second, "the second page connected", 10*time.Second, pathJS)
		if pf.Local != "relay" || ps.Local != "relay" || pf.Role != "answer" || ps.Role != "offer" {
			t.Errorf("run %d: first page %+v, second %+v; want relay, the later page offering", i, pf, ps)
		}
		// The pages' chat keeps clear of the ids an app's channel takes.
		for _, tb := range []*tab{ctl, dev} {
			if id := eval[int](t, tb, `window.icebox.chat.id`); id != 1000 {
				t.Errorf("run %d: %s's chat channel has id %d, want 1000", i, tb.name, id)
			}
		}
		poll[bool](t, ctl, "the controller's keypad", 10*time.Second,
			`!document.querySelector('#keypad button[data-key="5"]').disabled`)
		key := i % 8
		ctl.do(t, chromedp.Click(fmt.Sprintf(`#keypad button[data-key="%d"]`, key)))
		poll[bool](t, dev, "the pressed key in the device view", 10*time.Second,
			fmt.Sprintf(`%s === %q`, shownJS, fmt.Sprintf("%d,%d", key+128, key)))
		if t.Failed() {
			ctl.screenshot(t, "pages-"+order+"-controller.png")
			dev.screenshot(t, "pages-"+order+"-device.png")
		}
	})
	dev.screenshot(t, "device-view.png")
	ctl.screenshot(t, "controller-view.png")
}

// TestPageControlsDevice: a page in controller role calls a device built
// from the talk (ktapp.Device: answers, never offers, strict decoder),
// both join orders; the device receives the keys pressed on the page.
func TestPageControlsDevice(t *testing.T) {
	b := newCallBench(t)
	ctl := newTab(t, b.browser, "controller page")
	eachRun(t, []string{"page-first", "device-first"}, func(t *testing.T, order string, i int, room string) {
		var dev *ktapp.Peer
		if order == "page-first" {
			openPage(t, ctl, b.url, room, "controller")
			waitAlone(t, ctl)
			dev = ktapp.Device(t, b.wsURL("controllerId="+room), room)
		} else {
			dev = ktapp.Device(t, b.wsURL("controllerId="+room), room)
			openPage(t, ctl, b.url, room, "controller")
		}
		defer dev.Close()
		waitPeer(t, dev, fmt.Sprintf("run %d: device", i))
		p := poll[pagePath](t, ctl, "the page connected", 10*time.Second, pathJS)
		if p.Local != "relay" || p.Role != "offer" {
			t.Errorf("run %d: page %+v; want its relay, the page offering", i, p)
		}
		checkRelayed(t, dev, fmt.Sprintf("run %d: device", i))
		poll[bool](t, ctl, "the keypad", 10*time.Second,
			`!document.querySelector('#keypad button[data-key="0"]').disabled`)
		key := i % 8
		ctl.do(t, chromedp.Click(fmt.Sprintf(`#keypad button[data-key="%d"]`, key)))
		var got []int
		timeout := time.After(10 * time.Second)
		for len(got) < 2 {
			select {
			case c := <-dev.Commands:
				got = append(got, int(c))
			case err := <-dev.Errs:
				t.Fatal(err)
			case <-timeout:
				t.Fatalf("run %d: the device got %v, want key %d pressed and released", i, got, key)
			}
		}
		if !slices.Equal(got, []int{key, key + 128}) {
			t.Errorf("run %d: the device got %v, want %v", i, got, []int{key, key + 128})
		}
		noErrors(t, dev)
		if t.Failed() {
			ctl.screenshot(t, "device-"+order+".png")
		}
	})
}
