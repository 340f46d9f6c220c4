package web_test

import (
	"context"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"
)

// beforeLoad makes every page the tab opens run js before its own scripts.
func (tb *tab) beforeLoad(t *testing.T, js string) {
	t.Helper()
	tb.do(t, chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
		_, err := cdp.Call(ctx, tg, page.AddScriptToEvaluateOnNewDocument,
			page.AddScriptToEvaluateOnNewDocumentParams{Source: js})
		return err
	}))
}

// TestDegrades checks the clear messages: a refused camera still joins
// the call, receiving video and chatting; a browser without WebRTC is
// told so on both pages.
func TestDegrades(t *testing.T) {
	r := startRelay(t)
	browser := newBrowser(t, r)
	url := serveIcebox(t, r.iceServers()).URL

	t.Run("camera-refused", func(t *testing.T) {
		a := newTab(t, browser, "tab A (camera refused)")
		a.beforeLoad(t, `navigator.mediaDevices.getUserMedia = () =>
			Promise.reject(new DOMException('Permission denied', 'NotAllowedError'));`)
		startCall(t, a, url+"/?room=refused", false)
		msg := poll[string](t, a, "the refusal message", 5*time.Second,
			`document.getElementById('media-note').textContent.includes('refused') && document.getElementById('media-note').textContent`)
		t.Logf("tab A says: %s", msg)

		b := newTab(t, browser, "tab B")
		startCall(t, b, url+"/?room=refused", false)
		sa := poll[callStats](t, a, "tab A receiving B's video", 20*time.Second, statsJS)
		if sa.Local != "relay" {
			t.Errorf("tab A: %+v, want a relay path", sa)
		}
		poll[bool](t, b, "tab B connected", 10*time.Second, `window.icebox.pc.connectionState === 'connected'`)
		chat(t, a, b, "no camera here")
		chat(t, b, a, "fine")
		if !eval[bool](t, a, `document.getElementById('media-note').textContent.includes('refused')`) {
			t.Error("tab A no longer says why it sends no video")
		}
		a.screenshot(t, "camera-refused.png")
	})

	t.Run("no-webrtc", func(t *testing.T) {
		tb := newTab(t, browser, "tab without WebRTC")
		tb.beforeLoad(t, `delete window.RTCPeerConnection; delete window.webkitRTCPeerConnection;`)
		tb.do(t, chromedp.Navigate(url+"/?room=old"), chromedp.Click(chromedp.ID("start")))
		poll[bool](t, tb, "the call page's message", 5*time.Second,
			`document.getElementById('message').textContent.includes('no WebRTC')`)
		tb.do(t, chromedp.Navigate(url+"/check"))
		poll[bool](t, tb, "the check page's message", 5*time.Second,
			`document.getElementById('summary').textContent.includes('no WebRTC')`)
	})
}
