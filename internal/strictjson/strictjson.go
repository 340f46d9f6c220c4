// Package strictjson decodes JSON as strictly as the talk's app does
// (kotlinx serialization with ignoreUnknownKeys=false), for the clients
// that must see frames the way the app sees them: the test clients
// (internal/ktapp) and icebox check (internal/doctor).
package strictjson

import (
	"fmt"
	"reflect"

	"github.com/go-json-experiment/json"
)

// Decode decodes data into v, which points to a struct standing for one
// of the app's data classes. Like kotlinx, it fails on a member v does
// not have, one whose name matches only up to case, a duplicate member,
// invalid UTF-8, trailing data (JSON v2 refuses all these itself), and
// on a member missing or null where the data class has a plain value:
// the document must survive a round trip through v unchanged.
func Decode(data []byte, v any) error {
	if err := json.Unmarshal(data, v, json.RejectUnknownMembers(true)); err != nil {
		return err
	}
	again, err := json.Marshal(v)
	if err != nil {
		return err
	}
	var a, b any
	if err := json.Unmarshal(data, &a); err != nil {
		return err
	}
	if err := json.Unmarshal(again, &b); err != nil {
		return err
	}
	if !reflect.DeepEqual(a, b) {
		return fmt.Errorf("members differ from the data class: got %s, class has %s", data, again)
	}
	return nil
}
