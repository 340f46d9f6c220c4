package testenv

import (
	"os/exec"
	"testing"
	"time"
)

// StartProcess starts cmd, kills it when the test ends, and returns once
// ready reports nil. ready is a probe of the service itself (a Binding, an
// echo); the loop only repeats it, never sleeps, so ready must block for
// its answer or fail at once (a refused port). It gives up after 10 s.
func StartProcess(t testing.TB, cmd *exec.Cmd, ready func() error) {
	t.Helper()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := ready()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s is not ready: %v", cmd.Path, err)
		}
	}
}
