// Package pionlog sends pion's logs (pion/turn's server, pion's TURN
// client) to log/slog, at levels that suit icebox's operators.
//
// Even pion's errors go out at Debug: they are per-client events ("failed
// to send ChannelData" to a client that went away) that a retrying client
// can repeat thousands of times a second, or, in icebox check, findings the
// check reports in its own table. What an operator must see, icebox logs
// itself. pion's debug and trace output, a line per datagram, goes below
// Debug (LevelChatter).
package pionlog

import (
	"context"
	"fmt"
	"log/slog"
	"sync"

	"github.com/pion/logging"
)

// LevelChatter is below slog's Debug: pion logs every datagram at its
// debug and trace levels, which nobody wants next to icebox's own debug
// output.
const LevelChatter = slog.LevelDebug - 4

// Factory hands pion loggers that write to one slog.Logger, with the
// scope pion names as the "pion" attribute.
type Factory struct{ g *gate }

// gate lets Shut stop every logger at once: pion logs from goroutines of
// its own (read loops, retransmission timers) that may outlive their user.
type gate struct {
	mu     sync.RWMutex
	closed bool
	log    *slog.Logger
}

// New returns a Factory writing to log.
func New(log *slog.Logger) Factory { return Factory{&gate{log: log}} }

// Shut stops all logging through f's loggers and waits for lines under
// way, so that nothing writes to the logger's destination afterwards.
func (f Factory) Shut() {
	f.g.mu.Lock()
	f.g.closed = true
	f.g.mu.Unlock()
}

// NewLogger is pion's logging.LoggerFactory.
func (f Factory) NewLogger(scope string) logging.LeveledLogger {
	return logger{f.g, f.g.log.With("pion", scope)}
}

type logger struct {
	g *gate
	l *slog.Logger
}

func (p logger) log(level slog.Level, msg string) {
	if !p.l.Enabled(context.Background(), level) {
		return
	}
	p.g.mu.RLock()
	defer p.g.mu.RUnlock()
	if !p.g.closed {
		p.l.Log(context.Background(), level, msg)
	}
}

// logf formats only when the level is enabled: pion calls Debugf on the
// relay hot path.
func (p logger) logf(level slog.Level, format string, args ...any) {
	if p.l.Enabled(context.Background(), level) {
		p.log(level, fmt.Sprintf(format, args...))
	}
}

func (p logger) Trace(msg string)                  { p.log(LevelChatter, msg) }
func (p logger) Tracef(format string, args ...any) { p.logf(LevelChatter, format, args...) }
func (p logger) Debug(msg string)                  { p.log(LevelChatter, msg) }
func (p logger) Debugf(format string, args ...any) { p.logf(LevelChatter, format, args...) }
func (p logger) Info(msg string)                   { p.log(slog.LevelDebug, msg) }
func (p logger) Infof(format string, args ...any)  { p.logf(slog.LevelDebug, format, args...) }
func (p logger) Warn(msg string)                   { p.log(slog.LevelDebug, msg) }
func (p logger) Warnf(format string, args ...any)  { p.logf(slog.LevelDebug, format, args...) }
func (p logger) Error(msg string)                  { p.log(slog.LevelDebug, msg) }
func (p logger) Errorf(format string, args ...any) { p.logf(slog.LevelDebug, format, args...) }
