// Command fanout is the fan-out benchmark of issue 9: it starts one build
// on a build server and watches it with many WatchBuild streams at once
// (spread over a few connections, one ClientConn each), from seq 0, while
// it runs. It checks that every watcher gets every event exactly once and
// in order, and prints the delivery latency (receive time minus the
// event's server time: client and server share the machine's clock) and,
// given the server's pid, its peak RSS, against the goals (p99 under 50
// ms, RSS under 150 MiB). The goals are printed, never enforced: the exit
// status is 1 only when a watcher missed, duplicated or reordered an event
// or its stream failed, and 2 when the benchmark could not run.
//
//	fanout -addr 127.0.0.1:17170 -repo git://127.0.0.1:19418/fanout.git \
//	  -commit SHA -tag 127.0.0.1:15000/fanout/app:latest -server-pid PID
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"
)

// config is the benchmark's flags.
type config struct {
	addr       string
	watchers   int
	conns      int
	buildID    string
	repo       string
	commit     string
	tag        string
	buildFlags string
	serverPID  int
	every      time.Duration
	timeout    time.Duration
	goalP99    time.Duration
	goalRSS    int64
}

func main() {
	var cfg config
	var goalRSSMiB int64
	flag.StringVar(&cfg.addr, "addr", "127.0.0.1:17070", "the build server's gRPC `ADDRESS` (plaintext, no authentication)")
	flag.IntVar(&cfg.watchers, "watchers", 1000, "WatchBuild streams to open")
	flag.IntVar(&cfg.conns, "conns", 10, "gRPC connections to spread them over")
	flag.StringVar(&cfg.buildID, "build-id", "", "watch this build instead of starting one")
	flag.StringVar(&cfg.repo, "repo", "", "git `URL` of the build to start")
	flag.StringVar(&cfg.commit, "commit", "", "its commit `SHA`")
	flag.StringVar(&cfg.tag, "tag", "", "its image `TAG`")
	flag.StringVar(&cfg.buildFlags, "build-flags", "-x,-a", "comma-separated go build `FLAGS` (-x prints every command: many events)")
	flag.IntVar(&cfg.serverPID, "server-pid", 0, "`PID` of the build server, whose RSS is sampled (0: not sampled)")
	flag.DurationVar(&cfg.every, "rss-interval", 50*time.Millisecond, "how often the server's RSS is sampled")
	flag.DurationVar(&cfg.timeout, "timeout", 20*time.Minute, "give up after this long")
	flag.DurationVar(&cfg.goalP99, "goal-p99", 50*time.Millisecond, "the p99 delivery latency goal")
	flag.Int64Var(&goalRSSMiB, "goal-rss-mib", 150, "the server RSS goal, MiB")
	flag.Parse()
	cfg.goalRSS = goalRSSMiB << 20

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, cfg.timeout)
	defer cancel()

	rep, err := run(ctx, cfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, "fanout:", err)
		os.Exit(2)
	}
	rep.print(os.Stdout, cfg)
	if !rep.ok() {
		os.Exit(1)
	}
}

// flagsOf splits a comma-separated list, dropping empty entries.
func flagsOf(s string) []string {
	var out []string
	for f := range strings.SplitSeq(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}
