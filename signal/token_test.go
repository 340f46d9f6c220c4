package signal

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"strings"
	"testing"
	"time"
)

func TestToken(t *testing.T) {
	key, other := []byte("key-one"), []byte("key-two")
	now := time.Unix(1764000000, 0)
	exp := now.Add(10 * time.Minute)
	tok := MintToken(key, "tv:42", exp)

	// The documented scheme, computed independently.
	m := hmac.New(sha256.New, key)
	m.Write([]byte("icebox-join-v1:tv:42:1764000600"))
	if want := "1764000600." + base64.RawURLEncoding.EncodeToString(m.Sum(nil)); tok != want {
		t.Fatalf("MintToken = %q, want %q", tok, want)
	}

	for _, tc := range []struct {
		keys  [][]byte
		room  string
		token string
		now   time.Time
		want  error
	}{
		{[][]byte{key}, "tv:42", tok, now, nil},
		{[][]byte{other, key}, "tv:42", tok, now, nil},
		{[][]byte{other}, "tv:42", tok, now, errTokenInvalid},
		{[][]byte{key}, "tv:43", tok, now, errTokenInvalid},
		{[][]byte{key}, "tv", MintToken(key, "tv", exp), exp, errTokenExpired},
		{[][]byte{key}, "tv:42", "", now, errTokenMalformed},
		{[][]byte{key}, "tv:42", "1764000600", now, errTokenMalformed},
		{[][]byte{key}, "tv:42", "-1." + strings.Split(tok, ".")[1], now, errTokenMalformed},
		{[][]byte{key}, "tv:42", "1764000600.!!!", now, errTokenMalformed},
		{[][]byte{key}, "tv:42", "1764000600.YWJj", now, errTokenMalformed},
		{nil, "tv:42", tok, now, errTokenInvalid},
	} {
		if err := VerifyToken(tc.keys, tc.room, tc.token, tc.now); !errors.Is(err, tc.want) {
			t.Errorf("VerifyToken(%q, %q) = %v, want %v", tc.room, tc.token, err, tc.want)
		}
	}
}
