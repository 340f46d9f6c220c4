package credentials

import (
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pion/turn/v4"
)

func TestMint(t *testing.T) {
	// Expected password from: echo -n 1700000000:alice |
	//   openssl dgst -sha1 -hmac north-secret-0123456789 -binary | base64
	now := time.Unix(1700000000-3600, 0)
	u, p, exp := Mint([]byte("north-secret-0123456789"), "alice", time.Hour, now)
	if u != "1700000000:alice" || p != "rX4Zi/ISDg1rXPMR9j/yhCbVFZ4=" || !exp.Equal(time.Unix(1700000000, 0)) {
		t.Errorf("got %q %q %v", u, p, exp)
	}
	if u, _, _ := Mint([]byte("x"), "", time.Hour, now); u != "1700000000" {
		t.Errorf("username without user = %q", u)
	}
}

// TestLongTermKey: a known vector, from
// echo -n 1700000000:alice:icebox:rX4Zi/ISDg1rXPMR9j/yhCbVFZ4= | md5sum
func TestLongTermKey(t *testing.T) {
	got := LongTermKey([]byte("north-secret-0123456789"), "1700000000:alice", "icebox")
	if hex.EncodeToString(got) != "da9d962aad2dc3e00e5a8fe26e694dbb" {
		t.Errorf("got %x", got)
	}
	if want := turn.GenerateAuthKey("1700000000:alice", "icebox", "rX4Zi/ISDg1rXPMR9j/yhCbVFZ4="); string(got) != string(want) {
		t.Errorf("got %x, pion/turn's GenerateAuthKey %x", got, want)
	}
}

func TestLoad(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "secrets")
	if err := os.WriteFile(file, []byte("# rotated 2025-01\nfile-one-0123456789abcdef\n\n  file-two-0123456789abcdef  \n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("ICEBOX_TEST_TURN_SECRET", "env-secret-0123456789abcdef")

	src := Sources{
		Secrets: []string{"conf-secret-0123456789abcdef", "file-two-0123456789abcdef"},
		File:    file,
		Env:     "ICEBOX_TEST_TURN_SECRET",
	}
	got, err := Load(src, "", false)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"conf-secret-0123456789abcdef", "file-two-0123456789abcdef", "file-one-0123456789abcdef", "env-secret-0123456789abcdef"}
	if !slices.EqualFunc(got, want, func(a []byte, b string) bool { return string(a) == b }) {
		t.Errorf("got %q, want %q", got, want)
	}

	for name, mut := range map[string]func(*Sources){
		"missing file": func(c *Sources) { c.File = filepath.Join(dir, "nope") },
		"empty file":   func(c *Sources) { c.File = os.DevNull },
		"unset env":    func(c *Sources) { c.Env = "ICEBOX_TEST_UNSET_VARIABLE" },
	} {
		var c Sources
		mut(&c)
		if _, err := Load(c, dir, true); err == nil {
			t.Errorf("%s: no error", name)
		}
	}

	// Nothing configured: generated once, kept private, reused.
	state := filepath.Join(dir, "state")
	if _, err := Load(Sources{}, state, false); err == nil {
		t.Error("no secret and generate=false: no error")
	}
	first, err := Load(Sources{}, state, true)
	if err != nil || len(first) != 1 || len(first[0]) < 32 {
		t.Fatalf("generated %d secrets, %v", len(first), err)
	}
	fi, err := os.Stat(filepath.Join(state, StateFileName))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("secret file: %v, %v", fi, err)
	}
	again, err := Load(Sources{}, state, false)
	if err != nil || string(again[0]) != string(first[0]) {
		t.Error("the generated secret was not kept")
	}
}

// TestLoadRefusesShortSecrets: a secret shorter than MinSecretLen is
// refused from every source, with an error that names the source (and
// the line of a file) but never the secret; one of MinSecretLen is kept.
func TestLoadRefusesShortSecrets(t *testing.T) {
	dir := t.TempDir()
	const short = "s3cr3t"
	long := strings.Repeat("k", MinSecretLen)
	file := filepath.Join(dir, "secrets")
	if err := os.WriteFile(file, []byte("# rotated\n"+long+"\n"+short+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	state := filepath.Join(dir, "state")
	if err := os.MkdirAll(state, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(state, StateFileName), []byte(short+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("ICEBOX_TEST_SHORT_SECRET", short)
	t.Setenv("ICEBOX_TEST_LONG_SECRET", long)
	for _, tc := range []struct {
		name  string
		src   Sources
		state string
		want  string
	}{
		{"secret_file", Sources{File: file}, "", file + ", line 3"},
		{"secret_env", Sources{Env: "ICEBOX_TEST_SHORT_SECRET"}, "", "ICEBOX_TEST_SHORT_SECRET"},
		{"secrets", Sources{Secrets: []string{long, short}}, "", "turn.secrets[1]"},
		{"state file", Sources{}, state, filepath.Join(state, StateFileName) + ", line 1"},
	} {
		_, err := Load(tc.src, tc.state, false)
		if !errors.Is(err, ErrShortSecret) || !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), short) {
			t.Errorf("%s: %v; want ErrShortSecret naming %q, not the secret", tc.name, err, tc.want)
		}
	}
	got, err := Load(Sources{Secrets: []string{long}, Env: "ICEBOX_TEST_LONG_SECRET"}, "", false)
	if err != nil || len(got) != 1 || string(got[0]) != long {
		t.Errorf("a secret of %d characters: %q, %v", MinSecretLen, got, err)
	}
}
