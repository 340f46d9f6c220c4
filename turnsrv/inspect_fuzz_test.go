package turnsrv

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha1" //nolint:gosec // the TURN REST API scheme is HMAC-SHA1 by definition.
	"encoding/base64"
	"encoding/binary"
	"errors"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pion/stun/v3"

	"icebox/internal/stunwire"
)

// The fuzz targets here check the front door every client message passes:
// parseRequest must agree with pion/stun about where the attributes are,
// and inspect must never hand pion a key for a request that does not carry
// a valid, current, in-realm credential, nor let pion see a lifetime above
// quotas.max_lifetime.

const fuzzOldSecret = "old-secret-0123456789abcdef"

// seedExpiry is the expiry of the usernames in the checked-in corpus
// (2100-01-01), so those requests stay valid for FuzzInspect's server,
// whose max_ttl reaches past it.
const seedExpiry = 4102444800

type fuzzSeed struct {
	name string
	raw  []byte
}

// restPasswordRef is the TURN REST password, written out independently of
// restPassword: base64(HMAC-SHA1(secret, username)).
func restPasswordRef(secret, username string) string {
	m := hmac.New(sha1.New, []byte(secret))
	m.Write([]byte(username))
	return base64.StdEncoding.EncodeToString(m.Sum(nil))
}

// turnSeeds builds TURN requests as pion's client sends them, signed for
// username (valid, broken and unsigned), plus what else reaches the port.
func turnSeeds(tb testing.TB, username string) []fuzzSeed {
	tb.Helper()
	var tid [stun.TransactionIDSize]byte
	for i := range tid {
		tid[i] = byte(0xA0 + i)
	}
	txid := setter(func(m *stun.Message) error { m.TransactionID = tid; return nil })
	peer := func(ip string) stun.Setter { return peerAttr(net.ParseIP(ip), 9000) }
	pass := restPasswordRef(testSecret, username)
	creds := func(user, realm, secret string) []stun.Setter {
		return []stun.Setter{stun.NewUsername(user), stun.NewRealm(realm), stun.NewNonce("6e6f6e6365"),
			stun.NewLongTermIntegrity(user, realm, restPasswordRef(secret, user))}
	}
	build := func(method stun.Method, attrs []stun.Setter, auth []stun.Setter, fingerprint bool) []byte {
		s := append([]stun.Setter{txid, stun.NewType(method, stun.ClassRequest)}, attrs...)
		s = append(s, auth...)
		if fingerprint {
			s = append(s, stun.Fingerprint)
		}
		m, err := stun.Build(s...)
		if err != nil {
			tb.Fatal(err)
		}
		return m.Raw
	}
	good := creds(username, testRealm, testSecret)
	alloc := []stun.Setter{udpTransport(), lifetimeAttr(time.Hour)}
	flipped := build(stun.MethodAllocate, alloc, good, true)
	flipped[len(flipped)-9] ^= 1 // last byte of MESSAGE-INTEGRITY
	channelData := append([]byte{0x40, 0x00, 0x00, 0x05}, "hello"...)
	binding := build(stun.MethodBinding, nil, []stun.Setter{stun.NewUsername("remote:local"),
		stun.NewShortTermIntegrity("ice-password")}, true)
	send, err := stun.Build(txid, stun.NewType(stun.MethodSend, stun.ClassIndication), peer("8.8.8.8"),
		rawAttr(stun.AttrData, []byte("payload")))
	if err != nil {
		tb.Fatal(err)
	}
	allocate := build(stun.MethodAllocate, alloc, good, true)
	var seventeen []stun.Setter
	for i := range 17 {
		seventeen = append(seventeen, peer("8.8.8."+strconv.Itoa(i)))
	}
	return []fuzzSeed{
		{"allocate", allocate},
		{"allocate_no_fingerprint", build(stun.MethodAllocate, alloc, good, false)},
		{"allocate_unauthenticated", build(stun.MethodAllocate, []stun.Setter{udpTransport()}, nil, true)},
		{"allocate_old_secret", build(stun.MethodAllocate, alloc, creds(username, testRealm, fuzzOldSecret), true)},
		{"refresh", build(stun.MethodRefresh, []stun.Setter{lifetimeAttr(24 * time.Hour)}, good, true)},
		{"refresh_delete", build(stun.MethodRefresh, []stun.Setter{lifetimeAttr(0)}, good, true)},
		{"create_permission", build(stun.MethodCreatePermission, []stun.Setter{peer("8.8.8.8"), peer("::ffff:127.0.0.1")}, good, true)},
		{"channel_bind", build(stun.MethodChannelBind, []stun.Setter{channelAttr(0x4000), peer("64:ff9b::7f00:1")}, good, true)},
		{"create_permission_refused", build(stun.MethodCreatePermission, []stun.Setter{peer("8.8.8.8"), peer("10.0.0.1")}, good, true)},
		{"channel_bind_refused", build(stun.MethodChannelBind, []stun.Setter{channelAttr(0x4001), peer("::ffff:169.254.169.254")}, good, true)},
		{"create_permission_17_peers", build(stun.MethodCreatePermission, seventeen, good, true)},
		{"channel_bind_short_peer", build(stun.MethodChannelBind, []stun.Setter{channelAttr(0x4002),
			rawAttr(stun.AttrXORPeerAddress, []byte{0, 1, 0x21, 0x12, 0x5e})}, good, true)},
		{"allocate_tcp", build(stun.MethodAllocate, []stun.Setter{rawAttr(stun.AttrRequestedTransport, []byte{6, 0, 0, 0})}, good, true)},
		{"allocate_ipv6", build(stun.MethodAllocate, []stun.Setter{udpTransport(), rawAttr(stun.AttrRequestedAddressFamily, []byte{2, 0, 0, 0})}, good, true)},
		{"allocate_no_nonce", build(stun.MethodAllocate, alloc, []stun.Setter{stun.NewUsername(username),
			stun.NewRealm(testRealm), stun.NewLongTermIntegrity(username, testRealm, pass)}, true)},
		{"bad_mac", flipped},
		{"forged_secret", build(stun.MethodAllocate, alloc, creds(username, testRealm, "another-secret-0123456789"), true)},
		{"wrong_password", build(stun.MethodAllocate, alloc, []stun.Setter{stun.NewUsername(username),
			stun.NewRealm(testRealm), stun.NewNonce("n"), stun.NewLongTermIntegrity(username, testRealm, pass+"x")}, true)},
		{"wrong_realm", build(stun.MethodAllocate, alloc, creds(username, "elsewhere", testSecret), true)},
		{"expired", build(stun.MethodRefresh, nil, creds("1000000000:alice", testRealm, testSecret), true)},
		{"expiry_too_far", build(stun.MethodRefresh, nil, creds("99999999999:alice", testRealm, testSecret), true)},
		{"username_not_rest", build(stun.MethodAllocate, alloc, creds("alice", testRealm, testSecret), true)},
		{"binding_short_term", binding},
		{"send_indication", send.Raw},
		{"channel_data", channelData},
		{"truncated", allocate[:len(allocate)/2]},
		{"http", []byte("GET / HTTP/1.1\r\nHost: turn.example\r\n\r\n")},
	}
}

// FuzzParseRequest compares parseRequest with pion/stun's decoder: every
// message pion decodes as a request must parse, with the same USERNAME,
// REALM, LIFETIME, MESSAGE-INTEGRITY and FINGERPRINT as pion's attribute
// list; and whatever parses must be safe to hash and re-sign.
func FuzzParseRequest(f *testing.F) {
	for _, s := range turnSeeds(f, strconv.Itoa(seedExpiry)+":seed") {
		f.Add(s.raw)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		orig := bytes.Clone(b)
		got, ok := parseRequest(b)
		if !bytes.Equal(b, orig) {
			t.Fatal("parseRequest modified its input")
		}
		m := &stun.Message{Raw: bytes.Clone(b)}
		if m.Decode() == nil && b[0]&0xC0 == 0 && m.Type.Class == stun.ClassRequest {
			want, wantOK := referenceFields(m)
			if ok != wantOK {
				t.Fatalf("parseRequest ok=%v, pion says %v for %x", ok, wantOK, b)
			}
			if ok && !sameFields(got, want) {
				t.Fatalf("parseRequest = %+v, pion's attributes say %+v", got, want)
			}
		}
		if !ok {
			return
		}
		checkLayout(t, b, got)
		if got.integrity != 0 {
			c := bytes.Clone(b)
			key := []byte("k")
			resign(c, got, key)
			if !integrityOK(c, got.integrity, key) {
				t.Fatal("resign did not produce a MESSAGE-INTEGRITY that verifies")
			}
			if !bytes.Equal(c[:got.integrity+4], b[:got.integrity+4]) {
				t.Fatal("resign changed bytes before MESSAGE-INTEGRITY")
			}
		}
	})
}

// referenceFields derives authFields from pion's decoded attribute list:
// the first of each before the first MESSAGE-INTEGRITY, which must be
// 20 bytes, a FINGERPRINT right after it, and no LIFETIME after it.
func referenceFields(m *stun.Message) (f authFields, ok bool) {
	f.method = uint16(m.Type.Method)
	off, mi := stunwire.HeaderSize, -1
	for i, a := range m.Attributes {
		v := off + 4
		switch {
		case a.Type == stun.AttrRequestedTransport && f.transport == 0:
			f.transport = off
		case a.Type == stun.AttrRequestedAddressFamily && f.family == 0:
			f.family = off
		}
		if f.integrity != 0 {
			if i == mi+1 && a.Type == stun.AttrFingerprint && a.Length == 4 {
				f.fingerprint = off
			}
			if a.Type == stun.AttrLifetime {
				return f, false // pion would read a lifetime inspect cannot clamp
			}
		} else {
			switch a.Type {
			case stun.AttrUsername:
				if f.username == nil {
					f.username = m.Raw[v : v+len(a.Value)]
				}
			case stun.AttrRealm:
				if f.realm == nil {
					f.realm = m.Raw[v : v+len(a.Value)]
				}
			case stun.AttrNonce:
				if f.nonce == nil {
					f.nonce = m.Raw[v : v+len(a.Value)]
				}
			case stun.AttrLifetime:
				if a.Length == 4 && f.lifetime == 0 {
					f.lifetime = v
				}
			case stun.AttrMessageIntegrity:
				if a.Length != integrityLen {
					return f, false // pion checks the first one only
				}
				f.integrity, mi = off, i
			}
		}
		off = v + (int(a.Length)+3)&^3
	}
	return f, true
}

func sameFields(a, b authFields) bool {
	return a.method == b.method && bytes.Equal(a.username, b.username) && (a.username == nil) == (b.username == nil) &&
		bytes.Equal(a.realm, b.realm) && (a.realm == nil) == (b.realm == nil) &&
		bytes.Equal(a.nonce, b.nonce) && (a.nonce == nil) == (b.nonce == nil) &&
		a.transport == b.transport && a.family == b.family &&
		a.integrity == b.integrity && a.lifetime == b.lifetime && a.fingerprint == b.fingerprint
}

// checkLayout checks that every offset parseRequest returned points at the
// attribute it claims, inside b.
func checkLayout(t *testing.T, b []byte, f authFields) {
	t.Helper()
	end := stunwire.HeaderSize + int(binary.BigEndian.Uint16(b[2:4]))
	at := func(name string, off int, typ uint16, n int) {
		if off < stunwire.HeaderSize || off+4+n > end || binary.BigEndian.Uint16(b[off:]) != typ || int(binary.BigEndian.Uint16(b[off+2:])) != n {
			t.Fatalf("%s at %d is not a %d-byte attribute %#04x inside %d bytes", name, off, n, typ, end)
		}
	}
	if f.integrity != 0 {
		at("MESSAGE-INTEGRITY", f.integrity, stunwire.AttrIntegrity, integrityLen)
	}
	if f.lifetime != 0 {
		at("LIFETIME", f.lifetime-4, stunwire.AttrLifetime, 4)
		if f.integrity != 0 && f.lifetime > f.integrity {
			t.Fatal("LIFETIME after MESSAGE-INTEGRITY")
		}
	}
	if f.fingerprint != 0 {
		at("FINGERPRINT", f.fingerprint, stunwire.AttrFingerprint, 4)
		if f.fingerprint != f.integrity+4+integrityLen {
			t.Fatal("FINGERPRINT not right after MESSAGE-INTEGRITY")
		}
	}
}

// FuzzInspect runs messages through inspect on a real Server (two secrets,
// max_lifetime 10m, no throttling so the verdict depends on the message
// alone) and checks the verdict against a reference built on pion/stun:
// a key is handed to pion exactly when the request is an Allocate, Refresh,
// CreatePermission or ChannelBind whose REST username is current and within
// max_ttl, whose REALM is ours and whose MESSAGE-INTEGRITY verifies under
// one of the secrets; the message is changed only then, still verifies for
// pion afterwards, and never shows pion a lifetime above max_lifetime.
//
// Every message also goes through a second Server whose realm is 127
// bytes, so its 401s are larger than most requests, with the source's
// ration of unsigned answers spent: inspect then never answers more bytes
// than it got.
//
// sign%3 = 1 or 2 re-signs the fuzzed message with the first or second
// secret first, so mutations reach the authenticated path; src picks a UDP
// IPv4, UDP IPv6 or TCP source.
func FuzzInspect(f *testing.F) {
	cfg := testConfig()
	cfg.Secrets = []string{testSecret, fuzzOldSecret}
	cfg.MaxTTL = 200 * 365 * 24 * time.Hour // past seedExpiry
	cfg.Quotas.MaxLifetime = 10 * time.Minute
	cfg.Quotas.AuthFailures = 0
	quiet := func(o *Options) { o.Logger = slog.New(slog.DiscardHandler) }
	ts := startServer(f, cfg, quiet)
	secrets := cfg.Secrets
	longCfg := cfg
	longCfg.Realm = strings.Repeat("r", 127)
	longCfg.Quotas.AnswerRate = 1
	long := startServer(f, longCfg, quiet)

	for _, s := range turnSeeds(f, strconv.Itoa(seedExpiry)+":seed") {
		f.Add(s.raw, uint8(0), uint8(0))
	}
	u, _, _ := ts.MintCredential("alice", time.Hour)
	for i, s := range turnSeeds(f, u) {
		f.Add(s.raw, uint8(0), uint8(i))
	}

	sources := []net.Addr{
		&net.UDPAddr{IP: net.IPv4(198, 51, 100, 1), Port: 40000},
		&net.UDPAddr{IP: net.ParseIP("2001:db8::1"), Port: 40001},
		&net.TCPAddr{IP: net.IPv4(198, 51, 100, 2), Port: 40002},
	}
	// Each source holds an allocation, so Refresh, CreatePermission and
	// ChannelBind reach pion rather than a 437.
	for _, a := range sources {
		for _, ts := range []*testServer{ts, long} {
			ts.quotas.created("", connIDOf(a))
			defer ts.quotas.deleted("", connIDOf(a))
		}
	}
	f.Fuzz(func(t *testing.T, b []byte, sign, src uint8) {
		if s := int(sign % 3); s > 0 {
			signRef(b, testRealm, secrets[s-1])
		}
		from := sources[int(src)%len(sources)]
		// Spent at a time after inspect's, so no refill is due at its.
		rationSrc := sourceKey(connIDOf(from).src.Addr())
		for long.answers.allow(rationSrc, time.Now().Add(time.Hour), longCfg.Quotas.AnswerRate) {
		}
		checkInspect(t, long, longCfg, bytes.Clone(b), from)
		checkInspect(t, ts, cfg, b, from)
	})
}

// checkInspect is FuzzInspect's check of one message b from from.
func checkInspect(t *testing.T, ts *testServer, cfg Config, b []byte, from net.Addr) {
	t.Helper()
	orig := bytes.Clone(b)
	before := time.Now()
	tr := &capture{}
	pass := ts.inspect(b, from, tr)
	after := time.Now()
	ts.keys.mu.Lock()
	handed := ts.keys.m
	ts.keys.m = nil
	ts.keys.mu.Unlock()

	want := referenceVerdict(orig, cfg, ts.live.Load().policy, before, after)
	if len(handed) > 1 {
		t.Fatalf("inspect handed %d keys for one message", len(handed))
	}
	if len(tr.replies) > 1 || (pass && len(tr.replies) != 0) {
		t.Fatalf("inspect answered %d times and passed=%v", len(tr.replies), pass)
	}
	if len(handed) == 0 {
		if want.ok {
			t.Fatalf("inspect refused a valid request (%x)", orig)
		}
		if !bytes.Equal(b, orig) {
			t.Fatal("inspect changed a message it did not authenticate")
		}
		for _, r := range tr.replies {
			if len(r) > len(orig) {
				t.Fatalf("inspect answered %d bytes to a %d-byte request (realm of %d bytes)", len(r), len(orig), len(cfg.Realm))
			}
			m := &stun.Message{Raw: r}
			if err := m.Decode(); err != nil || m.Type.Class != stun.ClassErrorResponse ||
				!bytes.Equal(r[4:20], orig[4:20]) || stun.Fingerprint.Check(m) != nil {
				t.Fatalf("inspect's answer %x to %x is not a well-formed error response for it (%v)", r, orig, err)
			}
		}
		return
	}
	if !pass {
		t.Fatal("inspect handed a key and dropped the message")
	}
	var slot authSlot
	var vk verifiedKey
	for slot, vk = range handed {
	}
	if !want.ok && !want.unsure {
		t.Fatalf("inspect authenticated %x for %q; reference: %s", orig, slot.user, want.why)
	}
	if want.unsure {
		return
	}
	if slot.conn != connIDOf(from) || slot.user != want.username || !bytes.Equal(vk.key, want.key) {
		t.Fatalf("key handed for %+v %q, want %+v %q with the key for it", slot.conn, slot.user, connIDOf(from), want.username)
	}

	// What pion sees: the same credential, and a MESSAGE-INTEGRITY that
	// still verifies after inspect clamped the lifetime.
	m := &stun.Message{Raw: bytes.Clone(b)}
	if err := m.Decode(); err != nil {
		t.Fatalf("pion cannot decode the message inspect authenticated: %v", err)
	}
	var user stun.Username
	if err := user.GetFrom(m); err != nil || user.String() != slot.user {
		t.Fatalf("pion reads USERNAME %q (%v), inspect %q", user, err, slot.user)
	}
	if err := stun.MessageIntegrity(vk.key).Check(m); err != nil {
		t.Fatalf("MESSAGE-INTEGRITY after inspect: %v", err)
	}
	if want.fingerprint {
		if err := stun.Fingerprint.Check(m); err != nil {
			t.Fatalf("FINGERPRINT after inspect: %v", err)
		}
	}
	if want.method == stun.MethodAllocate || want.method == stun.MethodRefresh {
		// pion grants the first LIFETIME if it is 4 bytes and under an hour.
		if v, err := m.Get(stun.AttrLifetime); err == nil && len(v) == 4 {
			d := time.Duration(binary.BigEndian.Uint32(v)) * time.Second
			if d < time.Hour && d > cfg.Quotas.MaxLifetime {
				t.Fatalf("pion would grant a lifetime of %v, above max_lifetime %v", d, cfg.Quotas.MaxLifetime)
			}
		}
	}
}

// signRef writes a valid MESSAGE-INTEGRITY into b for the credential its
// own USERNAME and realm give under secret, if b has one where
// parseRequest looks.
func signRef(b []byte, realm, secret string) {
	f, ok := parseRequest(b)
	if !ok || f.integrity == 0 {
		return
	}
	user := string(f.username)
	key := stun.NewLongTermIntegrity(user, realm, restPasswordRef(secret, user))
	c := bytes.Clone(b[:f.integrity])
	binary.BigEndian.PutUint16(c[2:4], uint16(f.integrity+4+integrityLen-stunwire.HeaderSize))
	m := hmac.New(sha1.New, key)
	m.Write(c)
	copy(b[f.integrity+4:], m.Sum(nil))
}

type verdict struct {
	ok, unsure  bool // unsure: the expiry is too close to the clock to call
	why         string
	method      stun.Method
	username    string
	key         []byte
	fingerprint bool // the original carried a valid FINGERPRINT
}

// referenceVerdict decides, with pion/stun, whether b is an authenticated
// TURN request icebox must accept, knowing inspect ran between before and
// after.
func referenceVerdict(b []byte, cfg Config, policy *peerPolicy, before, after time.Time) (v verdict) {
	no := func(why string) verdict { v.why = why; return v }
	m := &stun.Message{Raw: bytes.Clone(b)}
	if err := m.Decode(); err != nil {
		return no("pion cannot decode it: " + err.Error())
	}
	if b[0]&0xC0 != 0 || m.Type.Class != stun.ClassRequest {
		return no("not a request")
	}
	v.method = m.Type.Method
	switch v.method {
	case stun.MethodAllocate, stun.MethodRefresh, stun.MethodCreatePermission, stun.MethodChannelBind:
	default:
		return no("not a TURN method that needs a credential")
	}
	var user, realm, nonce []byte
	sawMI := false
	for i, a := range m.Attributes {
		switch {
		case sawMI:
			if a.Type == stun.AttrLifetime {
				return no("LIFETIME after MESSAGE-INTEGRITY")
			}
		case a.Type == stun.AttrUsername && user == nil:
			user = append([]byte{}, a.Value...)
		case a.Type == stun.AttrRealm && realm == nil:
			realm = append([]byte{}, a.Value...)
		case a.Type == stun.AttrNonce && nonce == nil:
			nonce = append([]byte{}, a.Value...)
		case a.Type == stun.AttrMessageIntegrity:
			if a.Length != integrityLen {
				return no("MESSAGE-INTEGRITY is not 20 bytes")
			}
			sawMI = true
			// A FINGERPRINT right after it and last is one inspect keeps valid.
			v.fingerprint = i == len(m.Attributes)-2 && m.Attributes[i+1].Type == stun.AttrFingerprint &&
				len(b) == stunwire.HeaderSize+int(m.Length) && stun.Fingerprint.Check(m) == nil
		}
	}
	if !sawMI {
		return no("no MESSAGE-INTEGRITY")
	}
	if nonce == nil || user == nil || realm == nil {
		return no("no NONCE, USERNAME or REALM before MESSAGE-INTEGRITY: pion answers without a key")
	}
	if why := refusedBeforePion(m, policy); why != "" {
		return no(why)
	}
	if string(realm) != cfg.Realm {
		return no("another realm")
	}
	head, _, _ := strings.Cut(string(user), ":")
	exp, err := strconv.ParseInt(head, 10, 64)
	if err != nil || exp <= 0 {
		return no("username is not <expiry>:<user>")
	}
	expiry := time.Unix(exp, 0)
	switch {
	case !expiry.After(before), expiry.Sub(after) > cfg.MaxTTL:
		return no("expired or too far ahead")
	case !expiry.After(after), expiry.Sub(before) > cfg.MaxTTL:
		v.unsure = true
		return v
	}
	for _, secret := range cfg.Secrets {
		key := stun.NewLongTermIntegrity(string(user), cfg.Realm, restPasswordRef(secret, string(user)))
		if stun.MessageIntegrity(key).Check(m) == nil {
			v.ok, v.username, v.key = true, string(user), key
			return v
		}
	}
	return no("MESSAGE-INTEGRITY verifies under no secret")
}

// refusedBeforePion says why icebox answers an authenticated request m
// itself, from pion/stun's reading of it: a transport other than UDP, an
// IPv6 relay, a peer or channel number after MESSAGE-INTEGRITY, a peer
// address that is not whole, more than 16 peers in a
// CreatePermission, a peer the policy refuses or an IPv6 peer (every
// XOR-PEER-ADDRESS pion decodes for CreatePermission, the first for
// ChannelBind).
func refusedBeforePion(m *stun.Message, policy *peerPolicy) string {
	switch m.Type.Method {
	case stun.MethodAllocate:
		if v, err := m.Get(stun.AttrRequestedTransport); err == nil && len(v) == 4 && v[0] != 17 {
			return "REQUESTED-TRANSPORT is not UDP"
		}
		if v, err := m.Get(stun.AttrRequestedAddressFamily); err == nil && len(v) == 4 && v[0] == 2 {
			return "REQUESTED-ADDRESS-FAMILY is IPv6"
		}
	case stun.MethodCreatePermission, stun.MethodChannelBind:
		sawMI := false
		for _, a := range m.Attributes {
			switch {
			case a.Type == stun.AttrMessageIntegrity:
				sawMI = true
			case sawMI && (a.Type == stun.AttrXORPeerAddress || a.Type == stun.AttrChannelNumber):
				return "a peer or channel number after MESSAGE-INTEGRITY"
			}
		}
		n := 0
		for _, a := range m.Attributes {
			if a.Type != stun.AttrXORPeerAddress {
				continue
			}
			n++
			if len(a.Value) < 4 || !(len(a.Value) == 8 && a.Value[1] == 1 && a.Value[0] == 0 ||
				len(a.Value) == 20 && a.Value[1] == 2 && a.Value[0] == 0) {
				return "an XOR-PEER-ADDRESS is not a whole IPv4 or IPv6 address"
			}
		}
		if m.Type.Method == stun.MethodCreatePermission && n > 16 {
			return "more than 16 peers"
		}
		why := ""
		m.ForEach(stun.AttrXORPeerAddress, func(m *stun.Message) error {
			var a stun.XORMappedAddress
			if err := a.GetFromAs(m, stun.AttrXORPeerAddress); err != nil {
				return err
			}
			if policy.refusal(a.IP) != "" {
				why = "peer refused"
				return errors.New(why)
			}
			if len(a.IP) != net.IPv4len {
				why = "IPv6 peer of an IPv4 relay"
				return errors.New(why)
			}
			if m.Type.Method == stun.MethodChannelBind {
				return errors.New("ChannelBind reads only the first")
			}
			return nil
		})
		return why
	}
	return ""
}
