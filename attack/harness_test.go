// Package attack runs icebox as a process and attacks it over loopback
// while a legitimate client keeps calling, asserting what a user is
// promised: the daemon lives, its memory stays bounded, and the
// legitimate client's STUN answers, allocations, relayed packets and
// WebSocket handshakes keep flowing. Every loop is bounded in count and
// time; nothing leaves 127.0.0.0/8.
package attack

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"icebox/internal/testenv"
)

// What the legitimate client is promised under every attack.
const (
	// maxLoss is the share of STUN transactions, relayed packets and
	// allocations the legitimate client may lose.
	maxLoss = 0.01
	// maxHandshake bounds one WebSocket dial + WsInit → WsIceServers on a
	// loopback shared with the attack (and, in CI, other tests on two
	// cores): generous, since speed is measured in benchmarks, but it
	// catches a starved or wedged signaling server.
	maxHandshake = 3 * time.Second
	// maxRSS bounds the daemon's resident memory during and after an
	// attack.
	maxRSS = 256 << 20
	// attackTime is how long each attack class runs at least, and
	// maxAttackTime at most (see underAttack).
	attackTime    = 2 * time.Second
	maxAttackTime = 20 * time.Second
)

const testSecret = "attack-suite-secret-0123456789"

func TestMain(m *testing.M) { testenv.Main(m) }

// daemon is icebox running as a process on fixed loopback ports.
type daemon struct {
	t       *testing.T
	cmd     *exec.Cmd
	cfgPath string
	cfg     map[string]any
	stun    string // 127.0.0.1:port, UDP and TCP
	signal  string // 127.0.0.1:port
	lines   chan map[string]any
	exited  chan struct{}
}

// config is the daemon's config: defaults, loopback ports, a fixed
// secret, relays on 127.0.0.1 in a range below Linux's ephemeral ports.
func config(t *testing.T) map[string]any {
	return map[string]any{
		"public_ip": "127.0.0.1",
		"state_dir": t.TempDir(),
		"log":       map[string]any{"level": "info", "format": "json"},
		"stun":      map[string]any{"listen": []string{fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))}, "sockets": 1},
		"turn": map[string]any{
			"secrets": []string{testSecret},
			"relay":   map[string]any{"address": "127.0.0.1", "ports": "30000-31099"},
			"quotas":  map[string]any{},
		},
		"signal": map[string]any{"listen": fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))},
		"admin":  map[string]any{"listen": ""},
	}
}

// set puts v at a dotted path in cfg, e.g. "turn.quotas.total".
func set(cfg map[string]any, path string, v any) {
	keys := strings.Split(path, ".")
	m := cfg
	for _, k := range keys[:len(keys)-1] {
		next, ok := m[k].(map[string]any)
		if !ok {
			next = map[string]any{}
			m[k] = next
		}
		m = next
	}
	m[keys[len(keys)-1]] = v
}

func start(t *testing.T, cfg map[string]any) *daemon {
	t.Helper()
	d := &daemon{t: t, cfg: cfg, cfgPath: filepath.Join(t.TempDir(), "config.yaml")}
	d.stun = cfg["stun"].(map[string]any)["listen"].([]string)[0]
	d.signal = cfg["signal"].(map[string]any)["listen"].(string)
	d.writeConfig()
	d.run()
	return d
}

func (d *daemon) writeConfig() {
	body, err := yaml.Marshal(d.cfg)
	if err != nil {
		d.t.Fatal(err)
	}
	// Written aside and renamed over the file, so that a reload never
	// reads half a config.
	tmp := d.cfgPath + ".new"
	if err := os.WriteFile(tmp, body, 0o600); err != nil {
		d.t.Fatal(err)
	}
	if err := os.Rename(tmp, d.cfgPath); err != nil {
		d.t.Fatal(err)
	}
}

// run starts the process and waits for "icebox started".
func (d *daemon) run() {
	d.t.Helper()
	d.cmd = exec.Command(testenv.IceboxBinary(d.t), "-config", d.cfgPath)
	stderr, err := d.cmd.StderrPipe()
	if err != nil {
		d.t.Fatal(err)
	}
	if err := d.cmd.Start(); err != nil {
		d.t.Fatal(err)
	}
	d.lines = make(chan map[string]any, 1024)
	d.exited = make(chan struct{})
	cmd, lines, exited := d.cmd, d.lines, d.exited
	go func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			var line map[string]any
			if json.Unmarshal(sc.Bytes(), &line) == nil {
				select {
				case lines <- line:
				default: // nobody is waiting for lines now
				}
			}
		}
		cmd.Wait()
		close(exited)
	}()
	d.t.Cleanup(func() { cmd.Process.Kill(); <-exited })
	d.waitLog("icebox started")
}

// waitLog returns the first log line with msg, failing if icebox exits
// first; the deadline only guards against hanging.
func (d *daemon) waitLog(msg string) map[string]any {
	d.t.Helper()
	line, why := d.nextLog(msg, 20*time.Second)
	if line == nil {
		d.t.Fatalf("icebox %s before logging %q", why, msg)
	}
	return line
}

// alive fails the test if the process has exited.
func (d *daemon) alive() {
	d.t.Helper()
	select {
	case <-d.exited:
		d.t.Fatal("icebox died under attack")
	default:
	}
	if err := d.cmd.Process.Signal(syscall.Signal(0)); err != nil {
		d.t.Fatalf("icebox died under attack: %v", err)
	}
}

// rss is the daemon's resident memory in bytes.
func (d *daemon) rss() int {
	d.t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", d.cmd.Process.Pid))
	if err != nil {
		d.t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == "VmRSS:" {
			kb, _ := strconv.Atoi(f[1])
			return kb << 10
		}
	}
	d.t.Fatal("no VmRSS")
	return 0
}

// awaitLog is waitLog for other goroutines than the test's: it reports
// whether msg was logged within limit.
func (d *daemon) awaitLog(msg string, limit time.Duration) bool {
	line, _ := d.nextLog(msg, limit)
	return line != nil
}

// nextLog returns the first log line with msg, or nil and why not.
func (d *daemon) nextLog(msg string, limit time.Duration) (map[string]any, string) {
	deadline := time.After(limit)
	for {
		select {
		case line := <-d.lines:
			if line["msg"] == msg {
				return line, ""
			}
		case <-d.exited:
			return nil, "exited"
		case <-deadline:
			return nil, "was silent for " + limit.String()
		}
	}
}

// logConsumer hands the daemon's log lines to a function until stopped.
type logConsumer struct {
	quit, done chan struct{}
	once       sync.Once
}

// consumeLogs calls fn with each log line, from another goroutine, until
// stop (at the latest when the test ends); meanwhile nothing else may
// read the lines. It keeps lines from being dropped while a test logs
// more than the buffer holds.
func (d *daemon) consumeLogs(fn func(map[string]any)) *logConsumer {
	c := &logConsumer{quit: make(chan struct{}), done: make(chan struct{})}
	d.t.Cleanup(c.stop)
	lines := d.lines
	go func() {
		defer close(c.done)
		for {
			select {
			case line := <-lines:
				fn(line)
			case <-c.quit:
				return
			}
		}
	}()
	return c
}

func (c *logConsumer) stop() {
	c.once.Do(func() { close(c.quit) })
	<-c.done
}

// cpu is the daemon's user+system CPU time so far.
func (d *daemon) cpu() time.Duration {
	d.t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", d.cmd.Process.Pid))
	if err != nil {
		d.t.Fatal(err)
	}
	// Fields after the command name, which is in parentheses.
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+2:]))
	ut, _ := strconv.Atoi(f[11])
	st, _ := strconv.Atoi(f[12])
	return time.Duration(ut+st) * time.Second / 100 // USER_HZ
}
