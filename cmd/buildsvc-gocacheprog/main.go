// Command buildsvc-gocacheprog is the build service's GOCACHEPROG helper:
// the go command runs it as its build cache. See package
// github.com/buildsvc/buildsvc/buildcache/cacheprog.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/buildsvc/buildsvc/buildcache/cacheprog"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := cacheprog.Main(ctx, os.Getenv, os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
