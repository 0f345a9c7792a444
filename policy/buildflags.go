package policy

import (
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
)

// A flag value check returns nil for a value the flag may take.
type valueCheck func(v string) error

// buildFlags are the `go build` flags a request may give, with the check of
// their value (nil: the flag takes no value). Anything that runs another
// program, reads a file from outside the source or changes where output
// goes is left out: -toolexec, -exec, -overlay, -modfile, -pkgdir, -o, -C,
// -compiler, -gccgoflags, -linkshared, -modcacherw, -work, -n, and cgo
// tools (-race, -msan, -asan need cgo, which builds do not have).
var buildFlags = map[string]valueCheck{
	"-a":         nil,
	"-v":         nil,
	"-x":         nil,
	"-tags":      checkTags,
	"-mod":       oneOf("mod", "readonly", "vendor"),
	"-buildvcs":  oneOf("true", "false", "auto"),
	"-buildmode": oneOf("exe", "pie", "default"),
	"-pgo":       oneOf("auto", "off"),
	"-p":         matches(`^[1-9][0-9]?$`, "a number of parallel jobs from 1 to 99"),
	"-gcflags":   checkToolFlags(gcFlags),
	"-asmflags":  checkToolFlags(asmFlags),
	"-cover":     nil,
	"-covermode": oneOf("set", "count", "atomic"),
	"-trimpath":  nil, // the service always sets it; given again, it changes nothing
}

// Flags with a field of their own or set by the service.
var reservedBuildFlags = map[string]string{
	"-o":       "the service chooses the output path",
	"-ldflags": "use the ldflags field",
	"-C":       "use the dir field",
}

// gcFlags and asmFlags are the compiler and assembler flags -gcflags and
// -asmflags may carry: ones that change code generation or diagnostics,
// none that reads or writes files (-importcfg, -o, -cpuprofile, -I, ...).
var (
	gcFlags = map[string]valueCheck{
		"-N": nil, "-l": nil, "-B": nil, "-C": nil, "-e": nil, "-S": nil, "-w": nil, "-live": nil,
		"-m": matches(`^[0-9]$`, "a level from 0 to 9"),
		"-d": matches(`^[a-zA-Z0-9_/=,.]+$`, "debug settings name=value,..."),
	}
	asmFlags = map[string]valueCheck{"-S": nil}
)

var (
	tagRE     = regexp.MustCompile(`^[A-Za-z0-9_.]+$`)
	patternRE = regexp.MustCompile(`^(all|std|cmd|main|[A-Za-z0-9._~/-]+)$`)
	defineRE  = regexp.MustCompile(`^[A-Za-z0-9_./~-]+\.[A-Za-z_][A-Za-z0-9_]*$`)
)

// BuildFlagError is a refused `go build` flag, linker flag or variable.
type BuildFlagError struct {
	// Name is the flag or variable, e.g. "-toolexec" or "GOFLAGS".
	Name string
	// Reason says why, without quoting more than a short prefix of input.
	Reason string
}

func (e *BuildFlagError) Error() string { return e.Name + ": " + e.Reason }

// ErrNotAllowed is wrapped by errors for flags and variables outside the
// allow-list (as opposed to malformed ones).
var ErrNotAllowed = errors.New("not allowed")

// Extra widens the allow-lists for one tenant: flags and variables it may
// set with any value. Meant for trusted tenants only; each entry gives
// build steps a way to run programs of the repository's choosing.
type Extra struct {
	// BuildFlags are extra `go build` flag names, e.g. "-toolexec".
	BuildFlags []string `yaml:"build_flags"`
	// LDFlags are extra linker flag names, e.g. "-extldflags"; their
	// values are given as -name=value.
	LDFlags []string `yaml:"ldflags"`
	// Env are extra variable names, e.g. "GOFLAGS" or "CGO_ENABLED" (any
	// value, cgo included).
	Env []string `yaml:"env"`
}

// Add returns e widened by o: every list of both.
func (e Extra) Add(o Extra) Extra {
	return Extra{
		BuildFlags: append(slices.Clone(e.BuildFlags), o.BuildFlags...),
		LDFlags:    append(slices.Clone(e.LDFlags), o.LDFlags...),
		Env:        append(slices.Clone(e.Env), o.Env...),
	}
}

// CheckBuildFlag checks one `go build` flag, given as -name or -name=value
// (one argument; "--name" is the same flag).
func CheckBuildFlag(f string, extra Extra) error {
	name, value, hasValue := splitFlag(f)
	if name == "" {
		return &BuildFlagError{Name: short(f), Reason: "is not a flag; give flags with values as -name=value"}
	}
	name = short(name)
	if strings.ContainsRune(f, 0) || strings.ContainsAny(f, "\n\r") {
		return &BuildFlagError{Name: name, Reason: "must be one line of text"}
	}
	if why, ok := reservedBuildFlags[name]; ok {
		return &BuildFlagError{Name: name, Reason: "can't be set: " + why}
	}
	if slices.Contains(extra.BuildFlags, name) {
		return nil
	}
	check, ok := buildFlags[name]
	if !ok {
		return &BuildFlagError{Name: name, Reason: fmt.Sprintf("%v: not a flag this server lets builds set", ErrNotAllowed)}
	}
	switch {
	case check == nil && hasValue && value != "true":
		return &BuildFlagError{Name: name, Reason: "takes no value"}
	case check != nil && !hasValue:
		return &BuildFlagError{Name: name, Reason: "needs a value, given as " + name + "=value"}
	case check != nil:
		if err := check(value); err != nil {
			return &BuildFlagError{Name: name, Reason: err.Error()}
		}
	}
	return nil
}

// ldFlags are the linker flags the ldflags field may hold: stripping,
// -X name=value, the build id and DWARF compression. External linking
// (-linkmode, -extld, -extldflags) and anything that reads or writes files
// (-importcfg, -o, -r, -T, -H, -capturehostobjs...) are left out.
var ldFlags = map[string]valueCheck{
	"-s":             nil,
	"-w":             nil,
	"-X":             checkDefine,
	"-buildid":       matches(`^[A-Za-z0-9_./+=-]*$`, "a build id"),
	"-compressdwarf": oneOf("true", "false"),
	"-checklinkname": oneOf("0", "1"),
}

// CheckLDFlags checks the value of -ldflags. It is split into fields as the
// go command splits it (spaces, with '...' or "..." quoting), and each flag
// must be allowed; -X takes its value as the next field or after '='.
func CheckLDFlags(s string, extra Extra) error {
	if strings.ContainsRune(s, 0) || strings.ContainsAny(s, "\n\r") {
		return &BuildFlagError{Name: "ldflags", Reason: "must be one line of text"}
	}
	fields, err := splitQuoted(s)
	if err != nil {
		return &BuildFlagError{Name: "ldflags", Reason: err.Error()}
	}
	for i := 0; i < len(fields); i++ {
		name, value, hasValue := splitFlag(fields[i])
		if name == "" {
			return &BuildFlagError{Name: short(fields[i]), Reason: "is not a linker flag"}
		}
		name = short(name)
		if slices.Contains(extra.LDFlags, name) {
			continue // with a value, given as -name=value
		}
		check, ok := ldFlags[name]
		if !ok {
			return &BuildFlagError{Name: name, Reason: fmt.Sprintf("%v: not a linker flag this server lets builds set", ErrNotAllowed)}
		}
		if check == nil {
			if hasValue && value != "true" {
				return &BuildFlagError{Name: name, Reason: "takes no value"}
			}
			continue
		}
		if !hasValue {
			if i+1 >= len(fields) {
				return &BuildFlagError{Name: name, Reason: "needs a value"}
			}
			i++
			value = fields[i]
		}
		if err := check(value); err != nil {
			return &BuildFlagError{Name: name, Reason: err.Error()}
		}
	}
	return nil
}

// envChecks are the variables a request may set for `go build`, with the
// check of their value: the Go toolchain's per-architecture settings,
// GOEXPERIMENT and GOFIPS140, and CGO_ENABLED=0. Everything else (GOFLAGS,
// GOPROXY, GOSUMDB, GOINSECURE, GOTOOLCHAIN, CC, LD_PRELOAD, ...) is the
// server's to set or nobody's.
var envChecks = map[string]valueCheck{
	"GOEXPERIMENT": matches(`^[a-z0-9,]*$`, "a comma-separated list of experiments"),
	"GOAMD64":      oneOf("v1", "v2", "v3", "v4"),
	"GOARM64":      matches(`^v[89]\.[0-9](,(lse|crypto))*$`, "v8.0 to v9.5, optionally ,lse or ,crypto"),
	"GO386":        oneOf("sse2", "softfloat"),
	"GOMIPS":       oneOf("hardfloat", "softfloat"),
	"GOMIPS64":     oneOf("hardfloat", "softfloat"),
	"GOPPC64":      oneOf("power8", "power9", "power10"),
	"GORISCV64":    oneOf("rva20u64", "rva22u64", "rva23u64"),
	"GOWASM":       matches(`^[a-z,]*$`, "a comma-separated list of wasm features"),
	"GOFIPS140":    matches(`^(off|latest|inprocess|certified|v[0-9]+\.[0-9]+\.[0-9]+)$`, "off, latest or a module version"),
	"CGO_ENABLED":  oneOf("0"),
}

// CheckEnv checks one variable of a request's environment.
func CheckEnv(key, value string, extra Extra) error {
	key = short(key)
	if strings.ContainsRune(value, 0) {
		return &BuildFlagError{Name: key, Reason: "contains a NUL byte"}
	}
	if slices.Contains(extra.Env, key) {
		return nil
	}
	check, ok := envChecks[key]
	if !ok {
		return &BuildFlagError{Name: key, Reason: fmt.Sprintf("%v: not a variable this server lets builds set", ErrNotAllowed)}
	}
	if err := check(value); err != nil {
		return &BuildFlagError{Name: key, Reason: err.Error()}
	}
	return nil
}

// splitFlag splits "-name=value" or "--name=value"; name is "" if f is not
// a flag.
func splitFlag(f string) (name, value string, hasValue bool) {
	s, ok := strings.CutPrefix(f, "-")
	if !ok {
		return "", "", false
	}
	s = strings.TrimPrefix(s, "-")
	name, value, hasValue = strings.Cut(s, "=")
	if name == "" || strings.HasPrefix(name, "-") {
		return "", "", false
	}
	return "-" + name, value, hasValue
}

// checkToolFlags checks a -gcflags or -asmflags value: an optional package
// pattern and '=', then flags for the tool, split as the go command does.
func checkToolFlags(allowed map[string]valueCheck) valueCheck {
	return func(v string) error {
		if pattern, rest, ok := strings.Cut(v, "="); ok && !strings.HasPrefix(pattern, "-") {
			if !patternRE.MatchString(pattern) {
				return fmt.Errorf("%q is not a package pattern", short(pattern))
			}
			v = rest
		}
		fields, err := splitQuoted(v)
		if err != nil {
			return err
		}
		for _, f := range fields {
			name, value, hasValue := splitFlag(f)
			check, ok := allowed[name]
			switch {
			case name == "" || !ok:
				return fmt.Errorf("%s: %w: not a tool flag this server lets builds set", short(f), ErrNotAllowed)
			case check == nil && hasValue:
				return fmt.Errorf("%s takes no value", name)
			case check != nil && !hasValue:
				return fmt.Errorf("%s needs a value, given as %s=value", name, name)
			case check != nil:
				if err := check(value); err != nil {
					return fmt.Errorf("%s: %w", name, err)
				}
			}
		}
		return nil
	}
}

func checkTags(v string) error {
	for _, t := range strings.FieldsFunc(v, func(r rune) bool { return r == ',' || r == ' ' }) {
		if !tagRE.MatchString(t) {
			return fmt.Errorf("%q is not a build tag", short(t))
		}
	}
	return nil
}

// checkDefine checks the value of -X: importpath.name=value, where value is
// any one line of text.
func checkDefine(v string) error {
	sym, _, ok := strings.Cut(v, "=")
	if !ok || !defineRE.MatchString(sym) || strings.Contains(sym, "..") {
		return fmt.Errorf("%q is not importpath.name=value", short(v))
	}
	return nil
}

func oneOf(values ...string) valueCheck {
	return func(v string) error {
		if slices.Contains(values, v) {
			return nil
		}
		return fmt.Errorf("%q is not one of %s", short(v), strings.Join(values, ", "))
	}
}

func matches(expr, what string) valueCheck {
	re := regexp.MustCompile(expr)
	return func(v string) error {
		if re.MatchString(v) {
			return nil
		}
		return fmt.Errorf("%q is not %s", short(v), what)
	}
}

// splitQuoted splits s at spaces, keeping '...' and "..." together, as the
// go command splits flag lists.
func splitQuoted(s string) ([]string, error) {
	var out []string
	var cur strings.Builder
	quote, inField := rune(0), false
	for _, r := range s {
		switch {
		case quote != 0 && r == quote:
			quote = 0
		case quote != 0:
			cur.WriteRune(r)
		case r == '\'' || r == '"':
			quote, inField = r, true
		case r == ' ' || r == '\t':
			if inField {
				out = append(out, cur.String())
				cur.Reset()
				inField = false
			}
		default:
			cur.WriteRune(r)
			inField = true
		}
	}
	if quote != 0 {
		return nil, errors.New("unterminated quote")
	}
	if inField {
		out = append(out, cur.String())
	}
	return out, nil
}

// maxQuoted is how much of a bad input an error quotes.
const maxQuoted = 40

// short returns s cut to maxQuoted bytes, marked when cut.
func short(s string) string {
	if len(s) <= maxQuoted {
		return s
	}
	return s[:maxQuoted] + "..."
}
