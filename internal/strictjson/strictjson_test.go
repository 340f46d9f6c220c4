package strictjson

import "testing"

// sdp stands for a data class with required, optional and nullable
// members.
type sdp struct {
	Type         string  `json:"type"`
	SDP          string  `json:"sdp"`
	ControllerID string  `json:"controllerId,omitempty"`
	Mid          *string `json:"sdpMid"` // nullable, but required
	Presence     bool    `json:"presence,omitzero"`
}

// TestDecode: what the app's kotlinx decoder takes, and what it throws on.
func TestDecode(t *testing.T) {
	for _, tc := range []struct {
		doc string
		ok  bool
	}{
		{`{"type":"offer","sdp":"v=0","sdpMid":"0"}`, true},
		{` {"sdp":"v=0","sdpMid":null,"type":"offer","controllerId":"tv"} `, true},
		{`{"type":"offer","sdp":"v=0","sdpMid":null}`, true},
		{`{"type":"offer","sdp":"v=0","sdpMid":null,"presence":true}`, true},
		{`{"type":"offer","sdp":"v=0"}`, false},                                 // sdpMid missing
		{`{"type":"offer","sdpMid":null,"sdp":"v=0","extra":1}`, false},         // unknown member
		{`{"Type":"offer","sdpMid":null,"sdp":"v=0"}`, false},                   // matches only up to case
		{`{"type":"offer","sdpMid":null,"type":"offer","sdp":"v=0"}`, false},    // duplicate
		{`{"type":"offer","sdpMid":null}`, false},                               // sdp missing
		{`{"type":"offer","sdpMid":null,"sdp":null}`, false},                    // null for a plain string
		{`{"type":"offer","sdpMid":null,"sdp":"v=0"} {}`, false},                // trailing data
		{`{"type":"offer","sdpMid":null,"sdp":1}`, false},                       // wrong type
		{"{\"type\":\"offer\",\"sdpMid\":null,\"sdp\":\"\xff\"}", false},        // invalid UTF-8
		{`{"type":"offer","sdpMid":null,"sdp":"v=0","presence":"true"}`, false}, // a string for a boolean
	} {
		var v sdp
		if err := Decode([]byte(tc.doc), &v); (err == nil) != tc.ok {
			t.Errorf("Decode(%s) = %v, want ok %v", tc.doc, err, tc.ok)
		}
	}
}
