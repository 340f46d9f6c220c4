// Package ktapp plays the talk's Kotlin app in tests: its data classes, its
// strict decoder (internal/strictjson), and pion/webrtc peers that do on the wire exactly what
// the app (the controller) and a device built from the talk do
// (docs/protocol.md, "What the talk's app does"). Tests and test tools
// only: the daemon never imports it.
package ktapp

import (
	"encoding/json"
	"fmt"

	"icebox/internal/strictjson"
)

// The data classes of the Kotlin app, as its kotlinx decoder sees them.
type (
	WsPacket struct {
		ID   string `json:"id"`
		Data string `json:"data"`
	}
	WsIceServersData struct {
		IceServers []WsIceServer `json:"iceServers"`
	}
	WsIceServer struct {
		URLs       []string `json:"urls"`
		Username   string   `json:"username,omitempty"`
		Credential string   `json:"credential,omitempty"`
	}
	WsSDPData struct {
		Type         string `json:"type"`
		SDP          string `json:"sdp"`
		ControllerID string `json:"controllerId,omitempty"`
	}
	WsIceCandidatesData struct {
		ControllerID  string               `json:"controllerId,omitempty"`
		IceCandidates []WsIceCandidateData `json:"iceCandidates"`
	}
	WsIceCandidateData struct {
		Candidate     string  `json:"candidate"`
		SDPMLineIndex int     `json:"sdpMLineIndex"`
		SDPMid        *string `json:"sdpMid"`
	}
	WsErrorData struct {
		Code    int    `json:"code"`
		Message string `json:"message"`
	}
	// WsInitData is what icebox's WsInit may carry; the app sends "".
	WsInitData struct {
		ControllerID string `json:"controllerId,omitempty"`
		Token        string `json:"token,omitempty"`
		Presence     bool   `json:"presence,omitzero"` // icebox's page, not the app
	}
)

// Decode decodes a frame sent to the app the way the app would, failing on
// any id or key the app does not know. v is a pointer to the kind's data
// class.
func Decode(msg []byte) (WsPacket, any, error) {
	var p WsPacket
	if err := strictjson.Decode(msg, &p); err != nil {
		return p, nil, fmt.Errorf("frame %s: %w", msg, err)
	}
	var v any
	switch p.ID {
	case "WsIceServers":
		v = &WsIceServersData{}
	case "WsError":
		v = &WsErrorData{}
	case "WsSDPOffer", "WsSDPAnswer":
		v = &WsSDPData{}
	case "WsIceCandidates":
		v = &WsIceCandidatesData{}
	default:
		return p, nil, fmt.Errorf("frame %s: id %q unknown to the app", msg, p.ID)
	}
	if err := strictjson.Decode([]byte(p.Data), v); err != nil {
		return p, nil, fmt.Errorf("frame %s: data: %w", msg, err)
	}
	return p, v, nil
}

// Frame encodes a packet as kotlinx would: data JSON-encoded into a
// string; a string data is taken as it is.
func Frame(id string, data any) []byte {
	s, ok := data.(string)
	if !ok {
		b, err := json.Marshal(data)
		if err != nil {
			panic(err)
		}
		s = string(b)
	}
	b, err := json.Marshal(WsPacket{ID: id, Data: s})
	if err != nil {
		panic(err)
	}
	return b
}
