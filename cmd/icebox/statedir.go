package main

import (
	"os"
	"path/filepath"
	"strings"
)

// stateDir is where icebox keeps what it generates (the TURN secret):
// the configured one, else systemd's StateDirectory=, else the system
// place when root, else the user's own, so `go run` works for anyone.
func stateDir(configured string) string {
	if configured != "" {
		return configured
	}
	if d := os.Getenv("STATE_DIRECTORY"); d != "" {
		return strings.Split(d, ":")[0]
	}
	if os.Geteuid() == 0 {
		return systemStateDir
	}
	if d := os.Getenv("XDG_STATE_HOME"); d != "" {
		return filepath.Join(d, "icebox")
	}
	if home, err := os.UserHomeDir(); err == nil {
		return filepath.Join(home, ".local", "state", "icebox")
	}
	return filepath.Join(os.TempDir(), "icebox-state")
}
