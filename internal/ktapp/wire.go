// Package ktapp plays the talk's Kotlin app in tests: its data classes, its
// strict decoder, and pion/webrtc peers that do on the wire exactly what
// the app (the controller) and a device built from the talk do
// (docs/protocol.md, "What the talk's app does"). Tests and test tools
// only: the daemon never imports it.
package ktapp

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
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
		Presence     bool   `json:"presence,omitempty"` // icebox's page, not the app
	}
)

// StrictDecode decodes like kotlinx with ignoreUnknownKeys=false: unknown
// keys fail (DisallowUnknownFields), and so do keys that only match up to
// case, which encoding/json would let through: the document must survive
// a round trip through v unchanged.
func StrictDecode(data []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if dec.More() {
		return errors.New("trailing data")
	}
	again, err := json.Marshal(v)
	if err != nil {
		return err
	}
	var a, b any
	if err := json.Unmarshal(data, &a); err != nil {
		return err
	}
	if err := json.Unmarshal(again, &b); err != nil {
		return err
	}
	if !reflect.DeepEqual(a, b) {
		return fmt.Errorf("keys differ from the data class: got %s, class has %s", data, again)
	}
	return nil
}

// Decode decodes a frame sent to the app the way the app would, failing on
// any id or key the app does not know. v is a pointer to the kind's data
// class.
func Decode(msg []byte) (WsPacket, any, error) {
	var p WsPacket
	if err := StrictDecode(msg, &p); err != nil {
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
	if err := StrictDecode([]byte(p.Data), v); err != nil {
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
