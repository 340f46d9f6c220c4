package main

import (
	"net"
	"os"
	"strconv"
	"time"
)

// sdNotify sends a state line ("READY=1", "STOPPING=1", "WATCHDOG=1",
// "RELOADING=1") to systemd when it started us with Type=notify; otherwise
// it does nothing. The protocol is one datagram on $NOTIFY_SOCKET, simple
// enough that linking a systemd library is not worth it.
func sdNotify(state string) error {
	path := os.Getenv("NOTIFY_SOCKET")
	if path == "" {
		return nil
	}
	if path[0] == '@' {
		path = "\x00" + path[1:] // abstract socket
	}
	c, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		return err
	}
	defer c.Close()
	_, err = c.Write([]byte(state))
	return err
}

// watchdogInterval is how often to ping systemd's watchdog: half of
// WatchdogSec, as sd_watchdog_enabled(3) advises. Zero when not asked.
func watchdogInterval() time.Duration {
	usec, err := strconv.ParseInt(os.Getenv("WATCHDOG_USEC"), 10, 64)
	if err != nil || usec <= 0 {
		return 0
	}
	if pid := os.Getenv("WATCHDOG_PID"); pid != "" && pid != strconv.Itoa(os.Getpid()) {
		return 0
	}
	return time.Duration(usec) * time.Microsecond / 2
}
