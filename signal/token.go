package signal

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"strconv"
	"strings"
	"time"
)

// Join tokens let an app backend decide who may enter a pairing without
// talking to icebox: both hold the same key.
//
//	token = EXPIRY "." base64url(HMAC-SHA256(key, "icebox-join-v1:" ROOM ":" EXPIRY))
//
// EXPIRY is the expiry as decimal Unix seconds, ROOM the controllerId, and
// base64url is RFC 4648 §5 without padding. EXPIRY is digits only, so the
// last ':' of the signed text separates it from a ROOM that contains ':'.
// A token is checked when its connection joins the pairing; a connection
// that joined stays when the token expires later.

const tokenContext = "icebox-join-v1:"

// MintToken returns a join token for room, valid until expiry.
func MintToken(key []byte, room string, expiry time.Time) string {
	exp := strconv.FormatInt(expiry.Unix(), 10)
	return exp + "." + base64.RawURLEncoding.EncodeToString(tokenMAC(key, room, exp))
}

func tokenMAC(key []byte, room, exp string) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(tokenContext))
	m.Write([]byte(room))
	m.Write([]byte{':'})
	m.Write([]byte(exp))
	return m.Sum(nil)
}

// Why a token was refused, for the debug log.
var (
	errTokenMalformed = errors.New("join token malformed")
	errTokenExpired   = errors.New("join token expired")
	errTokenInvalid   = errors.New("join token not valid for this pairing")
)

// VerifyToken checks that token was minted by one of keys for room and has
// not expired at now.
func VerifyToken(keys [][]byte, room, token string, now time.Time) error {
	exp, sig, err := splitToken(token)
	if err != nil {
		return err
	}
	if !now.Before(exp) {
		return errTokenExpired
	}
	exps := token[:strings.IndexByte(token, '.')]
	for _, k := range keys {
		if hmac.Equal(sig, tokenMAC(k, room, exps)) {
			return nil
		}
	}
	return errTokenInvalid
}

// checkTokenForm checks what can be checked before the pairing is known.
func checkTokenForm(token string, now time.Time) error {
	exp, _, err := splitToken(token)
	if err == nil && !now.Before(exp) {
		err = errTokenExpired
	}
	return err
}

func splitToken(token string) (time.Time, []byte, error) {
	exps, sigs, ok := strings.Cut(token, ".")
	if !ok || exps == "" || len(exps) > 19 || strings.Trim(exps, "0123456789") != "" {
		return time.Time{}, nil, errTokenMalformed
	}
	sec, err := strconv.ParseInt(exps, 10, 64)
	if err != nil {
		return time.Time{}, nil, errTokenMalformed
	}
	// Only the canonical spelling of a signature: exactly 43 characters
	// (the decoder skips CR and LF) with the 2 spare bits zero (Strict).
	if len(sigs) != base64.RawURLEncoding.EncodedLen(sha256.Size) {
		return time.Time{}, nil, errTokenMalformed
	}
	sig, err := base64.RawURLEncoding.Strict().DecodeString(sigs)
	if err != nil || len(sig) != sha256.Size {
		return time.Time{}, nil, errTokenMalformed
	}
	return time.Unix(sec, 0), sig, nil
}
