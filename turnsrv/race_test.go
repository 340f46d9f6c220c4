//go:build race

package turnsrv

const raceEnabled = true
