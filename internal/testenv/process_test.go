package testenv

import (
	"errors"
	"fmt"
	"os/exec"
	"runtime"
	"strings"
	"testing"
)

// TestStartProcessFailsWhenTheProcessExits: a process that exits before
// it is ready fails the test at once, with its exit status, instead of
// being probed until the 10 s deadline. Probing stops there: the count
// of probes is what a few backoff pauses allow, not a busy loop's.
func TestStartProcessFailsWhenTheProcessExits(t *testing.T) {
	sh, err := exec.LookPath("sh")
	if err != nil {
		t.Skip("no sh")
	}
	probes := 0
	failed, msg := runFailing(func(tb testing.TB) {
		StartProcess(tb, exec.Command(sh, "-c", "exit 3"), func() error {
			probes++
			return errors.New("connection refused")
		})
	})
	if !failed || !strings.Contains(msg, "exited before it was ready") || !strings.Contains(msg, "exit status 3") {
		t.Fatalf("failed=%v %q, want a failure naming the exit status 3", failed, msg)
	}
	// The process exits within milliseconds; 10 s of doubling pauses
	// capped at 200 ms would be about 55 probes, a busy loop millions.
	if probes > 55 {
		t.Errorf("%d probes before giving up, want the loop to stop when the process exits", probes)
	}
	t.Logf("%d probes", probes)
}

// runFailing runs f with a testing.TB whose Fatalf ends f's goroutine,
// and reports whether it failed and with what message.
func runFailing(f func(testing.TB)) (failed bool, msg string) {
	ft := &fatalTB{}
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer ft.cleanup()
		f(ft)
	}()
	<-done
	return ft.failed, ft.msg
}

// fatalTB is the part of testing.TB StartProcess uses, recording a
// failure instead of failing the test that runs it.
type fatalTB struct {
	testing.TB // nil: any other method panics
	failed     bool
	msg        string
	cleanups   []func()
}

func (ft *fatalTB) Helper()           {}
func (ft *fatalTB) Cleanup(f func())  { ft.cleanups = append(ft.cleanups, f) }
func (ft *fatalTB) Fatal(args ...any) { ft.fail(fmt.Sprint(args...)) }
func (ft *fatalTB) Fatalf(format string, args ...any) {
	ft.fail(fmt.Sprintf(format, args...))
}

func (ft *fatalTB) fail(msg string) {
	ft.failed, ft.msg = true, msg
	runtime.Goexit()
}

func (ft *fatalTB) cleanup() {
	for i := len(ft.cleanups) - 1; i >= 0; i-- {
		ft.cleanups[i]()
	}
}
