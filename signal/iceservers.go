package signal

import (
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// serveICEServers answers GET /ice-servers, for apps that keep their own
// signaling but want icebox's TURN, the way Twilio's and Cloudflare's TURN
// APIs work: a backend holding a bearer key fetches the same JSON the app
// would get in WsIceServers, and the Expires header says when the
// credentials run out. ?user= names whom the credentials are for.
func (s *Server) serveICEServers(w http.ResponseWriter, r *http.Request) {
	set := s.settings()
	if len(set.iceKeys) == 0 {
		http.NotFound(w, r)
		return
	}
	key, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok || !keyAllowed(set.iceKeys, key) {
		w.Header().Set("WWW-Authenticate", `Bearer realm="icebox"`)
		http.Error(w, "a valid bearer key is required", http.StatusUnauthorized)
		return
	}
	if ok, wait := s.mints.take(set, set.clientKey(r), mintViaHTTP); !ok {
		// Whole seconds, rounded up, so that a client that waits as told
		// finds a credential.
		w.Header().Set("Retry-After", strconv.Itoa(int((wait+time.Second-1)/time.Second)))
		http.Error(w, "credential budget of this address spent, see Retry-After", http.StatusTooManyRequests)
		return
	}
	servers, exp := s.iceServers(appUser(r.URL.Query().Get("user")))
	body, err := json.Marshal(iceServersData{servers})
	if err != nil {
		s.log.Error("signal: encode ICE servers", "err", err)
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store") // the body holds credentials
	if !exp.IsZero() {
		h.Set("Expires", exp.UTC().Format(http.TimeFormat))
	}
	w.Write(body)
}

// appUser is the TURN user of credentials fetched from /ice-servers: the
// backend's ?user= (its own user or call id, so TURN's per-user quota
// counts it), or a random one when the backend names none.
func appUser(name string) string {
	if name == "" {
		return randomID()
	}
	return namedTURNUser("app-", name)
}
