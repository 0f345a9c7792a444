// Command genrepos writes the benchmark's three repositories and the module
// proxy of their dependencies to -out (which must be empty or missing):
//
//	OUT/repos/{small,medium,large}/   the main modules
//	OUT/proxy/                        the GOPROXY directory of bench.example/...
//
// The same -seed writes the same bytes.
package main

import (
	"flag"
	"fmt"
	"os"

	"github.com/buildsvc/buildsvc/tools/bench/gen"
)

func main() {
	out := flag.String("out", "", "the output `DIR` (empty or missing)")
	seed := flag.Uint64("seed", 1, "the generator's `SEED`")
	flag.Parse()
	if *out == "" {
		fmt.Fprintln(os.Stderr, "genrepos: -out is required")
		os.Exit(2)
	}
	if err := gen.Generate(*out, *seed); err != nil {
		fmt.Fprintln(os.Stderr, "genrepos:", err)
		os.Exit(1)
	}
}
