package runtime

import (
	"reflect"

	json "github.com/go-json-experiment/json/v1"
)

// WarmJSON makes the JSON codec build, ahead of need, its encoders and
// field tables for the sync messages and the spec (config.json): a fresh
// process pays for them on first use, 0.3 to 0.6 ms for the spec's tree
// of types (see the package doc). Spare shims and spare inits call it while
// they wait for a container, so that its start does not pay it.
func WarmJSON() {
	v := filled(reflect.TypeFor[syncMsg](), 0)
	b, err := json.Marshal(v.Interface())
	if err != nil {
		return
	}
	var m syncMsg
	_ = json.Unmarshal(b, &m)
}

// filled returns a value of type t whose pointers, slices and string-keyed
// maps hold one element each, so that encoding it meets every type in t.
func filled(t reflect.Type, depth int) reflect.Value {
	v := reflect.New(t).Elem()
	if depth > 12 {
		return v
	}
	switch t.Kind() {
	case reflect.Pointer:
		p := reflect.New(t.Elem())
		p.Elem().Set(filled(t.Elem(), depth+1))
		v.Set(p)
	case reflect.Struct:
		for i := range t.NumField() {
			if t.Field(i).IsExported() {
				v.Field(i).Set(filled(t.Field(i).Type, depth+1))
			}
		}
	case reflect.Slice:
		if t.Elem().Kind() != reflect.Uint8 {
			s := reflect.MakeSlice(t, 1, 1)
			s.Index(0).Set(filled(t.Elem(), depth+1))
			v.Set(s)
		}
	case reflect.Map:
		if t.Key().Kind() == reflect.String {
			m := reflect.MakeMap(t)
			m.SetMapIndex(reflect.ValueOf("k").Convert(t.Key()), filled(t.Elem(), depth+1))
			v.Set(m)
		}
	}
	return v
}
