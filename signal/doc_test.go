package signal

import (
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestProtocolDoc: the wire protocol is documented in the repository, in
// docs/protocol.md, with every kind and every WsError code the server
// knows, and nothing in the repository points to a copy outside it (a
// clone has no shared/ directory).
func TestProtocolDoc(t *testing.T) {
	doc, err := os.ReadFile("../docs/protocol.md")
	if err != nil {
		t.Fatalf("the protocol is not in the repository: %v", err)
	}
	text := string(doc)
	for k := kindInit; k < numKinds; k++ {
		if !strings.Contains(text, "| `"+k.String()+"`") {
			t.Errorf("docs/protocol.md has no row for kind %s", k)
		}
	}
	for c := firstCode; c < firstCode+errCode(numCodes); c++ {
		if !strings.Contains(text, "| "+strconv.Itoa(int(c))+" |") {
			t.Errorf("docs/protocol.md has no row for WsError %d (%s)", c, c.info().name)
		}
	}
	for _, key := range []string{`"presence"`, "`controllerId`", "`token`", "`event`", "`peers`", "/ice-servers", "5 minutes"} {
		if !strings.Contains(text, key) {
			t.Errorf("docs/protocol.md does not mention %s", key)
		}
	}
	if msg := errBadFrame.info().message; !strings.Contains(msg, "docs/protocol.md") {
		t.Errorf("WsError 4000 says %q; want it to point to docs/protocol.md", msg)
	}
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(readme), "(docs/protocol.md)") {
		t.Error("README.md does not link docs/protocol.md")
	}
	old := "shared/" + "PROTOCOL.md" // spelt so that this file does not match
	err = filepath.WalkDir("..", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (d.Name() == ".git" || d.Name() == "bin" || d.Name() == "testdata") {
			return filepath.SkipDir
		}
		switch filepath.Ext(path) {
		case ".go", ".js", ".html", ".md", ".yaml":
		default:
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		if strings.Contains(string(b), old) {
			t.Errorf("%s points to %s, which a clone does not have; point to docs/protocol.md", path, old)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
