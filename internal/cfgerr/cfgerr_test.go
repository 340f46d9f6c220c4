package cfgerr

import (
	"errors"
	"testing"
)

// In reaches every *Error however errors.Join nested them, and leaves
// other errors as they are.
func TestInPrefixesNestedErrors(t *testing.T) {
	plain := errors.New("disk full")
	err := errors.Join(
		New("listen[1]", "bad port", `":3478"`),
		errors.Join(New("acme.domains", "needs listen", ""), plain),
		New("", "section missing", ""),
	)
	all := Flatten(In("tls", err))
	want := []string{
		`tls.listen[1]: bad port (fix: ":3478")`,
		"tls.acme.domains: needs listen",
		"disk full",
		"tls: section missing",
	}
	if len(all) != len(want) {
		t.Fatalf("got %d errors %v, want %d", len(all), all, len(want))
	}
	for i, e := range all {
		if e.Error() != want[i] {
			t.Errorf("error %d = %q, want %q", i, e, want[i])
		}
	}
	if In("tls", nil) != nil || Flatten(nil) != nil {
		t.Error("no error must stay no error")
	}
}
