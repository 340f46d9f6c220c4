package pionlog

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
)

// TestLevelsAndShut: pion's errors reach slog at Debug with the scope,
// its debug output only below Debug, and nothing after Shut.
func TestLevelsAndShut(t *testing.T) {
	var buf bytes.Buffer
	f := New(slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug})))
	l := f.NewLogger("turn")
	l.Errorf("failed to send %s", "ChannelData")
	l.Debugf("packet %d", 1)
	l.Trace("chatter")
	if got := buf.String(); !strings.Contains(got, `level=DEBUG msg="failed to send ChannelData" pion=turn`) || strings.Contains(got, "packet") || strings.Contains(got, "chatter") {
		t.Errorf("at Debug the log reads:\n%s", got)
	}

	buf.Reset()
	f = New(slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: LevelChatter})))
	l = f.NewLogger("turn")
	l.Debugf("packet %d", 1)
	if !strings.Contains(buf.String(), `msg="packet 1" pion=turn`) {
		t.Errorf("at LevelChatter the log reads:\n%s", buf.String())
	}
	f.Shut()
	buf.Reset()
	l.Error("after")
	f.NewLogger("other").Warn("after")
	if buf.Len() != 0 {
		t.Errorf("logged after Shut: %s", buf.String())
	}
}
