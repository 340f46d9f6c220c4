package doctor

import (
	"fmt"
	"log/slog"
	"sync"

	"github.com/pion/logging"
)

// pionLoggerFactory sends pion's logs to slog at debug level: what pion
// calls an error (a refused allocation, a closed socket) is a finding of
// the check, reported in its table, not a log line for the operator.
//
// pion logs from goroutines of its own (read loops, retransmission timers)
// that may outlive a check by a moment; once the check is over, the gate
// is shut and they log nothing, so Run leaves no writer behind.
type pionLoggerFactory struct{ g *logGate }

type logGate struct {
	mu     sync.RWMutex
	closed bool
	log    *slog.Logger
}

func newPionLoggerFactory(log *slog.Logger) pionLoggerFactory {
	return pionLoggerFactory{&logGate{log: log}}
}

// shut stops all logging through the factory and waits for lines under way.
func (f pionLoggerFactory) shut() {
	f.g.mu.Lock()
	f.g.closed = true
	f.g.mu.Unlock()
}

func (f pionLoggerFactory) NewLogger(scope string) logging.LeveledLogger {
	return pionLogger{f.g, scope}
}

type pionLogger struct {
	g     *logGate
	scope string
}

func (l pionLogger) log(msg string) {
	l.g.mu.RLock()
	defer l.g.mu.RUnlock()
	if !l.g.closed {
		l.g.log.Debug(msg, "pion", l.scope)
	}
}

func (l pionLogger) Trace(string)                   {}
func (l pionLogger) Tracef(string, ...any)          {}
func (l pionLogger) Debug(msg string)               { l.log(msg) }
func (l pionLogger) Debugf(format string, a ...any) { l.log(fmt.Sprintf(format, a...)) }
func (l pionLogger) Info(msg string)                { l.log(msg) }
func (l pionLogger) Infof(format string, a ...any)  { l.log(fmt.Sprintf(format, a...)) }
func (l pionLogger) Warn(msg string)                { l.log(msg) }
func (l pionLogger) Warnf(format string, a ...any)  { l.log(fmt.Sprintf(format, a...)) }
func (l pionLogger) Error(msg string)               { l.log(msg) }
func (l pionLogger) Errorf(format string, a ...any) { l.log(fmt.Sprintf(format, a...)) }
