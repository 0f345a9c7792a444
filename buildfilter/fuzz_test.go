package buildfilter

import (
	"errors"
	"testing"
	"unicode/utf8"
)

// FuzzParse: Parse never panics; a refusal is an *Error whose position is
// in the filter (or 0); an accepted filter's canonical form parses to the
// same canonical form and keeps the same builds.
func FuzzParse(f *testing.F) {
	for _, s := range []string{
		"",
		`state = FAILED AND labels.team = "payments" AND create_time > "2026-12-01T00:00:00Z"`,
		`state=failed OR -tenant:a (commit:1a2b image_tag:"r.example/a:v1")`,
		`NOT (git_repo = "https://git.example/a.git" OR error.reason:*) labels:team`,
		`labels.team != "a\"b\\c\u00e9"`,
		`((state = QUEUED)) AND AND`,
		`create_time <= "2026-12-01T00:00:00.123+02:00" - labels.x:*`,
		"state = \"\xff\"",
		`colour = red`,
	} {
		f.Add(s)
	}
	infos := builds()
	f.Fuzz(func(t *testing.T, s string) {
		flt, err := Parse(s)
		if err != nil {
			var fe *Error
			if !errors.As(err, &fe) {
				t.Fatalf("Parse(%q) error %v is not an *Error", s, err)
			}
			if fe.Pos < 0 || fe.Pos > utf8.RuneCountInString(s)+1 || fe.Msg == "" {
				t.Fatalf("Parse(%q) error %+v: position outside the filter or no message", s, fe)
			}
			return
		}
		canon := flt.String()
		if len(canon) > MaxLen {
			return // quoting made it longer than Parse takes
		}
		again, err := Parse(canon)
		if err != nil {
			t.Fatalf("Parse(%q) = %q, which does not parse: %v", s, canon, err)
		}
		if again.String() != canon {
			t.Fatalf("Parse(%q) = %q, parsed again %q", s, canon, again.String())
		}
		for _, b := range infos {
			if flt.Match(b) != again.Match(b) {
				t.Fatalf("Parse(%q) and its canonical form %q differ on %s", s, canon, b.GetBuildId())
			}
		}
	})
}
