// Package gen writes the benchmark's repositories and the module proxy that
// serves their dependencies, deterministically: the same seed gives the same
// bytes.
//
// Each size is a main module (a git repository's worth of files) and a graph
// of generated dependency modules under bench.example/<size>/, all at
// v1.0.0. The proxy directory is in the GOPROXY layout
// (<module>/@v/list, .info, .mod, .zip) and is a valid GOPROXY when served
// over HTTP (or as file://). The go.sum files carry the real h1: hashes.
package gen

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"golang.org/x/mod/module"
	"golang.org/x/mod/sumdb/dirhash"
	modzip "golang.org/x/mod/zip"
)

// ModulePrefix is the path prefix of every generated dependency module. The
// modules are not in sum.golang.org: every build sets GONOSUMDB to it.
const ModulePrefix = "bench.example"

// Version is the version of every generated dependency module.
const Version = "v1.0.0"

// GoVersion is the go line of every generated go.mod.
const GoVersion = "1.26"

// modTime is the time the proxy's .info files give every version.
var modTime = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// Size describes one generated repository.
type Size struct {
	// Name is the repository's name and its modules' path element.
	Name string
	// Modules is the number of dependency modules in the graph.
	Modules int
	// Direct is how many of them the main package imports.
	Direct int
	// ExtraEdges is how many imports each module has on top of the one
	// that makes it reachable (fewer near the end of the graph).
	ExtraEdges int
	// ModFuncs is the number of functions in each dependency module.
	ModFuncs int
	// MainFiles and MainFuncs (per file) size the main package.
	MainFiles, MainFuncs int
}

// Sizes are the three repositories of the benchmark.
var Sizes = []Size{
	{Name: "small", Modules: 1, Direct: 1, ModFuncs: 4, MainFiles: 1, MainFuncs: 4},
	{Name: "medium", Modules: 60, Direct: 6, ExtraEdges: 2, ModFuncs: 12, MainFiles: 4, MainFuncs: 10},
	{Name: "large", Modules: 250, Direct: 16, ExtraEdges: 3, ModFuncs: 16, MainFiles: 40, MainFuncs: 10},
}

// file is one generated file: a path relative to its root, and its content.
type file struct {
	path string
	data []byte
}

// depModule is one generated dependency module.
type depModule struct {
	path    string
	name    string // package name
	imports []int  // indexes of the modules its package imports
	closure []int  // every module its package needs, sorted
}

// Generate writes, for every size, the repository to out/repos/<name> and
// the dependency modules to the proxy at out/proxy. out must be empty or
// missing; the result depends only on seed.
func Generate(out string, seed uint64) error {
	if ents, err := os.ReadDir(out); err == nil && len(ents) > 0 {
		return fmt.Errorf("generate: %s is not empty", out)
	} else if err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("generate: %w", err)
	}
	for i, sz := range Sizes {
		rng := rand.New(rand.NewPCG(seed, uint64(i)))
		if err := generateSize(out, sz, rng); err != nil {
			return fmt.Errorf("generate %s: %w", sz.Name, err)
		}
	}
	return nil
}

func generateSize(out string, sz Size, rng *rand.Rand) error {
	mods := graph(sz, rng)
	proxy := filepath.Join(out, "proxy")
	sums := map[int][2]string{} // module index -> zip hash, go.mod hash
	for i := range mods {
		zh, mh, err := writeModule(proxy, sz, mods, i, rng)
		if err != nil {
			return err
		}
		sums[i] = [2]string{zh, mh}
	}
	return writeMain(filepath.Join(out, "repos", sz.Name), sz, mods, sums, rng)
}

// graph makes the module graph: module i>0 is imported by one module of
// the ten before it (so every module is reachable from module 0), plus
// ExtraEdges random imports of later modules. The main package imports
// modules 0..Direct-1.
func graph(sz Size, rng *rand.Rand) []depModule {
	mods := make([]depModule, sz.Modules)
	for i := range mods {
		mods[i].name = fmt.Sprintf("m%03d", i)
		mods[i].path = fmt.Sprintf("%s/%s/%s", ModulePrefix, sz.Name, mods[i].name)
	}
	edges := make([]map[int]bool, sz.Modules)
	for i := range edges {
		edges[i] = map[int]bool{}
	}
	for i := sz.Direct; i < sz.Modules; i++ {
		lo := max(0, i-10)
		edges[lo+rng.IntN(i-lo)][i] = true
	}
	for i := range sz.Modules {
		for range sz.ExtraEdges {
			if rest := sz.Modules - i - 1; rest > 0 {
				edges[i][i+1+rng.IntN(min(rest, 30))] = true
			}
		}
	}
	for i := sz.Modules - 1; i >= 0; i-- {
		seen := map[int]bool{}
		for j := range edges[i] {
			mods[i].imports = append(mods[i].imports, j)
			seen[j] = true
			for _, k := range mods[j].closure {
				seen[k] = true
			}
		}
		sort.Ints(mods[i].imports)
		for k := range seen {
			mods[i].closure = append(mods[i].closure, k)
		}
		sort.Ints(mods[i].closure)
	}
	return mods
}

// goMod renders a go.mod requiring closure; the modules in direct are
// plain requirements, the rest // indirect (a pruned graph needs them all).
func goMod(path string, mods []depModule, direct, closure []int) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "module %s\n\ngo %s\n", path, GoVersion)
	isDirect := map[int]bool{}
	for _, d := range direct {
		isDirect[d] = true
	}
	for _, want := range []bool{true, false} {
		var lines []string
		for _, k := range closure {
			if isDirect[k] == want {
				line := "\t" + mods[k].path + " " + Version
				if !want {
					line += " // indirect"
				}
				lines = append(lines, line)
			}
		}
		if len(lines) > 0 {
			fmt.Fprintf(&b, "\nrequire (\n%s\n)\n", strings.Join(lines, "\n"))
		}
	}
	return b.Bytes()
}

// modSource is the Go source of module i's package.
func modSource(sz Size, mods []depModule, i int, rng *rand.Rand) []byte {
	m := mods[i]
	var b bytes.Buffer
	fmt.Fprintf(&b, "// Package %s is generated code of the buildsvc benchmark (%s).\npackage %s\n\n", m.name, sz.Name, m.name)
	b.WriteString("import (\n\t\"hash/crc32\"\n\t\"sort\"\n\t\"strconv\"\n\t\"strings\"\n")
	if len(m.imports) > 0 {
		b.WriteString("\n")
	}
	for _, j := range m.imports {
		fmt.Fprintf(&b, "\t%q\n", mods[j].path)
	}
	b.WriteString(")\n\n")
	fmt.Fprintf(&b, "// Record is a value the functions of %s pass around.\ntype Record struct {\n\tKey   string\n\tCount int\n\tTags  []string\n}\n\n", m.name)
	b.WriteString("// Checksum is the CRC-32 of the record's key and tags.\nfunc (r Record) Checksum() uint32 {\n\treturn crc32.ChecksumIEEE([]byte(r.Key + strings.Join(r.Tags, \",\")))\n}\n\n")
	for f := range sz.ModFuncs {
		fmt.Fprintf(&b, "// F%d mixes x with constants and the functions of the imported packages.\n", f)
		fmt.Fprintf(&b, "func F%d(x int) int {\n\th := x*%d + %d\n", f, 3+rng.IntN(1000), rng.IntN(1<<16))
		fmt.Fprintf(&b, "\tfor i := 0; i < %d; i++ {\n\t\th ^= h<<%d + i\n\t\th %%= %d\n\t}\n", 4+rng.IntN(12), 1+rng.IntN(7), 1000003+rng.IntN(1<<20))
		if f+1 < sz.ModFuncs {
			for _, j := range m.imports {
				fmt.Fprintf(&b, "\th += %s.F%d(h %% %d)\n", mods[j].name, f+1, 97+rng.IntN(900))
			}
		}
		b.WriteString("\treturn h\n}\n\n")
	}
	b.WriteString("// Summary renders records sorted by key.\nfunc Summary(rs []Record) string {\n\tsort.Slice(rs, func(a, b int) bool { return rs[a].Key < rs[b].Key })\n\tvar sb strings.Builder\n\tfor _, r := range rs {\n\t\tsb.WriteString(r.Key + \"=\" + strconv.Itoa(r.Count+F0(r.Count)) + \";\")\n\t}\n\treturn sb.String()\n}\n")
	return b.Bytes()
}

// memFile is a modzip.File held in memory.
type memFile struct {
	name string
	data []byte
}

func (f memFile) Path() string                 { return f.name }
func (f memFile) Lstat() (os.FileInfo, error)  { return memInfo(f), nil }
func (f memFile) Open() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(f.data)), nil }

// memInfo is the os.FileInfo of a memFile.
type memInfo memFile

func (i memInfo) Name() string       { return filepath.Base(i.name) }
func (i memInfo) Size() int64        { return int64(len(i.data)) }
func (i memInfo) Mode() os.FileMode  { return 0o644 }
func (i memInfo) ModTime() time.Time { return modTime }
func (i memInfo) IsDir() bool        { return false }
func (i memInfo) Sys() any           { return nil }

// writeModule writes module i to the proxy and returns the h1: hashes of
// its zip and its go.mod.
func writeModule(proxy string, sz Size, mods []depModule, i int, rng *rand.Rand) (zipHash, modHash string, err error) {
	m := mods[i]
	esc, err := module.EscapePath(m.path)
	if err != nil {
		return "", "", fmt.Errorf("module %s: %w", m.path, err)
	}
	dir := filepath.Join(proxy, filepath.FromSlash(esc), "@v")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", "", fmt.Errorf("module %s: %w", m.path, err)
	}
	gomod := goMod(m.path, mods, m.imports, m.closure)
	files := []modzip.File{
		memFile{"go.mod", gomod},
		memFile{m.name + ".go", modSource(sz, mods, i, rng)},
	}
	var zb bytes.Buffer
	if err := modzip.Create(&zb, module.Version{Path: m.path, Version: Version}, files); err != nil {
		return "", "", fmt.Errorf("module %s: zip: %w", m.path, err)
	}
	info := fmt.Sprintf("{\"Version\":%q,\"Time\":%q}\n", Version, modTime.Format(time.RFC3339))
	for name, data := range map[string][]byte{
		"list":            []byte(Version + "\n"),
		Version + ".info": []byte(info),
		Version + ".mod":  gomod,
		Version + ".zip":  zb.Bytes(),
	} {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o644); err != nil {
			return "", "", fmt.Errorf("module %s: %w", m.path, err)
		}
	}
	zipHash, err = dirhash.HashZip(filepath.Join(dir, Version+".zip"), dirhash.Hash1)
	if err != nil {
		return "", "", fmt.Errorf("module %s: hash: %w", m.path, err)
	}
	modHash, err = dirhash.Hash1([]string{"go.mod"}, func(string) (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(gomod)), nil
	})
	if err != nil {
		return "", "", fmt.Errorf("module %s: hash go.mod: %w", m.path, err)
	}
	return zipHash, modHash, nil
}

// writeMain writes the main module of a size to dir.
func writeMain(dir string, sz Size, mods []depModule, sums map[int][2]string, rng *rand.Rand) error {
	direct := make([]int, 0, sz.Direct)
	for i := range min(sz.Direct, len(mods)) {
		direct = append(direct, i)
	}
	all := make([]int, len(mods))
	for i := range all {
		all[i] = i
	}
	modPath := "bench.local/" + sz.Name
	files := []file{{"go.mod", goMod(modPath, mods, direct, all)}}
	var sum bytes.Buffer
	for _, i := range all {
		fmt.Fprintf(&sum, "%s %s %s\n%s %s/go.mod %s\n", mods[i].path, Version, sums[i][0], mods[i].path, Version, sums[i][1])
	}
	files = append(files, file{"go.sum", sum.Bytes()})

	var mb bytes.Buffer
	mb.WriteString("// Command " + sz.Name + " is the generated main package of the buildsvc benchmark.\npackage main\n\nimport (\n\t\"fmt\"\n\t\"os\"\n\n")
	for _, i := range direct {
		fmt.Fprintf(&mb, "\t%q\n", mods[i].path)
	}
	mb.WriteString(")\n\n// registry holds every generated function of the main package.\nvar registry []func(int) int\n\nfunc register(fs ...func(int) int) { registry = append(registry, fs...) }\n\n")
	mb.WriteString("func main() {\n\tx := len(os.Args)\n")
	for _, i := range direct {
		fmt.Fprintf(&mb, "\tx += %s.F0(x)\n", mods[i].name)
	}
	mb.WriteString("\tif len(os.Args) > 1 && len(registry) > 0 {\n\t\tx = registry[x%len(registry)](x)\n\t}\n\tfmt.Println(\"ok\", len(registry), x)\n}\n")
	files = append(files, file{"main.go", mb.Bytes()})
	for n := range sz.MainFiles {
		files = append(files, file{fmt.Sprintf("gen%03d.go", n), mainFile(sz, n, rng)})
	}
	for _, f := range files {
		p := filepath.Join(dir, f.path)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(p, f.data, 0o644); err != nil {
			return err
		}
	}
	return nil
}

// mainFile is the source of the main package's generated file n: MainFuncs
// functions of a few dozen statements, registered so the linker keeps them.
func mainFile(sz Size, n int, rng *rand.Rand) []byte {
	var b bytes.Buffer
	b.WriteString("package main\n\nimport (\n\t\"sort\"\n\t\"strings\"\n)\n\n")
	names := make([]string, 0, sz.MainFuncs)
	for f := range sz.MainFuncs {
		name := fmt.Sprintf("f%03d_%03d", n, f)
		names = append(names, name)
		fmt.Fprintf(&b, "func %s(x int) int {\n", name)
		fmt.Fprintf(&b, "\tvals := []int{x, x + %d, x * %d, x ^ %d}\n", rng.IntN(100), 2+rng.IntN(9), rng.IntN(1<<12))
		fmt.Fprintf(&b, "\tm := map[string]int{\"a\": %d, \"b\": %d}\n", rng.IntN(50), rng.IntN(50))
		for s := range 4 + rng.IntN(6) {
			switch rng.IntN(4) {
			case 0:
				fmt.Fprintf(&b, "\tfor i := range vals {\n\t\tvals[i] = vals[i]*%d + %d\n\t}\n", 3+rng.IntN(20), s)
			case 1:
				fmt.Fprintf(&b, "\tif x%%%d == %d {\n\t\tm[\"k%d\"] = len(vals) + x\n\t} else {\n\t\tvals = append(vals, x-%d)\n\t}\n", 2+rng.IntN(5), rng.IntN(2), s, rng.IntN(30))
			case 2:
				fmt.Fprintf(&b, "\tsort.Ints(vals)\n\tx += vals[len(vals)/2] %% %d\n", 7+rng.IntN(90))
			default:
				fmt.Fprintf(&b, "\tx += len(strings.Repeat(\"ab\", x%%%d+1)) + m[\"a\"]\n", 3+rng.IntN(9))
			}
		}
		b.WriteString("\tfor _, v := range vals {\n\t\tx += v % 101\n\t}\n\treturn x + len(m)\n}\n\n")
	}
	fmt.Fprintf(&b, "func init() {\n\tregister(%s)\n}\n", strings.Join(names, ", "))
	return b.Bytes()
}
