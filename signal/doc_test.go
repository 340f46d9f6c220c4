package signal

import (
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
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
	rows := errorRows(t, text)
	for c := firstCode; c < firstCode+errCode(numCodes); c++ {
		then, ok := rows[int(c)]
		switch want := c.info().close; {
		case !ok:
			t.Errorf("docs/protocol.md has no row for WsError %d (%s)", c, c.info().name)
		case then != want:
			t.Errorf("docs/protocol.md says WsError %d (%s) %s; the server %s", c, c.info().name, thenText(then), thenText(want))
		}
	}
	if len(rows) != numCodes {
		t.Errorf("docs/protocol.md lists %d WsError codes, the server knows %d", len(rows), numCodes)
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
	if len(errorRows(t, string(readme))) != 0 {
		t.Error("README.md has a WsError table of its own; link to docs/protocol.md#errors instead")
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

// errorRows reads the WsError table of a Markdown document: each row
// "| code | cause | then |", then being "stays open" (0) or "closes N"
// (close code N). A row it cannot read is an error.
func errorRows(t *testing.T, doc string) map[int]int {
	t.Helper()
	rows := make(map[int]int)
	for _, line := range strings.Split(doc, "\n") {
		cells := strings.Split(strings.Trim(strings.TrimSpace(line), "|"), "|")
		if len(cells) != 3 {
			continue
		}
		code, err := strconv.Atoi(strings.TrimSpace(cells[0]))
		if err != nil || code < 4000 || code > 4099 {
			continue
		}
		then := strings.TrimSpace(cells[2])
		closeCode := 0
		if n, ok := strings.CutPrefix(then, "closes "); ok {
			if closeCode, err = strconv.Atoi(n); err != nil {
				t.Errorf("WsError %d row: %q is neither \"stays open\" nor \"closes N\"", code, then)
				continue
			}
		} else if then != "stays open" {
			t.Errorf("WsError %d row: %q is neither \"stays open\" nor \"closes N\"", code, then)
			continue
		}
		if _, dup := rows[code]; dup {
			t.Errorf("WsError %d has two rows", code)
		}
		rows[code] = closeCode
	}
	return rows
}

func thenText(closeCode int) string {
	if closeCode == 0 {
		return "stays open"
	}
	return "closes " + strconv.Itoa(closeCode)
}

// TestMetricsDocumented: README.md names every metric the signaling
// server exports, with its labels.
func TestMetricsDocumented(t *testing.T) {
	reg := prometheus.NewRegistry()
	if _, err := New(testConfig(), Options{Registerer: reg}); err != nil {
		t.Fatal(err)
	}
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		var labels []string
		if ms := f.GetMetric(); len(ms) > 0 {
			for _, l := range ms[0].GetLabel() {
				labels = append(labels, l.GetName())
			}
		}
		name := "`" + f.GetName()
		if len(labels) > 0 {
			name += "{" + strings.Join(labels, ",") + "}"
		}
		if !strings.Contains(string(readme), name+"`") {
			t.Errorf("README.md does not list %s`", name)
		}
	}
}
