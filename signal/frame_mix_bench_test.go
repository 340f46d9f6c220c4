package signal

import (
	"fmt"
	"strings"
	"testing"
)

// realisticSDP is an offer as a phone's WebRTC stack writes it for one
// video track and the data channel: 4 KB, two escaped characters per line.
func realisticSDP(kind string) string {
	var b strings.Builder
	w := func(s string) { b.WriteString(s); b.WriteString("\r\n") }
	w("v=0")
	w("o=- 4611731400430051336 2 IN IP4 127.0.0.1")
	w("s=-")
	w("t=0 0")
	w("a=group:BUNDLE 0 1")
	w("a=extmap-allow-mixed")
	w("a=msid-semantic: WMS stream")
	w("m=video 9 UDP/TLS/RTP/SAVPF 96 97 98 99 100 101 127 124 125")
	w("c=IN IP4 0.0.0.0")
	w("a=rtcp:9 IN IP4 0.0.0.0")
	w("a=ice-ufrag:8hhY")
	w("a=ice-pwd:asd88fgpdd777uzjYhagZg3p9CxR0xJz")
	w("a=ice-options:trickle renomination")
	w("a=fingerprint:sha-256 D2:FA:0E:C3:22:59:5E:14:95:69:92:3D:13:B4:84:24:2C:C2:A2:C0:3E:FD:34:8E:5E:EA:6F:AF:52:CE:E6:0F")
	if kind == "offer" {
		w("a=setup:actpass")
	} else {
		w("a=setup:active")
	}
	w("a=mid:0")
	for i, ext := range []string{"urn:ietf:params:rtp-hdrext:toffset", "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time", "urn:3gpp:video-orientation", "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01", "http://www.webrtc.org/experiments/rtp-hdrext/playout-delay", "http://www.webrtc.org/experiments/rtp-hdrext/video-content-type", "http://www.webrtc.org/experiments/rtp-hdrext/video-timing", "http://www.webrtc.org/experiments/rtp-hdrext/color-space", "urn:ietf:params:rtp-hdrext:sdes:mid"} {
		w(fmt.Sprintf("a=extmap:%d %s", i+2, ext))
	}
	w("a=sendrecv")
	w("a=msid:stream video0")
	w("a=rtcp-mux")
	w("a=rtcp-rsize")
	for _, pt := range []struct{ n, name string }{{"96", "VP8"}, {"98", "VP9"}, {"100", "H264"}, {"127", "AV1"}} {
		w("a=rtpmap:" + pt.n + " " + pt.name + "/90000")
		for _, fb := range []string{"goog-remb", "transport-cc", "ccm fir", "nack", "nack pli"} {
			w("a=rtcp-fb:" + pt.n + " " + fb)
		}
		w("a=fmtp:" + pt.n + " level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f")
	}
	w("a=ssrc-group:FID 2231627014 632943048")
	w("a=ssrc:2231627014 cname:4TOk42mSjXCkVIa6")
	w("a=ssrc:2231627014 msid:stream video0")
	w("a=ssrc:632943048 cname:4TOk42mSjXCkVIa6")
	w("a=ssrc:632943048 msid:stream video0")
	w("m=application 9 UDP/DTLS/SCTP webrtc-datachannel")
	w("c=IN IP4 0.0.0.0")
	w("a=ice-ufrag:8hhY")
	w("a=ice-pwd:asd88fgpdd777uzjYhagZg3p9CxR0xJz")
	w("a=ice-options:trickle renomination")
	w("a=fingerprint:sha-256 D2:FA:0E:C3:22:59:5E:14:95:69:92:3D:13:B4:84:24:2C:C2:A2:C0:3E:FD:34:8E:5E:EA:6F:AF:52:CE:E6:0F")
	w("a=mid:1")
	w("a=sctp-port:5000")
	w("a=max-message-size:262144")
	return b.String()
}

// realisticFrames is one call's frames from the app's side, in the
// proportions a call sends them: WsInit, an offer, an answer, and ten
// trickled candidates frames of one candidate each.
func realisticFrames() map[string][]byte {
	cands := []string{
		"candidate:1467250027 1 udp 2122260223 192.168.1.23 46243 typ host generation 0 ufrag 8hhY network-id 1 network-cost 10",
		"candidate:842163049 1 udp 1686052607 203.0.113.7 46243 typ srflx raddr 192.168.1.23 rport 46243 generation 0 ufrag 8hhY network-id 1 network-cost 10",
		"candidate:3591203546 1 udp 41885695 198.51.100.9 61234 typ relay raddr 203.0.113.7 rport 46243 generation 0 ufrag 8hhY network-id 1 network-cost 10",
	}
	return map[string][]byte{
		"init":       frameOf("WsInit", ""),
		"offer":      offer("living-room-tv", realisticSDP("offer")),
		"answer":     answer(realisticSDP("answer")),
		"candidate":  candidates("living-room-tv", cands[1]),
		"candidates": candidates("living-room-tv", cands...),
	}
}

// BenchmarkDecodeFrames decodes each kind of frame the app sends, and
// "call": one call's worth of them (init, offer, answer, 10 candidates),
// per op.
func BenchmarkDecodeFrames(b *testing.B) {
	frames := realisticFrames()
	call := [][]byte{frames["init"], frames["offer"], frames["answer"]}
	for range 10 {
		call = append(call, frames["candidate"])
	}
	run := func(b *testing.B, msgs [][]byte) {
		decode := newBenchDecoder()
		n := 0
		for _, m := range msgs {
			n += len(m)
		}
		b.SetBytes(int64(n))
		b.ReportAllocs()
		cpu0 := cpuTime()
		for b.Loop() {
			for _, m := range msgs {
				if code := decode(m); code != 0 {
					b.Fatal(code)
				}
			}
		}
		b.ReportMetric(float64(cpuTime()-cpu0)/float64(b.N), "cpu-ns/op")
	}
	for _, name := range []string{"init", "offer", "answer", "candidate", "candidates"} {
		b.Run(name, func(b *testing.B) { run(b, [][]byte{frames[name]}) })
	}
	b.Run("call", func(b *testing.B) { run(b, call) })
}

// newBenchDecoder is what BenchmarkDecodeFrames times: a reused decoder.
func newBenchDecoder() func([]byte) errCode {
	var d frameDecoder
	return func(msg []byte) errCode {
		_, code := d.decode(msg)
		return code
	}
}
