//go:build !linux

package udpio

// Elsewhere replies leave from whatever address the kernel picks; icebox is
// built for Linux and this file only keeps the package compiling on a
// developer's laptop.

// OOBSize is 0: no control messages.
func OOBSize() int { return 0 }

// PktinfoSupported is false: the local address of a datagram is unknown.
const PktinfoSupported = false

// ControlPktinfo does nothing here.
func ControlPktinfo(bool) func(uintptr) error { return func(uintptr) error { return nil } }

// ControlReusePort does nothing here.
func ControlReusePort(uintptr) error { return nil }

// ParseLocal finds nothing here.
func ParseLocal([]byte) Local { return Local{} }

// PutLocal writes nothing here.
func PutLocal(oob []byte, _ Local, _ bool) []byte { return oob[:0] }
