package signal

import (
	"encoding/json"

	"github.com/gorilla/websocket"
)

// errCode is the "code" of a WsError frame. Codes are part of the wire
// contract: apps switch on them, so a code never changes meaning. They sit
// in 4000-4099, the range RFC 6455 leaves to applications, so they cannot
// be mistaken for HTTP statuses or WebSocket close codes.
type errCode int

const (
	errBadFrame      errCode = 4000 // not {"id","data"} JSON, bad data for its kind, binary, or invalid UTF-8
	errUnknownKind   errCode = 4001 // an id icebox does not know
	errForbiddenKind errCode = 4002 // a client sent WsIceServers, WsError or WsPresence
	errTooLarge      errCode = 4003 // frame over max_frame_size; closes 1009
	errRateLimited   errCode = 4004 // over frames_per_second / frame_burst
	errRoomFull      errCode = 4005 // the pairing has room_capacity members; closes 1008
	errNotAuthorised errCode = 4006 // join token missing, malformed, expired or for another pairing; closes 1008
	errOrigin        errCode = 4007 // browser Origin not in allowed_origins; closes 1008
	errNoInit        errCode = 4008 // first frame not WsInit, or none within init_timeout; closes 1008
	errNoPairing     errCode = 4009 // frame to forward before the connection named a controllerId
	errWrongPairing  errCode = 4010 // controllerId differs from the connection's pairing
	errDuplicateInit errCode = 4011 // a second WsInit
	errBusy          errCode = 4012 // max_conns or max_conns_per_ip reached, or shutting down; closes 1013
	errTooManyErrors errCode = 4013 // max_errors refused frames; closes 1008
	errInternal      errCode = 4014 // icebox could not build the ICE server list; closes 1011
	// errClusterUnavailable: the join needs the other nodes of a cluster,
	// which cannot be reached; closes 1013.
	errClusterUnavailable errCode = 4015
	// errMintLimited: the connection's source (IPv4 address or IPv6 /64)
	// has had credentials_per_minute / credential_burst TURN credentials
	// minted; closes 1013.
	errMintLimited errCode = 4016

	firstCode = errBadFrame
	numCodes  = int(errMintLimited-firstCode) + 1
)

// errInfo says what a code means on the wire and in metrics.
type errInfo struct {
	name    string // metrics label
	message string // WsError "message": fixed text, never echoes client input
	close   int    // WebSocket close code sent after the WsError; 0 keeps the connection
}

func (c errCode) info() errInfo {
	if c < firstCode || int(c-firstCode) >= numCodes {
		return errInfo{"unknown", "unknown error", websocket.CloseInternalServerErr}
	}
	return errInfos[c-firstCode]
}

// errInfos is what each code means, in code order from firstCode.
var errInfos = [numCodes]errInfo{
	errBadFrame - firstCode:           {"bad_frame", "malformed frame: want {\"id\":kind,\"data\":string} with the keys of icebox's docs/protocol.md", 0},
	errUnknownKind - firstCode:        {"unknown_kind", "unknown frame id", 0},
	errForbiddenKind - firstCode:      {"forbidden_kind", "clients may not send WsIceServers, WsError or WsPresence", 0},
	errTooLarge - firstCode:           {"too_large", "frame too large", websocket.CloseMessageTooBig},
	errRateLimited - firstCode:        {"rate_limited", "too many frames, slow down", 0},
	errRoomFull - firstCode:           {"room_full", "this pairing is full", websocket.ClosePolicyViolation},
	errNotAuthorised - firstCode:      {"not_authorised", "join token missing, invalid, expired or for another pairing", websocket.ClosePolicyViolation},
	errOrigin - firstCode:             {"origin", "origin not allowed", websocket.ClosePolicyViolation},
	errNoInit - firstCode:             {"no_init", "the first frame must be WsInit", websocket.ClosePolicyViolation},
	errNoPairing - firstCode:          {"no_pairing", "no controllerId yet: name the pairing first", 0},
	errWrongPairing - firstCode:       {"wrong_pairing", "controllerId differs from this connection's pairing", 0},
	errDuplicateInit - firstCode:      {"duplicate_init", "WsInit was already received", 0},
	errBusy - firstCode:               {"busy", "server busy, try again later", websocket.CloseTryAgainLater},
	errTooManyErrors - firstCode:      {"too_many_errors", "too many refused frames", websocket.ClosePolicyViolation},
	errInternal - firstCode:           {"internal", "internal error", websocket.CloseInternalServerErr},
	errClusterUnavailable - firstCode: {"cluster_unavailable", "this pairing may have members on another node, which cannot be reached now: try again later", websocket.CloseTryAgainLater},
	errMintLimited - firstCode:        {"credential_budget", "this address has been given too many TURN credentials: try again later", websocket.CloseTryAgainLater},
}

// errorFrames holds every WsError frame, built once so that refusing a
// flood of garbage costs no allocation. The frames are never changed:
// send copies them.
type errorFrames [numCodes][]byte

func newErrorFrames() *errorFrames {
	var t errorFrames
	for i := range t {
		c := firstCode + errCode(i)
		t[i] = mustFrame(kindError, struct {
			Code    int    `json:"code"`
			Message string `json:"message"`
		}{int(c), c.info().message})
	}
	return &t
}

func (t *errorFrames) get(c errCode) []byte { return t[c-firstCode] }

// encodeFrame builds a server frame: data is JSON-encoded, then carried as
// a string, the double encoding kotlinx produces.
func encodeFrame(k kind, data any) ([]byte, error) {
	inner, err := json.Marshal(data)
	if err != nil {
		return nil, err
	}
	return json.Marshal(struct {
		ID   string `json:"id"`
		Data string `json:"data"`
	}{k.String(), string(inner)})
}

func mustFrame(k kind, data any) []byte {
	b, err := encodeFrame(k, data)
	if err != nil {
		panic(err) // only called with fixed, marshalable values
	}
	return b
}
