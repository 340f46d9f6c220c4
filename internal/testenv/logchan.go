package testenv

import (
	"context"
	"log/slog"
	"strings"
)

// LogChan is a slog.Handler that sends each record whose message contains
// match (every record when match is "") to a channel, so that a test waits
// on the events a server logs instead of on time. A record that finds the
// channel full is dropped: the test fails on a count, it never hangs on a
// log call. Records carry only the attributes of the log call itself:
// those added with Logger.With are not kept (WithAttrs returns the same
// handler), which the servers' refusals and events do not need.
type LogChan struct {
	c     chan<- slog.Record
	match string
}

// NewLogChan logs to c the records whose message contains match.
func NewLogChan(c chan<- slog.Record, match string) *LogChan {
	return &LogChan{c: c, match: match}
}

func (h *LogChan) Enabled(context.Context, slog.Level) bool { return true }

func (h *LogChan) Handle(_ context.Context, r slog.Record) error {
	if !strings.Contains(r.Message, h.match) {
		return nil
	}
	select {
	case h.c <- r.Clone():
	default:
	}
	return nil
}

func (h *LogChan) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *LogChan) WithGroup(string) slog.Handler      { return h }

// Attr returns the value of r's attribute key as a string, "" when r has
// none.
func Attr(r slog.Record, key string) string {
	v := ""
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == key {
			v = a.Value.String()
			return false
		}
		return true
	})
	return v
}
