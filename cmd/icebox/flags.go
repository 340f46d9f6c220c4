package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
)

// commandFlags starts the flags of `icebox name`, a command that reads
// the daemon's config: errors go to stderr, -config names the file, and
// -h prints usage (a line and what the command does) and the flags.
func commandFlags(name, usage string, stderr io.Writer) (fs *flag.FlagSet, configPath *string) {
	fs = flag.NewFlagSet("icebox "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	configPath = fs.String("config", "", "YAML config file (the daemon's)")
	fs.Usage = func() {
		fmt.Fprintln(stderr, usage)
		fs.PrintDefaults()
	}
	return fs, configPath
}

// parseFlags parses args into fs. When ok is false the command ends at
// once with exit status code: 0 after -h, 2 after a bad flag.
func parseFlags(fs *flag.FlagSet, args []string) (code int, ok bool) {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0, false
		}
		return 2, false
	}
	return 0, true
}
