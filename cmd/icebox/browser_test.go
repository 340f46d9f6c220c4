package main

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"

	"icebox/internal/testenv"
)

// onlyTurnsJS keeps, of the ICE servers the page hands RTCPeerConnection,
// only the turns: URLs of the shared port, and records what was kept, so
// the call can go nowhere else: as behind a firewall that passes 443 only.
const onlyTurnsJS = `(() => {
  const Orig = window.RTCPeerConnection, keep = %q;
  window.iceboxKept = [];
  const Wrapped = function (config, ...rest) {
    config = Object.assign({}, config);
    config.iceServers = (config.iceServers || [])
      .map((s) => Object.assign({}, s, {urls: [].concat(s.urls).filter((u) => u.startsWith(keep))}))
      .filter((s) => s.urls.length > 0);
    window.iceboxKept.push(config.iceServers.flatMap((s) => s.urls));
    return new Orig(config, ...rest);
  };
  Wrapped.prototype = Orig.prototype;
  Object.setPrototypeOf(Wrapped, Orig);
  window.RTCPeerConnection = Wrapped;
})();`

// pathJS gives the selected pair's candidate types and the local relay's
// protocol once the tab is connected and video has arrived, null before.
const pathJS = `(async () => {
  const pc = window.icebox && window.icebox.pc;
  if (!pc || pc.connectionState !== 'connected') return null;
  const s = await pc.getStats();
  let pair = null, bytes = 0;
  s.forEach((r) => {
    if (r.type === 'transport' && r.selectedCandidatePairId) pair = s.get(r.selectedCandidatePairId);
    if (r.type === 'inbound-rtp' && r.kind === 'video') bytes = r.bytesReceived || 0;
  });
  if (!pair || !bytes) return null;
  const l = s.get(pair.localCandidateId), r = s.get(pair.remoteCandidateId);
  return l.candidateType + '/' + r.candidateType + '/' + (l.relayProtocol || '');
})()`

// TestChromiumCallsThroughTheSharedPort: two Chromium tabs load the page
// and signaling over https/wss from the one TLS port, and call each other
// relay-only with nothing but turns: on that port in their ICE servers.
func TestChromiumCallsThroughTheSharedPort(t *testing.T) {
	cfg, cert := sharedPortConfig(t)
	cfg.TURN.TLS.Listen = "" // TURN over TLS on the shared port only
	d, _ := startDaemon(t, cfg)
	port := d.tls.sharedPort()
	origin := fmt.Sprintf("https://localhost:%d", port)
	keep := fmt.Sprintf("turns:localhost:%d?", port)

	sum := sha256.Sum256(cert.RawSubjectPublicKeyInfo)
	opts := append(testenv.ChromiumOptions(t),
		// Trusts this one self-signed key, for the page and for turns:.
		chromedp.Flag("ignore-certificate-errors-spki-list", base64.StdEncoding.EncodeToString(sum[:])))
	alloc, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	browser, cancel := chromedp.NewContext(alloc)
	t.Cleanup(func() { cancel(); cancelAlloc() })
	if err := chromedp.Do(browser); err != nil {
		t.Fatalf("starting Chromium: %v", err)
	}

	routed := func(route string) float64 {
		return testenv.GatherValue(t, d.reg, "icebox_tls_port_connections_total", "route", route)
	}
	allocsBefore := testenv.GatherValue(t, d.reg, "icebox_turn_allocations_total")
	tabs := make([]context.Context, 2)
	for i := range tabs {
		tab, cancelTab := chromedp.NewContext(browser)
		t.Cleanup(cancelTab)
		tabs[i] = tab
		if _, err := chromedp.Call(tab, page.AddScriptToEvaluateOnNewDocument,
			page.AddScriptToEvaluateOnNewDocumentParams{Source: fmt.Sprintf(onlyTurnsJS, keep)}); err != nil {
			t.Fatal(err)
		}
		if err := chromedp.Do(tab,
			chromedp.Navigate(origin+"/?room=shared-port"),
			chromedp.WaitVisible(chromedp.ID("start")),
			chromedp.Click(chromedp.ID("relay")),
			chromedp.Click(chromedp.ID("start")),
		); err != nil {
			t.Fatalf("tab %d: %v", i, err)
		}
	}
	for i, tab := range tabs {
		path, err := chromedp.Run(tab, chromedp.Poll[string](pathJS,
			chromedp.WithPollingInterval(50*time.Millisecond), chromedp.WithPollingTimeout(30*time.Second)))
		if errors.Is(err, chromedp.ErrPollingTimeout) {
			t.Fatalf("tab %d: not connected with video after 30s", i)
		}
		if err != nil {
			t.Fatalf("tab %d: %v", i, err)
		}
		if path != "relay/relay/tls" {
			t.Errorf("tab %d: selected pair (local/remote/local relay protocol) %s, want relay/relay/tls", i, path)
		}
		kept, err := chromedp.Run(tab, chromedp.Evaluate[[][]string](`window.iceboxKept`))
		if err != nil {
			t.Fatal(err)
		}
		if len(kept) == 0 {
			t.Fatalf("tab %d: the page made no RTCPeerConnection through the wrapper", i)
		}
		for _, urls := range kept {
			if len(urls) == 0 {
				t.Errorf("tab %d: WsIceServers had no %s URL", i, keep)
			}
			for _, u := range urls {
				if !strings.HasPrefix(u, keep) {
					t.Errorf("tab %d: ICE server %s besides the shared port", i, u)
				}
			}
		}
		href, err := chromedp.Run(tab, chromedp.Evaluate[string](`location.href`))
		if err != nil || !strings.HasPrefix(href, origin+"/") {
			t.Errorf("tab %d: page at %q (%v), want it from %s", i, href, err, origin)
		}
	}
	// The page, its WebSockets and both tabs' TURN came through the port.
	if got := routed("turn"); got < 2 {
		t.Errorf("%v TURN connections on the shared port, want one per tab at least", got)
	}
	if got := routed("http"); got < 2 {
		t.Errorf("%v HTTP connections on the shared port, want the page and signaling of both tabs", got)
	}
	if got := testenv.GatherValue(t, d.reg, "icebox_turn_allocations_total") - allocsBefore; got < 2 {
		t.Errorf("%v TURN allocations, want both tabs'", got)
	}
	if got := testenv.GatherValue(t, d.reg, "icebox_turn_relayed_packets_total", "direction", "to_peer"); got == 0 {
		t.Error("TURN relayed nothing")
	}
}
