//go:build !linux

package stunsrv

import (
	"net/netip"
)

// Elsewhere replies leave from whatever address the kernel picks; icebox is
// built for Linux and this file only keeps the package compiling on a
// developer's laptop.

var oobSize = 0

const pktinfoSupported = false

func controlPktinfo(bool) func(uintptr) error { return func(uintptr) error { return nil } }
func controlReusePort(uintptr) error          { return nil }

func parseDst([]byte) (netip.Addr, uint32, bool)               { return netip.Addr{}, 0, false }
func putSrc(oob []byte, _ netip.Addr, _ uint32, _ bool) []byte { return oob[:0] }
