package runtime

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
)

// TestFilledReachesEveryType: the value WarmJSON encodes reaches deep into
// the spec, through pointers, slices and maps.
func TestFilledReachesEveryType(t *testing.T) {
	b, err := json.Marshal(filled(reflect.TypeFor[syncMsg](), 0).Interface())
	if err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{`"process"`, `"rlimits"`, `"uidMappings"`, `"hooks"`, `"memory"`,
		`"hugepageLimits"`, `"syscalls"`, `"args"`, `"annotations"`, `"handed"`} {
		if !strings.Contains(string(b), key) {
			t.Errorf("%s missing from %s", key, b)
		}
	}
	var m syncMsg
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("what WarmJSON encodes does not decode: %v", err)
	}
}
