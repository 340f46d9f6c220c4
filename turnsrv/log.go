package turnsrv

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/pion/logging"
)

// levelPionChatter is below slog's Debug: pion logs every datagram at its
// debug and trace levels, which nobody wants next to icebox's own debug
// output.
const levelPionChatter = slog.LevelDebug - 4

// pionLoggerFactory hands pion/turn loggers that write to slog. Even pion's
// errors go out at Debug: they are per-client events ("failed to send
// ChannelData" to a client that went away) that a retrying client can
// repeat thousands of times a second. What an operator must see, icebox
// logs itself.
type pionLoggerFactory struct{ l *slog.Logger }

func (f pionLoggerFactory) NewLogger(scope string) logging.LeveledLogger {
	return pionLogger{f.l.With("pion", scope)}
}

type pionLogger struct{ l *slog.Logger }

func (p pionLogger) log(level slog.Level, msg string) {
	p.l.Log(context.Background(), level, msg)
}

// logf formats only when the level is enabled: pion calls Debugf on the
// relay hot path.
func (p pionLogger) logf(level slog.Level, format string, args ...any) {
	if p.l.Enabled(context.Background(), level) {
		p.l.Log(context.Background(), level, fmt.Sprintf(format, args...))
	}
}

func (p pionLogger) Trace(msg string)                  { p.log(levelPionChatter, msg) }
func (p pionLogger) Tracef(format string, args ...any) { p.logf(levelPionChatter, format, args...) }
func (p pionLogger) Debug(msg string)                  { p.log(levelPionChatter, msg) }
func (p pionLogger) Debugf(format string, args ...any) { p.logf(levelPionChatter, format, args...) }
func (p pionLogger) Info(msg string)                   { p.log(slog.LevelDebug, msg) }
func (p pionLogger) Infof(format string, args ...any)  { p.logf(slog.LevelDebug, format, args...) }
func (p pionLogger) Warn(msg string)                   { p.log(slog.LevelDebug, msg) }
func (p pionLogger) Warnf(format string, args ...any)  { p.logf(slog.LevelDebug, format, args...) }
func (p pionLogger) Error(msg string)                  { p.log(slog.LevelDebug, msg) }
func (p pionLogger) Errorf(format string, args ...any) { p.logf(slog.LevelDebug, format, args...) }
