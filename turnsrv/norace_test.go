//go:build !race

package turnsrv

const raceEnabled = false
