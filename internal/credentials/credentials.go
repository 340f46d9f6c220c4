// Package credentials keeps icebox's TURN secret and makes TURN REST API
// credentials (coturn's use-auth-secret) from it: where the secret comes
// from, how a credential is minted, read back and turned into the key a
// request is signed with.
package credentials

import (
	"bufio"
	"bytes"
	"crypto/hmac"
	"crypto/md5" //nolint:gosec // RFC 5389 long-term credentials are MD5 by definition.
	"crypto/rand"
	"crypto/sha1" //nolint:gosec // the TURN REST API scheme is HMAC-SHA1 by definition.
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// Sources are the places a config names for secrets (the turn section's
// secrets, secret_file and secret_env).
type Sources struct {
	Secrets []string
	File    string
	Env     string
}

// MinSecretLen is the shortest secret icebox accepts from any source: a
// credential is an HMAC of the secret, so whoever holds one credential
// can guess a short secret offline and then mint credentials and join
// tokens of their own.
const MinSecretLen = 16

// ErrShortSecret is wrapped by Load's error for a secret shorter than
// MinSecretLen; the error names where the secret came from, never the
// secret.
var ErrShortSecret = fmt.Errorf("the secret is shorter than %d characters, so one credential is enough to guess it", MinSecretLen)

// StateFileName is the file in the state directory that keeps the secret
// icebox generates when none is configured. Its format is SecretFile's, so
// an operator can point other tools (coturn's static-auth-secret) at it.
const StateFileName = "turn-secret"

// Load returns the TURN REST secrets src names: src.Secrets, then the
// lines of src.File, then the value of src.Env, duplicates removed; the first one mints. A source that is configured but missing or
// empty is an error rather than silently skipped, so a typo cannot make
// icebox fall back to another secret; so is a secret shorter than
// MinSecretLen from any source (ErrShortSecret).
//
// With no source configured it returns the secret kept in stateDir; if
// there is none and generate is true it creates a random one there (mode
// 0600), so restarts don't invalidate credentials already handed out.
// Callers must never log the result.
func Load(src Sources, stateDir string, generate bool) ([][]byte, error) {
	var out [][]byte
	add := func(s string) {
		for _, o := range out {
			if string(o) == s {
				return
			}
		}
		out = append(out, []byte(s))
	}
	for i, s := range src.Secrets {
		if s == "" {
			continue
		}
		if len(s) < MinSecretLen {
			return nil, fmt.Errorf("turn.secrets[%d]: %w", i, ErrShortSecret)
		}
		add(s)
	}
	if src.File != "" {
		lines, err := readSecretFile(src.File)
		if err != nil {
			return nil, err
		}
		if len(lines) == 0 {
			return nil, fmt.Errorf("turn secret_file %s holds no secret", src.File)
		}
		for _, s := range lines {
			add(s)
		}
	}
	if src.Env != "" {
		v := strings.TrimSpace(os.Getenv(src.Env))
		if v == "" {
			return nil, fmt.Errorf("turn secret_env: environment variable %s is unset or empty", src.Env)
		}
		if len(v) < MinSecretLen {
			return nil, fmt.Errorf("turn secret_env: environment variable %s: %w", src.Env, ErrShortSecret)
		}
		add(v)
	}
	if len(out) > 0 {
		return out, nil
	}
	return stateSecret(stateDir, generate)
}

// readSecretFile returns the secrets in the file at path, one a line, or
// an error naming the line of one shorter than MinSecretLen.
func readSecretFile(path string) ([]string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("turn secret file: %w", err)
	}
	var lines []string
	sc := bufio.NewScanner(bytes.NewReader(b))
	for n := 1; sc.Scan(); n++ {
		l := strings.TrimSpace(sc.Text())
		if l == "" || strings.HasPrefix(l, "#") {
			continue
		}
		if len(l) < MinSecretLen {
			return nil, fmt.Errorf("turn secret file %s, line %d: %w", path, n, ErrShortSecret)
		}
		lines = append(lines, l)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("turn secret file %s: %w", path, err)
	}
	return lines, nil
}

// stateSecret reads, or creates, the generated secret in stateDir.
func stateSecret(stateDir string, generate bool) ([][]byte, error) {
	if stateDir == "" {
		return nil, errors.New("turn: no secret configured and no state directory to keep a generated one")
	}
	path := filepath.Join(stateDir, StateFileName)
	lines, err := readSecretFile(path)
	switch {
	case err == nil && len(lines) > 0:
		return [][]byte{[]byte(lines[0])}, nil
	case err == nil:
		return nil, fmt.Errorf("turn: %s holds no secret; delete it to have a new one generated", path)
	case !errors.Is(err, os.ErrNotExist):
		return nil, err
	case !generate:
		return nil, fmt.Errorf("turn: no secret configured and none generated yet in %s (start icebox once, or set turn.secrets)", stateDir)
	}

	if err := os.MkdirAll(stateDir, 0o700); err != nil {
		return nil, fmt.Errorf("turn: state directory: %w", err)
	}
	var raw [32]byte
	if _, err := rand.Read(raw[:]); err != nil {
		return nil, fmt.Errorf("turn: generating secret: %w", err)
	}
	// A printable secret works in coturn's config and on a command line.
	secret := base64.RawURLEncoding.EncodeToString(raw[:])

	// Write to a temporary name, then link: if two processes race, exactly
	// one secret wins and both use it.
	tmp, err := os.CreateTemp(stateDir, StateFileName+".tmp*")
	if err != nil {
		return nil, fmt.Errorf("turn: writing generated secret: %w", err)
	}
	defer os.Remove(tmp.Name())
	_, err = tmp.WriteString(secret + "\n")
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return nil, fmt.Errorf("turn: writing generated secret: %w", err)
	}
	// CreateTemp already made it 0600.
	if err := os.Link(tmp.Name(), path); err != nil && !errors.Is(err, os.ErrExist) {
		return nil, fmt.Errorf("turn: keeping generated secret: %w", err)
	}
	return stateSecret(stateDir, false)
}

// WarnLooseFile warns when the secret file at path is readable by others.
func WarnLooseFile(log *slog.Logger, path string) {
	if path == "" {
		return
	}
	if fi, err := os.Stat(path); err == nil && fi.Mode().Perm()&0o077 != 0 {
		log.Warn("turn: secret_file is readable by others; chmod 600 it", "file", path, "mode", fi.Mode().Perm())
	}
}

// Mint returns a TURN REST API credential for user, valid for ttl from
// now: username "<unix expiry>:<user>" (just "<unix expiry>" when user is
// empty) and password base64(HMAC-SHA1(secret, username)), as coturn's
// use-auth-secret and eturnal expect.
func Mint(secret []byte, user string, ttl time.Duration, now time.Time) (username, password string, expires time.Time) {
	exp := now.Add(ttl).Unix()
	username = strconv.FormatInt(exp, 10)
	if user != "" {
		username += ":" + user
	}
	return username, Password(secret, username), time.Unix(exp, 0)
}

// Password is the TURN REST password of username under secret. pion/turn
// computes the same in GenerateLongTermTURNRESTCredentials, but only for
// a username it makes itself from the wall clock, always with a ':'.
func Password(secret []byte, username string) string {
	mac := hmac.New(sha1.New, secret)
	mac.Write([]byte(username))
	var sum [sha1.Size]byte
	return base64.StdEncoding.EncodeToString(mac.Sum(sum[:0]))
}

// LongTermKey is the key a request by username is signed with: RFC 5389's
// long-term credential key, MD5(username ":" realm ":" password), for the
// REST password under secret. pion/turn's GenerateAuthKey computes the
// same (a test holds them equal) but goes through fmt and strings.Join:
// six more allocations on every authenticated request
// (BenchmarkInspectSignedRequest, 31 → 37 allocs/op).
func LongTermKey(secret []byte, username, realm string) []byte {
	h := md5.New() //nolint:gosec
	h.Write([]byte(username))
	h.Write([]byte{':'})
	h.Write([]byte(realm))
	h.Write([]byte{':'})
	h.Write([]byte(Password(secret, username)))
	return h.Sum(nil)
}

// ParseUsername reads a REST username, "<unix expiry>[:<user>]".
func ParseUsername(username string) (expiry time.Time, user string, ok bool) {
	ts, user, _ := strings.Cut(username, ":")
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil || sec <= 0 {
		return time.Time{}, "", false
	}
	return time.Unix(sec, 0), user, true
}
