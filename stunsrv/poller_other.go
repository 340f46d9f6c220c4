//go:build !linux

package stunsrv

import (
	"errors"
	"syscall"
)

// Poller is epoll's; NewPoller fails where there is none, and each relay
// socket keeps a goroutine of its own.
type Poller struct{}

// NewPoller fails: there is no epoll on this platform.
func NewPoller(int) (*Poller, error) { return nil, errors.New("stunsrv: no epoll on this platform") }

func (*Poller) Add(syscall.RawConn, int32) error { return nil }
func (*Poller) Remove(syscall.RawConn) error     { return nil }
func (*Poller) Wait(func([]int32) bool) error    { return nil }
func (*Poller) Close() error                     { return nil }
