// Package buildfilter parses the filter of ListBuilds, a subset of AIP-160
// (https://google.aip.dev/160), and compiles it to a predicate on a build's
// record.
//
// The grammar is AIP-160's, without its function calls, composite
// arguments and bare global restrictions (a value alone):
//
//	filter      = [expression]
//	expression  = sequence {"AND" sequence}
//	sequence    = factor {factor}            (juxtaposition: AND)
//	factor      = term {"OR" term}
//	term        = ["NOT" | "-"] simple
//	simple      = restriction | "(" expression ")"
//	restriction = FIELD OPERATOR VALUE
//
// As in AIP-160, OR binds tighter than AND: a AND b OR c is a AND (b OR c).
// AND, OR and NOT are upper case. OPERATOR is one of = != < > <= >= and :
// (has); VALUE is a string literal in double quotes (with Go's escapes) or a
// bare word of letters, digits, _ . and - (not first), and * after : (is
// set). The fields (see Fields) are those of buildv1.BuildInfo that a
// caller lists builds by.
//
// The parser is written by hand. go.einride.tech/aip/filtering parses the
// whole of AIP-160, but into a CEL expression that must first be checked
// against CEL declarations of every field and function and then walked to
// evaluate it against a BuildInfo; for eight fields that is more code and a
// dependency on the CEL protos, and its errors would speak of CEL types,
// not of our fields. A grammar this small is a few hundred lines that give
// errors with a position and the names a caller can use instead.
package buildfilter

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	buildv1 "github.com/buildsvc/buildsvc/proto/build/v1"
)

// MaxLen is the longest filter Parse takes, in bytes.
const MaxLen = 4096

// maxDepth is how deeply parentheses and NOTs may nest, so that a filter
// cannot take the parser's stack.
const maxDepth = 32

// Fields are the fields a filter compares, as the errors list them.
var Fields = []string{"state", "git_repo", "image_tag", "commit", "labels.KEY", "tenant", "create_time", "error.reason"}

// Error is a filter that does not parse: where and what is wrong.
type Error struct {
	// Pos is the character (not byte) where the problem is, counted from
	// 1; 0 for the filter as a whole.
	Pos int
	// Msg says what is wrong, and what would be right.
	Msg string
}

func (e *Error) Error() string {
	if e.Pos == 0 {
		return "filter: " + e.Msg
	}
	return fmt.Sprintf("filter: at %d: %s", e.Pos, e.Msg)
}

// Filter is a parsed filter.
type Filter struct {
	root node // nil: every build
}

// Parse parses a filter. The empty filter (or one of spaces only) keeps
// every build. An error is an *Error.
func Parse(s string) (*Filter, error) {
	if len(s) > MaxLen {
		return nil, &Error{Msg: fmt.Sprintf("%d bytes long; at most %d", len(s), MaxLen)}
	}
	toks, err := lex(s)
	if err != nil {
		return nil, err
	}
	p := &parser{src: s, toks: toks}
	if p.peek().kind == tEOF {
		return &Filter{}, nil
	}
	root, err := p.expression(0)
	if err != nil {
		return nil, err
	}
	if t := p.peek(); t.kind != tEOF {
		switch {
		case t.kind == tRParen:
			return nil, p.errAt(t, "a ) that closes no (")
		case t.kind == tOp && t.text == ":":
			return nil, p.errAt(t, "unexpected \":\": a value with : in it (a time, an image tag, a URL) goes in double quotes")
		}
		return nil, p.errAt(t, "unexpected %s", t.describe())
	}
	return &Filter{root: root}, nil
}

// Match says whether the filter keeps the build b.
func (f *Filter) Match(b *buildv1.BuildInfo) bool {
	return f.root == nil || f.root.match(b)
}

// String is the filter in a canonical form, fully parenthesized, with
// every value quoted: Parse of it gives the same filter.
func (f *Filter) String() string {
	if f.root == nil {
		return ""
	}
	return f.root.String()
}

// Quote makes s a string literal of a filter.
func Quote(s string) string { return strconv.Quote(s) }

// node is a parsed expression.
type node interface {
	match(b *buildv1.BuildInfo) bool
	String() string
}

type andNode []node

func (n andNode) match(b *buildv1.BuildInfo) bool {
	for _, x := range n {
		if !x.match(b) {
			return false
		}
	}
	return true
}

func (n andNode) String() string { return join(n, " AND ") }

type orNode []node

func (n orNode) match(b *buildv1.BuildInfo) bool {
	for _, x := range n {
		if x.match(b) {
			return true
		}
	}
	return false
}

func (n orNode) String() string { return join(n, " OR ") }

func join(nodes []node, sep string) string {
	parts := make([]string, len(nodes))
	for i, x := range nodes {
		parts[i] = x.String()
	}
	return "(" + strings.Join(parts, sep) + ")"
}

type notNode struct{ x node }

func (n notNode) match(b *buildv1.BuildInfo) bool { return !n.x.match(b) }
func (n notNode) String() string                  { return "NOT " + n.x.String() }

// restriction is one comparison, compiled.
type restriction struct {
	field, op, value string
	pred             func(*buildv1.BuildInfo) bool
}

func (r *restriction) match(b *buildv1.BuildInfo) bool { return r.pred(b) }

func (r *restriction) String() string {
	v := Quote(r.value)
	if r.op == ":" && r.value == "*" {
		v = "*"
	}
	return r.field + " " + r.op + " " + v
}

// ---- lexer ----

type tokKind int

const (
	tEOF tokKind = iota
	tWord
	tString
	tOp
	tStar
	tMinus
	tLParen
	tRParen
)

type token struct {
	kind tokKind
	text string // tString: the unquoted value
	off  int    // byte offset in the filter
}

// describe names a token in an error.
func (t token) describe() string {
	switch t.kind {
	case tEOF:
		return "end of filter"
	case tString:
		return "string " + Quote(t.text)
	case tWord:
		return Quote(t.text)
	default:
		return "\"" + t.text + "\""
	}
}

// isWordStart says whether r may begin a bare word; '-' may follow it.
func isWordStart(r rune) bool {
	return r == '_' || r == '.' || unicode.IsLetter(r) || unicode.IsDigit(r)
}

func lex(s string) ([]token, error) {
	var toks []token
	col := func(off int) int { return utf8.RuneCountInString(s[:off]) + 1 }
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == ' ' || r == '\t' || r == '\n' || r == '\r':
			i += size
		case r == '(':
			toks = append(toks, token{kind: tLParen, text: "(", off: i})
			i++
		case r == ')':
			toks = append(toks, token{kind: tRParen, text: ")", off: i})
			i++
		case r == '*':
			toks = append(toks, token{kind: tStar, text: "*", off: i})
			i++
		case r == '-':
			toks = append(toks, token{kind: tMinus, text: "-", off: i})
			i++
		case r == ':' || r == '=':
			toks = append(toks, token{kind: tOp, text: string(r), off: i})
			i++
		case r == '!' || r == '<' || r == '>':
			op := string(r)
			if i+1 < len(s) && s[i+1] == '=' {
				op += "="
			} else if r == '!' {
				return nil, &Error{Pos: col(i), Msg: "\"!\" alone: want != (or NOT before a comparison)"}
			}
			toks = append(toks, token{kind: tOp, text: op, off: i})
			i += len(op)
		case r == '"':
			end := i + 1
			for end < len(s) && s[end] != '"' {
				if s[end] == '\\' {
					end++
				}
				end++
			}
			if end >= len(s) {
				return nil, &Error{Pos: col(i), Msg: "a string that does not end: want a closing \""}
			}
			v, err := strconv.Unquote(s[i : end+1])
			if err != nil {
				return nil, &Error{Pos: col(i), Msg: "a string with an invalid escape or a line break: want Go's escapes (\\\" \\\\ \\n \\t \\uXXXX)"}
			}
			toks = append(toks, token{kind: tString, text: v, off: i})
			i = end + 1
		case isWordStart(r):
			end := i + size
			for end < len(s) {
				r, size := utf8.DecodeRuneInString(s[end:])
				if !isWordStart(r) && r != '-' {
					break
				}
				end += size
			}
			toks = append(toks, token{kind: tWord, text: s[i:end], off: i})
			i = end
		default:
			return nil, &Error{Pos: col(i), Msg: fmt.Sprintf("unexpected character %q: a value other than a word of letters, digits, _ . and - goes in double quotes", r)}
		}
	}
	return append(toks, token{kind: tEOF, off: len(s)}), nil
}

// ---- parser ----

type parser struct {
	src  string
	toks []token
	i    int
}

func (p *parser) peek() token { return p.toks[p.i] }

func (p *parser) next() token {
	t := p.toks[p.i]
	if t.kind != tEOF {
		p.i++
	}
	return t
}

func (p *parser) errAt(t token, format string, args ...any) error {
	return &Error{Pos: utf8.RuneCountInString(p.src[:t.off]) + 1, Msg: fmt.Sprintf(format, args...)}
}

func (p *parser) keyword(t token, kw string) bool { return t.kind == tWord && t.text == kw }

// starts says whether t can begin a term.
func (p *parser) starts(t token) bool {
	return t.kind == tWord && t.text != "AND" && t.text != "OR" || t.kind == tMinus || t.kind == tLParen
}

func (p *parser) expression(depth int) (node, error) {
	var all andNode
	for {
		seq, err := p.sequence(depth)
		if err != nil {
			return nil, err
		}
		all = append(all, seq...)
		if !p.keyword(p.peek(), "AND") {
			break
		}
		p.next()
	}
	if len(all) == 1 {
		return all[0], nil
	}
	return all, nil
}

func (p *parser) sequence(depth int) (andNode, error) {
	var seq andNode
	for {
		f, err := p.factor(depth)
		if err != nil {
			return nil, err
		}
		seq = append(seq, f)
		if !p.starts(p.peek()) {
			return seq, nil
		}
	}
}

func (p *parser) factor(depth int) (node, error) {
	var alts orNode
	for {
		t, err := p.term(depth)
		if err != nil {
			return nil, err
		}
		alts = append(alts, t)
		if !p.keyword(p.peek(), "OR") {
			break
		}
		p.next()
	}
	if len(alts) == 1 {
		return alts[0], nil
	}
	return alts, nil
}

func (p *parser) term(depth int) (node, error) {
	if depth >= maxDepth {
		return nil, p.errAt(p.peek(), "nested more than %d deep", maxDepth)
	}
	t := p.peek()
	if t.kind == tMinus || p.keyword(t, "NOT") {
		p.next()
		x, err := p.term(depth + 1)
		if err != nil {
			return nil, err
		}
		return notNode{x}, nil
	}
	return p.simple(depth)
}

func (p *parser) simple(depth int) (node, error) {
	t := p.next()
	switch {
	case t.kind == tLParen:
		if p.peek().kind == tRParen {
			return nil, p.errAt(p.peek(), "empty parentheses: want a comparison inside")
		}
		x, err := p.expression(depth + 1)
		if err != nil {
			return nil, err
		}
		if c := p.next(); c.kind != tRParen {
			return nil, p.errAt(c, "want ) to close the ( at %d, got %s", utf8.RuneCountInString(p.src[:t.off])+1, c.describe())
		}
		return x, nil
	case t.kind == tWord && (t.text == "AND" || t.text == "OR"):
		return nil, p.errAt(t, "%s without a comparison before it", t.text)
	case t.kind == tWord:
		return p.restriction(t)
	case t.kind == tEOF:
		return nil, p.errAt(t, "the filter ends where a comparison should be")
	default:
		return nil, p.errAt(t, "want a comparison (FIELD OPERATOR VALUE, such as state = FAILED), got %s", t.describe())
	}
}

func (p *parser) restriction(field token) (node, error) {
	op := p.peek()
	if op.kind != tOp {
		switch strings.ToUpper(field.text) {
		case "AND", "OR", "NOT":
			return nil, p.errAt(field, "%q is not a comparison: AND, OR and NOT are upper case", field.text)
		}
		return nil, p.errAt(field, "%q alone is not a comparison: want FIELD OPERATOR VALUE, such as state = FAILED", field.text)
	}
	p.next()
	val := p.next()
	switch {
	case val.kind == tStar && op.text == ":":
	case val.kind == tStar:
		return nil, p.errAt(val, "* is a value only after : (has)")
	case val.kind == tString, val.kind == tWord:
	default:
		return nil, p.errAt(val, "want a value after %s, got %s", op.text, val.describe())
	}
	r, err := compile(field.text, op.text, val)
	if err != nil {
		var ce *compileError
		if errors.As(err, &ce) {
			at := field
			switch ce.at {
			case atOp:
				at = op
			case atValue:
				at = val
			}
			return nil, p.errAt(at, "%s", ce.msg)
		}
		return nil, err
	}
	return r, nil
}

// ---- fields ----

// where in a restriction a compile error is.
const (
	atField = iota
	atOp
	atValue
)

type compileError struct {
	at  int
	msg string
}

func (e *compileError) Error() string { return e.msg }

func cerr(at int, format string, args ...any) error {
	return &compileError{at: at, msg: fmt.Sprintf(format, args...)}
}

// ops checks that op is one of allowed for field.
func ops(field, op string, allowed ...string) error {
	if slices.Contains(allowed, op) {
		return nil
	}
	return cerr(atOp, "%s takes %s, not %s", field, orList(allowed), op)
}

func orList(s []string) string {
	if len(s) == 1 {
		return s[0]
	}
	return strings.Join(s[:len(s)-1], ", ") + " or " + s[len(s)-1]
}

// compile makes the restriction field op val.
func compile(field, op string, val token) (*restriction, error) {
	v := val.text
	r := &restriction{field: field, op: op, value: v}
	str := func(get func(*buildv1.BuildInfo) string, fold bool) error {
		if err := ops(field, op, "=", "!=", ":"); err != nil {
			return err
		}
		r.pred = stringPred(op, v, fold, func(b *buildv1.BuildInfo) []string { return []string{get(b)} })
		return nil
	}
	var err error
	switch {
	case field == "state":
		err = compileState(r)
	case field == "git_repo":
		err = str(func(b *buildv1.BuildInfo) string { return b.GetRequest().GetGitRepo() }, false)
	case field == "image_tag":
		if err = ops(field, op, "=", "!=", ":"); err == nil {
			r.pred = stringPred(op, v, false, imageTags)
		}
	case field == "commit":
		if err = ops(field, op, "=", "!=", ":"); err == nil {
			r.value = strings.ToLower(v)
			v := r.value
			get := func(b *buildv1.BuildInfo) string { return strings.ToLower(b.GetCommit()) }
			switch {
			case op == ":" && v != "*":
				r.pred = func(b *buildv1.BuildInfo) bool { return b.GetCommit() != "" && strings.HasPrefix(get(b), v) }
			default:
				r.pred = stringPred(op, v, false, func(b *buildv1.BuildInfo) []string { return []string{get(b)} })
			}
		}
	case field == "tenant":
		if err = ops(field, op, "=", "!="); err == nil {
			r.pred = stringPred(op, v, false, func(b *buildv1.BuildInfo) []string { return []string{b.GetTenant()} })
		}
	case field == "error.reason":
		err = str(func(b *buildv1.BuildInfo) string { return b.GetError().GetReason() }, true)
	case field == "create_time":
		err = compileTime(r)
	case field == "labels":
		err = compileLabelKey(r)
	case strings.HasPrefix(field, "labels."):
		err = compileLabel(r, strings.TrimPrefix(field, "labels."))
	default:
		err = cerr(atField, "unknown field %q; fields: %s", field, strings.Join(Fields, ", "))
	}
	if err != nil {
		return nil, err
	}
	return r, nil
}

// stringPred compares the strings get returns: = is true if one of them is
// v, != if none is, : if one contains v (or, for *, is not empty).
func stringPred(op, v string, fold bool, get func(*buildv1.BuildInfo) []string) func(*buildv1.BuildInfo) bool {
	eq := func(a string) bool { return a == v || fold && strings.EqualFold(a, v) }
	var one func(string) bool
	switch {
	case op == ":" && v == "*":
		one = func(a string) bool { return a != "" }
	case op == ":" && fold:
		lv := strings.ToLower(v)
		one = func(a string) bool { return strings.Contains(strings.ToLower(a), lv) }
	case op == ":":
		one = func(a string) bool { return strings.Contains(a, v) }
	default:
		one = eq
	}
	anyOf := func(b *buildv1.BuildInfo) bool { return slices.ContainsFunc(get(b), one) }
	if op == "!=" {
		return func(b *buildv1.BuildInfo) bool { return !anyOf(b) }
	}
	return anyOf
}

// imageTags are every tag a build pushes to.
func imageTags(b *buildv1.BuildInfo) []string {
	req := b.GetRequest()
	return append([]string{req.GetImageTag()}, req.GetImageTags()...)
}

// stateNames are the states' names without BUILD_STATE_, in the order the
// enum declares them (the order a build goes through them), UNSPECIFIED
// left out.
func stateNames() []string {
	var names []string
	values := buildv1.BuildState(0).Descriptor().Values()
	for i := range values.Len() {
		if v := values.Get(i); v.Number() != 0 {
			names = append(names, strings.TrimPrefix(string(v.Name()), "BUILD_STATE_"))
		}
	}
	return names
}

func compileState(r *restriction) error {
	if err := ops("state", r.op, "=", "!="); err != nil {
		return err
	}
	name := strings.TrimPrefix(strings.ToUpper(r.value), "BUILD_STATE_")
	n, ok := buildv1.BuildState_value["BUILD_STATE_"+name]
	if !ok || n == 0 {
		return cerr(atValue, "unknown state %q; states: %s", r.value, strings.Join(stateNames(), ", "))
	}
	r.value = name
	want := buildv1.BuildState(n)
	if r.op == "!=" {
		r.pred = func(b *buildv1.BuildInfo) bool { return b.GetState() != want }
	} else {
		r.pred = func(b *buildv1.BuildInfo) bool { return b.GetState() == want }
	}
	return nil
}

func compileTime(r *restriction) error {
	if err := ops("create_time", r.op, "<", "<=", ">", ">=", "="); err != nil {
		return err
	}
	t, err := time.Parse(time.RFC3339Nano, r.value)
	if err != nil {
		return cerr(atValue, "create_time wants an RFC 3339 time in double quotes, such as \"2026-12-01T00:00:00Z\", not %q", r.value)
	}
	cmp := map[string]func(int) bool{
		"<":  func(c int) bool { return c < 0 },
		"<=": func(c int) bool { return c <= 0 },
		">":  func(c int) bool { return c > 0 },
		">=": func(c int) bool { return c >= 0 },
		"=":  func(c int) bool { return c == 0 },
	}[r.op]
	r.pred = func(b *buildv1.BuildInfo) bool {
		// A record without a time (older than create_time) is in no range.
		return b.GetCreateTime() != nil && cmp(b.GetCreateTime().AsTime().Compare(t))
	}
	return nil
}

// validLabelKey is what CreateImageRequest.build_labels allows as a key.
func validLabelKey(k string) bool {
	if k == "" || len(k) > 63 || k[0] < 'a' || k[0] > 'z' {
		return false
	}
	for _, c := range []byte(k) {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

func compileLabel(r *restriction, key string) error {
	if !validLabelKey(key) {
		return cerr(atField, "%q: a label key is 1-63 characters of a-z, 0-9, _ and -, starting with a letter", key)
	}
	if err := ops(r.field, r.op, "=", "!=", ":"); err != nil {
		return err
	}
	v, op := r.value, r.op
	r.pred = func(b *buildv1.BuildInfo) bool {
		got, ok := b.GetLabels()[key]
		switch {
		case op == ":" && v == "*":
			return ok
		case op == ":":
			return ok && strings.Contains(got, v)
		case op == "=":
			return ok && got == v
		default: // !=: also a build without the label
			return !ok || got != v
		}
	}
	return nil
}

// compileLabelKey is labels:KEY, the build has the label KEY.
func compileLabelKey(r *restriction) error {
	if r.op != ":" || r.value == "*" {
		return cerr(atOp, "labels takes : KEY (has the label); compare a label's value with labels.KEY")
	}
	if !validLabelKey(r.value) {
		return cerr(atValue, "%q: a label key is 1-63 characters of a-z, 0-9, _ and -, starting with a letter", r.value)
	}
	key := r.value
	r.pred = func(b *buildv1.BuildInfo) bool { _, ok := b.GetLabels()[key]; return ok }
	return nil
}
