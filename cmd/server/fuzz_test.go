package main

import (
	"bytes"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// FuzzReadConfigFile reads arbitrary bytes as the --config file. It never
// panics; a refusal is an error that says it is about the config file and
// returns no settings; what it reads names known options only. When the
// settings are also a valid configuration, --print-config's output read
// back as a config file gives the same configuration (but for the masked
// GOPROXY credentials), as TestPrintConfig checks for one file.
func FuzzReadConfigFile(f *testing.F) {
	f.Add([]byte(sampleFile))
	f.Add([]byte(""))
	f.Add([]byte("# only a comment\n"))
	f.Add([]byte("listen: [a, b]\n"))
	f.Add([]byte("- listen\n- queue-size\n"))
	f.Add([]byte("listen: a\nlisten: b\n"))
	f.Add([]byte("lisen: 127.0.0.1:1\n"))
	f.Add([]byte("queue-size: &q 5\nmax-concurrent-builds: *q\n"))
	f.Add([]byte("goproxy: \"https://tok@proxy.example|direct\"\nlog-cap: 1GiB\ncleanup-interval: 0\nallow-insecure-git: True\n"))
	f.Add([]byte("%YAML 1.2\n---\nlisten: \"\\t:1\"\n...\n"))
	f.Add([]byte("listen: !!binary aGVsbG8=\ndata-dir: |\n  multi\n  line\n"))
	// One directory for the whole run, not one per input: each fuzzing
	// worker is its own process and runs one input at a time.
	dir := f.TempDir()
	path, path2 := filepath.Join(dir, "server.yaml"), filepath.Join(dir, "printed.yaml")
	f.Fuzz(func(t *testing.T, content []byte) {
		if err := os.WriteFile(path, content, 0o600); err != nil {
			t.Fatal(err)
		}
		values, err := readConfigFile(path)
		if err != nil {
			if values != nil {
				t.Fatalf("error %v comes with settings %v", err, values)
			}
			if !strings.HasPrefix(err.Error(), "config file") || !strings.Contains(err.Error(), path) {
				t.Fatalf("error %q does not name the config file", err)
			}
			return
		}
		known := map[string]bool{}
		for _, o := range options {
			known[o.name] = true
		}
		for k := range values {
			if !known[k] {
				t.Fatalf("unknown key %q was read", k)
			}
		}

		settings := fuzzSettings(values)
		cfg, err := parseConfig(settings)
		if err != nil {
			return // a bad value; TestConfigErrors checks how it is reported
		}
		var printed bytes.Buffer
		if err := printConfig(&printed, settings, path); err != nil {
			t.Fatalf("print config: %v", err)
		}
		if err := os.WriteFile(path2, printed.Bytes(), 0o600); err != nil {
			t.Fatal(err)
		}
		values2, err := readConfigFile(path2)
		if err != nil {
			t.Fatalf("the printed config does not read: %v\n%s", err, printed.Bytes())
		}
		cfg2, err := parseConfig(fuzzSettings(values2))
		if err != nil {
			t.Fatalf("the printed config does not parse: %v\n%s", err, printed.Bytes())
		}
		cfg.Server.GoProxy = strings.TrimSpace(maskURLPasswords(settings["goproxy"].value))
		if !reflect.DeepEqual(cfg, cfg2) {
			t.Fatalf("the printed config\n%s\nloads as\n%+v\nwant\n%+v", printed.Bytes(), cfg2, cfg)
		}
	})
}

// fuzzSettings are the settings of a config file's values, with the
// defaults for the rest, as resolve makes them without flags or env vars.
func fuzzSettings(values map[string]string) map[string]setting {
	s := make(map[string]setting, len(options))
	for _, o := range options {
		if v, ok := values[o.name]; ok {
			s[o.name] = setting{v, "file"}
		} else {
			s[o.name] = setting{o.def, "default"}
		}
	}
	return s
}
