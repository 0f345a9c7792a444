package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sync"
	"time"

	"github.com/moby/buildkit/client"
	"github.com/urfave/cli/v2"
	"google.golang.org/grpc"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/reflection"

	"github.com/buildsvc/buildsvc/buildkitd"
	"github.com/buildsvc/buildsvc/credentials"
	"github.com/buildsvc/buildsvc/egress"
	"github.com/buildsvc/buildsvc/metrics"
	"github.com/buildsvc/buildsvc/policy"
	buildv1 "github.com/buildsvc/buildsvc/proto/build/v1"
	"github.com/buildsvc/buildsvc/server"
	"github.com/buildsvc/buildsvc/sharedqueue"
	"github.com/buildsvc/buildsvc/version"
	"github.com/buildsvc/buildsvc/workers"
)

// serve wires the server together and runs it until ctx ends, then shuts
// it down in order: health NOT_SERVING, running builds get the grace period,
// the listeners stop, and last the managed buildkitd (which the builds
// needed) is stopped.
func serve(ctx context.Context, cfg config, log *slog.Logger) error {
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return fmt.Errorf("data dir: %w", err)
	}
	// Listen first: a taken port fails before anything is started. Until
	// the gRPC server serves, connections wait in the backlog.
	lis, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	defer lis.Close()
	var mlis net.Listener
	if cfg.MetricsListen != "" {
		if mlis, err = net.Listen("tcp", cfg.MetricsListen); err != nil {
			return fmt.Errorf("metrics listen: %w", err)
		}
		defer mlis.Close()
	}
	var wlis net.Listener
	if cfg.WebListen != "" {
		if wlis, err = net.Listen("tcp", cfg.WebListen); err != nil {
			return fmt.Errorf("web listen: %w", err)
		}
		defer wlis.Close()
	}
	health := newHealthReporter(log)
	defer func() {
		health.shutdown()
		log.Info("stopped")
	}()

	// buildkitd: the configured workers, or a managed child.
	endpoint := cfg.BuildKit
	var sup *buildkitd.Supervisor
	var pool *workers.Pool[server.BuildKitClient]
	if endpoint.Address == "" {
		sup, err = buildkitd.NewSupervisor(buildkitd.SupervisorConfig{
			Binary:       cfg.Managed.Binary,
			ConfigFile:   cfg.Managed.ConfigFile,
			Dir:          cfg.DataDir,
			Root:         cfg.Managed.Root,
			ReadyTimeout: cfg.Managed.StartTimeout,
			Logger:       log.With("component", "buildkitd"),
			// Check at once when the child exits or comes back, rather
			// than at the next interval. pool is set before Run starts.
			OnChange: func(bool) { pool.Kick() },
		})
		if err != nil {
			return configError(err)
		}
		endpoint = sup.Endpoint()
	}

	// The pool of workers (one, unless buildkit-addr lists more or names
	// them by DNS): builds run on it, its checks are the health service's,
	// and the metrics' disk usage is its workers'.
	endpoints, resolve, err := workers.Parse(endpoint.Address, endpoint, nil)
	if err != nil {
		return configError(err)
	}
	pool, err = workers.New(workers.Config[server.BuildKitClient]{
		Endpoints: endpoints,
		Resolve:   resolve,
		Dial: func(ctx context.Context, e buildkitd.Endpoint) (server.BuildKitClient, error) {
			return buildkitd.Dial(ctx, e)
		},
		MaxBuilds:     cfg.WorkerMaxBuilds,
		TotalBuilds:   cmp.Or(cfg.Server.MaxConcurrent, server.DefaultMaxConcurrent),
		CheckInterval: cfg.CheckInterval,
		Logger:        log.With("component", "workers"),
		OnChange: func(healthy, total int) {
			if healthy > 0 {
				health.buildkitdChanged(true, nil)
				return
			}
			health.buildkitdChanged(false, fmt.Errorf("none of the %d buildkitd workers answers", total))
		},
	})
	if err != nil {
		return configError(err)
	}
	if len(endpoints) > 0 {
		endpoint = endpoints[0]
	}

	if sup != nil {
		supCtx, stopSup := context.WithCancel(context.WithoutCancel(ctx))
		supDone := make(chan error, 1)
		go func() { supDone <- sup.Run(supCtx) }()
		// The managed buildkitd is stopped after everything that uses it.
		defer func() {
			stopSup()
			if err := <-supDone; err != nil {
				log.Error("stopping buildkitd", "err", err)
			}
		}()
		log.Info("waiting for the managed buildkitd", "address", endpoint.Address, "timeout", cfg.Managed.StartTimeout)
		wctx, cancel := context.WithTimeout(ctx, cfg.Managed.StartTimeout)
		err := sup.WaitReady(wctx)
		cancel()
		if err != nil {
			if ctx.Err() != nil {
				return nil // stopped while starting
			}
			return fmt.Errorf("managed buildkitd: %w", err)
		}
	}

	store, err := openHistory(ctx, cfg)
	if err != nil {
		return err
	}
	defer store.Close()
	scfg := cfg.Server
	scfg.BuildKit = endpoint
	scfg.Builders = server.WorkerPool(pool)
	scfg.Store = store
	if cfg.DatabaseURL != "" {
		// Replicas sharing the database share the build queue too.
		name := cfg.ReplicaName
		if name == "" {
			host, _ := os.Hostname()
			name = fmt.Sprintf("%s-%d", host, os.Getpid())
		}
		q, err := sharedqueue.Open(ctx, cfg.DatabaseURL, sharedqueue.Options{Replica: name, Lease: cfg.ReplicaLease,
			Logger: log.With("component", "sharedqueue")})
		if err != nil {
			return fmt.Errorf("database-url %s: %w", maskDSN(cfg.DatabaseURL), err)
		}
		// Closed after the server (deferred first, so it runs later).
		defer func() {
			cctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if err := q.Close(cctx); err != nil {
				log.Warn("leaving the shared queue", "err", err)
			}
		}()
		scfg.Shared = q
		log.Info("sharing the build queue", "replica", name, "lease", cfg.ReplicaLease)
	}
	reg := metrics.NewRegistry()
	vi := version.Get()
	mopts := []metrics.Option{metrics.WithDiskUsage(func(ctx context.Context) ([]*client.UsageInfo, error) {
		var all []*client.UsageInfo
		err := pool.Each(ctx, func(ctx context.Context, _ string, c server.BuildKitClient) error {
			du, err := c.DiskUsage(ctx)
			all = append(all, du...)
			return err
		})
		return all, err
	}), metrics.WithWorkers(func() []metrics.Worker {
		var ws []metrics.Worker
		for _, st := range pool.Status() {
			ws = append(ws, metrics.Worker{Name: st.Name, Healthy: st.Healthy, Running: st.Running, Builds: st.Builds, DiskBytes: st.DiskBytes})
		}
		return ws
	}), metrics.WithBuildInfo(vi.Version, vi.Revision, vi.GoVersion, vi.BuildKit)}
	if q, ok := scfg.Shared.(*sharedqueue.Queue); ok {
		mopts = append(mopts, metrics.WithSharedQueue(q.Counts))
	}
	m, err := metrics.New(reg, mopts...)
	if err != nil {
		return err
	}

	scfg.Observer = m
	scfg.Logger = log
	scfg.Resolver = server.RemoteResolver{Allow: cfg.Egress,
		Limits: egress.NewLimiter(cfg.ResolveConcurrency, cfg.ResolveConcurrencyPerTenant)}
	if cfg.TenantsFile != "" {
		if scfg.Tenants, err = policy.LoadPolicies(cfg.TenantsFile); err != nil {
			return configError(err)
		}
	}
	if scfg.Credentials, err = loadCredentials(cfg); err != nil {
		return configError(err)
	}
	// The caches and builders outlive the builds: stopped after srv.Close.
	stopCaches, err := startCaches(cfg, log, reg, &scfg)
	if err != nil {
		return err
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		stopCaches(cctx)
	}()
	srv, err := server.New(ctx, scfg)
	if err != nil {
		return configError(err)
	}

	// Background work that must outlive the signal: it ends after the
	// builds, before the store is closed (deferred last, so it runs first).
	var bg sync.WaitGroup
	bgCtx, stopBg := context.WithCancel(context.WithoutCancel(ctx))
	defer func() { stopBg(); bg.Wait() }()
	bg.Add(2)
	go func() { defer bg.Done(); pool.Run(bgCtx) }()
	go func() { defer bg.Done(); srv.RunCleanupEvery(bgCtx) }()

	gopts, err := securityOptions(cfg, log)
	if err != nil {
		return configError(err)
	}
	gm, err := metrics.NewGRPCServerMetrics(reg)
	if err != nil {
		return err
	}
	// The call metrics come first: they count the calls that
	// authentication refuses too.
	gopts = append([]grpc.ServerOption{grpc.ChainUnaryInterceptor(gm.UnaryServerInterceptor()),
		grpc.ChainStreamInterceptor(gm.StreamServerInterceptor())}, gopts...)
	gs := grpc.NewServer(append(server.GRPCServerOptions(), gopts...)...)
	buildv1.RegisterBuildServer(gs, srv)
	buildv1.RegisterAdminServiceServer(gs, srv)
	healthpb.RegisterHealthServer(gs, health.hs)
	reflection.Register(gs)
	gm.InitializeMetrics(gs)
	errc := make(chan error, 3)
	go func() { errc <- gs.Serve(lis) }()

	var metricsSrv *http.Server
	metricsAddr := ""
	if mlis != nil {
		metricsAddr = mlis.Addr().String()
		metricsSrv = newMetricsServer(metrics.Handler(reg))
		go func() {
			if err := metricsSrv.Serve(mlis); !errors.Is(err, http.ErrServerClosed) {
				errc <- fmt.Errorf("metrics: %w", err)
			}
		}()
	}

	var webSrv *http.Server
	webAddr := ""
	if wlis != nil {
		if webSrv, err = newWebServer(cfg, gs, log); err != nil {
			return configError(err)
		}
		webAddr = wlis.Addr().String()
		go serveWeb(webSrv, wlis, errc)
	}

	log.Info("serving", "addr", lis.Addr().String(), "web_addr", webAddr, "tls", cfg.TLSCert != "", "mtls", cfg.TLSClientCA != "",
		"authentication", cfg.CallersFile != "", "metrics_addr", metricsAddr,
		"buildkit", endpoint.Address, "managed_buildkitd", cfg.BuildKit.Address == "",
		"builder_image", scfg.BuilderImage, "base_image", scfg.BaseImage,
		"allow_loopback_hosts", cfg.Egress.Loopback, "allow_private_hosts", cfg.Egress.Private,
		"allowed_ports", cfg.Egress.Ports, "allow_any_port", cfg.Egress.AnyPort,
		"builder_mode", cfg.Caches.BuilderMode, "module_proxy", scfg.ModuleProxyURL, "build_cache_store", scfg.BuildCache != nil,
		"cache_scope", cmp.Or(scfg.CacheScope, server.CacheScopeService))

	var serveErr error
	select {
	case err := <-errc:
		serveErr = fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}

	log.Info("shutting down", "grace", cfg.ShutdownGrace)
	health.shutdown()
	sctx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownGrace)
	defer cancel()
	// Running builds first get the grace period, then are interrupted; the
	// streams that follow them end with their last event.
	closeErr := srv.Close(sctx)
	stopped := make(chan struct{})
	go func() { gs.GracefulStop(); close(stopped) }()
	select {
	case <-stopped:
	case <-time.After(5 * time.Second):
		gs.Stop()
	}
	if webSrv != nil {
		wctx, wcancel := context.WithTimeout(context.Background(), 5*time.Second)
		_ = webSrv.Shutdown(wctx)
		wcancel()
	}
	if metricsSrv != nil {
		mctx, mcancel := context.WithTimeout(context.Background(), 5*time.Second)
		_ = metricsSrv.Shutdown(mctx)
		mcancel()
	}
	return errors.Join(serveErr, closeErr)
}

// newMetricsServer serves h on /metrics, with timeouts so that a slow or
// stuck scraper cannot hold connections forever.
func newMetricsServer(h http.Handler) *http.Server {
	mux := http.NewServeMux()
	mux.Handle("/metrics", h)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/" {
			http.NotFound(w, r)
			return
		}
		fmt.Fprintln(w, "buildsvc-server: metrics at /metrics")
	})
	return &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       2 * time.Minute,
	}
}

// configError is an error in the configuration: exit code 2.
func configError(err error) error { return cli.Exit(err.Error(), 2) }

// loadCredentials reads the files of the private-sources options.
func loadCredentials(cfg config) (*credentials.Config, error) {
	c := &credentials.Config{GoPrivate: cfg.GoPrivate, GoNoProxy: cfg.GoNoProxy, GoNoSumDB: cfg.GoNoSumDB}
	var err error
	if cfg.GitCredentialsFile != "" {
		if c.Rules, err = credentials.LoadFile(cfg.GitCredentialsFile); err != nil {
			return nil, fmt.Errorf("git-credentials: %w", err)
		}
	}
	if cfg.KnownHostsFile != "" {
		if c.KnownHosts, err = os.ReadFile(cfg.KnownHostsFile); err != nil {
			return nil, fmt.Errorf("ssh-known-hosts: %w", err)
		}
		if err := credentials.CheckKnownHosts(c.KnownHosts); err != nil {
			return nil, fmt.Errorf("ssh-known-hosts: %s: %w", cfg.KnownHostsFile, err)
		}
	}
	if cfg.CABundleFile != "" {
		if c.CABundle, err = os.ReadFile(cfg.CABundleFile); err != nil {
			return nil, fmt.Errorf("ca-bundle: %w", err)
		}
		if _, err := egress.RootCAsFromPEM(c.CABundle); err != nil {
			return nil, fmt.Errorf("ca-bundle: %s: %w", cfg.CABundleFile, err)
		}
	}
	return c, nil
}
