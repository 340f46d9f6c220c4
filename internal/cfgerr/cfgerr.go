// Package cfgerr carries configuration mistakes from the package that finds
// them to the loader that knows where in the file they are.
//
// A package's Config.Validate returns *Error values keyed by the YAML path of
// the offending option relative to its own section ("listen[1]"); main prefixes
// the section ("stun.listen[1]") with In and turns the path into a file:line.
package cfgerr

import (
	"errors"
	"fmt"
	"strings"
)

// Error is one invalid option: where it is, what is wrong, and what to write instead.
type Error struct {
	Key     string // YAML path, e.g. "turn.relay.ports" or "stun.listen[0]"
	Problem string
	Fix     string // what to write instead; may be empty
}

func (e *Error) Error() string {
	var b strings.Builder
	if e.Key != "" {
		b.WriteString(e.Key)
		b.WriteString(": ")
	}
	b.WriteString(e.Problem)
	if e.Fix != "" {
		b.WriteString(" (fix: ")
		b.WriteString(e.Fix)
		b.WriteString(")")
	}
	return b.String()
}

// New returns an *Error for key.
func New(key, problem, fix string) error {
	return &Error{Key: key, Problem: problem, Fix: fix}
}

// Newf is New with a formatted problem.
func Newf(key, fix, format string, args ...any) error {
	return &Error{Key: key, Problem: fmt.Sprintf(format, args...), Fix: fix}
}

// In prefixes the keys of every *Error inside err with section, so a
// package's "listen" becomes "stun.listen". Other errors pass through.
func In(section string, err error) error {
	if err == nil {
		return nil
	}
	all := Flatten(err)
	out := make([]error, 0, len(all))
	for _, e := range all {
		var ce *Error
		if errors.As(e, &ce) {
			key := section
			if ce.Key != "" {
				if strings.HasPrefix(ce.Key, "[") {
					key += ce.Key
				} else {
					key += "." + ce.Key
				}
			}
			out = append(out, &Error{Key: key, Problem: ce.Problem, Fix: ce.Fix})
			continue
		}
		out = append(out, e)
	}
	return errors.Join(out...)
}

// Flatten lists the errors inside err, however deeply errors.Join nested
// them, so that each *Error can be prefixed or located on its own.
func Flatten(err error) []error {
	if err == nil {
		return nil
	}
	j, ok := err.(interface{ Unwrap() []error })
	if !ok {
		return []error{err}
	}
	var out []error
	for _, e := range j.Unwrap() {
		out = append(out, Flatten(e)...)
	}
	return out
}
