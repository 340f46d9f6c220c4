package testenv

import (
	"os/exec"
	"testing"
	"time"
)

// StartProcess starts cmd, kills it when the test ends, and returns once
// ready reports nil. ready is a probe of the service itself (a Binding, an
// echo). A probe that fails at once (a port not yet open refuses) is
// repeated after a pause that doubles from 5 ms to 200 ms, so the loop
// does not take a core from the process it waits for. The test fails at
// once if the process exits first, with its exit status, and after 10 s
// if it never gets ready.
func StartProcess(t testing.TB, cmd *exec.Cmd, ready func() error) {
	t.Helper()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	var waitErr error
	go func() {
		waitErr = cmd.Wait()
		close(exited)
	}()
	t.Cleanup(func() { cmd.Process.Kill(); <-exited })
	deadline := time.NewTimer(10 * time.Second)
	defer deadline.Stop()
	for pause := 5 * time.Millisecond; ; pause = min(2*pause, 200*time.Millisecond) {
		err := ready()
		if err == nil {
			return
		}
		select {
		case <-exited:
			t.Fatalf("%s exited before it was ready (%v); last probe: %v", cmd.Path, waitErr, err)
		case <-deadline.C:
			t.Fatalf("%s is not ready after 10s: %v", cmd.Path, err)
		case <-time.After(pause):
		}
	}
}
