package main

import (
	"os"
	"strings"
	"testing"
)

// docs/operations.md lists every option, with its env var and default,
// and no option that does not exist.
func TestOperationsDocListsEveryOption(t *testing.T) {
	b, err := os.ReadFile("../../docs/operations.md")
	if err != nil {
		t.Fatal(err)
	}
	rows := map[string][]string{} // key -> cells of its table row
	for _, line := range strings.Split(string(b), "\n") {
		if !strings.HasPrefix(line, "| `") {
			continue
		}
		cells := strings.Split(strings.Trim(line, "|"), "|")
		for i := range cells {
			cells[i] = strings.TrimSpace(cells[i])
		}
		if len(cells) == 4 && strings.HasPrefix(cells[1], "`"+envPrefix) {
			rows[strings.Trim(cells[0], "`")] = cells
		}
	}
	known := map[string]bool{}
	for _, o := range options {
		known[o.name] = true
		row, ok := rows[o.name]
		if !ok {
			t.Errorf("option %s has no row in docs/operations.md", o.name)
			continue
		}
		if want := "`" + envName(o.name) + "`"; row[1] != want {
			t.Errorf("%s: env var %s, want %s", o.name, row[1], want)
		}
		if o.def != "" && !strings.Contains(row[2], "`"+o.def+"`") {
			t.Errorf("%s: default %q, want `%s`", o.name, row[2], o.def)
		}
	}
	for key := range rows {
		if !known[key] {
			t.Errorf("docs/operations.md lists %s, which is not an option", key)
		}
	}
}
