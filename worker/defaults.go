package worker

import (
	"fmt"
	"reflect"
	"strconv"
	"strings"
	"time"
)

// Defaults returns the configuration with every optional setting at its default (the default
// tags of Config) and the required ones empty. Code that needs a worker configuration without
// an environment (ingestor dev, tests, the benchmarks) starts from it rather than from its own
// literals.
func Defaults() Config {
	var c Config
	v := reflect.ValueOf(&c).Elem()
	t := v.Type()
	for i := 0; i < t.NumField(); i++ {
		def, ok := t.Field(i).Tag.Lookup("default")
		if !ok {
			continue
		}
		if err := setDefault(v.Field(i), def); err != nil {
			// A malformed tag is a programming error that TestDefaults catches.
			panic(fmt.Sprintf("worker.Config.%s: default %q: %v", t.Field(i).Name, def, err))
		}
	}
	return c
}

var durationType = reflect.TypeOf(time.Duration(0))

// setDefault parses a default tag the way envconfig parses the variable.
func setDefault(f reflect.Value, s string) error {
	if f.Type() == durationType {
		d, err := time.ParseDuration(s)
		f.SetInt(int64(d))
		return err
	}
	switch f.Kind() {
	case reflect.String:
		f.SetString(s)
	case reflect.Bool:
		b, err := strconv.ParseBool(s)
		f.SetBool(b)
		return err
	case reflect.Int:
		n, err := strconv.ParseInt(s, 0, 64)
		f.SetInt(n)
		return err
	case reflect.Float64:
		x, err := strconv.ParseFloat(s, 64)
		f.SetFloat(x)
		return err
	case reflect.Slice:
		if f.Type().Elem().Kind() != reflect.String {
			return fmt.Errorf("unsupported type %s", f.Type())
		}
		f.Set(reflect.ValueOf(strings.Split(s, ",")))
	default:
		return fmt.Errorf("unsupported type %s", f.Type())
	}
	return nil
}
