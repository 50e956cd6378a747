package worker

import (
	"fmt"
	"reflect"
)

// Defaults returns the configuration with every optional setting at its default (the default
// tags of Config, parsed by setField as LoadConfig parses them) and the required ones empty.
// Code that needs a worker configuration without an environment (ingestor dev, tests, the
// benchmarks) starts from it rather than from its own literals.
func Defaults() Config {
	var c Config
	rv := reflect.ValueOf(&c).Elem()
	rt := rv.Type()
	for i := range rt.NumField() {
		f := rt.Field(i)
		if def, ok := f.Tag.Lookup("default"); ok {
			if err := setField(rv.Field(i), def); err != nil {
				panic(fmt.Sprintf("Config.%s: default %q: %v", f.Name, def, err)) // a bug, caught by every test
			}
		}
	}
	return c
}
