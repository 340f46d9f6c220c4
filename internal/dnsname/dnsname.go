// Package dnsname says whether a string is a DNS host name, the one check
// behind every configured name (ACME domains, signal.ice_host).
package dnsname

import "strings"

// Valid reports whether name is a host name as RFC 1123 §2.1 writes one:
// dot-separated labels of 1 to 63 letters, digits and hyphens, neither
// starting nor ending with a hyphen, at most 253 bytes in all. A trailing
// dot (the absolute form) is not part of it: callers that accept one trim
// it first.
func Valid(name string) bool {
	if name == "" || len(name) > 253 {
		return false
	}
	for label := range strings.SplitSeq(name, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for _, r := range label {
			if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-') {
				return false
			}
		}
	}
	return true
}
