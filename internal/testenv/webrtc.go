package testenv

import (
	"net"

	"github.com/pion/ice/v4"
	"github.com/pion/webrtc/v4"
)

// LoopbackWebRTC returns a pion/webrtc API whose peers gather and send on
// loopback only: no other interface, no mDNS, UDP over IPv4. Tests may
// send traffic to nothing else. Relay candidates are accepted at once, so
// relay-only calls connect without ICE's usual wait.
func LoopbackWebRTC() *webrtc.API {
	var se webrtc.SettingEngine
	se.SetRelayAcceptanceMinWait(0)
	se.SetICEMulticastDNSMode(ice.MulticastDNSModeDisabled)
	se.SetInterfaceFilter(func(name string) bool {
		ifi, err := net.InterfaceByName(name)
		return err == nil && ifi.Flags&net.FlagLoopback != 0
	})
	se.SetIPFilter(func(ip net.IP) bool { return ip.IsLoopback() })
	se.SetNetworkTypes([]webrtc.NetworkType{webrtc.NetworkTypeUDP4})
	se.SetIncludeLoopbackCandidate(true)
	return webrtc.NewAPI(webrtc.WithSettingEngine(se))
}
