package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/buildsvc/buildsvc/buildcache"
	"github.com/buildsvc/buildsvc/buildcache/ocistore"
	"github.com/buildsvc/buildsvc/buildkitd"
	"github.com/buildsvc/buildsvc/modproxy"
	"github.com/buildsvc/buildsvc/server"
)

// startCaches starts what cfg.Caches asks for (the module proxy and its
// listener, the build-cache store, the ephemeral builders), puts them in
// scfg, and returns stop, which shuts them down after the server.
func startCaches(cfg config, log *slog.Logger, reg prometheus.Registerer, scfg *server.Config) (stop func(context.Context), err error) {
	var stops []func(context.Context)
	stop = func(ctx context.Context) {
		for i := len(stops) - 1; i >= 0; i-- {
			stops[i](ctx)
		}
	}
	defer func() {
		if err != nil {
			stop(context.Background())
		}
	}()
	c := cfg.Caches
	if c.ModuleProxyListen != "" {
		opts := []modproxy.Option{
			modproxy.WithLimits(c.ModuleProxyMaxSize, c.ModuleProxyMaxAge),
			modproxy.WithRegisterer(reg),
			modproxy.WithLogger(log.With("component", "modproxy")),
			modproxy.WithGoNoSumDB(cfg.GoNoSumDB),
			modproxy.WithGoPrivate(cfg.GoPrivate),
		}
		if scfg.GoProxy != "" {
			// The builds' upstream is now the proxy's.
			opts = append(opts, modproxy.WithUpstream(scfg.GoProxy))
		}
		p, err := modproxy.New(dirOr(c.ModuleProxyDir, cfg.DataDir, "modproxy"), opts...)
		if err != nil {
			return stop, configError(fmt.Errorf("module proxy: %w", err))
		}
		stops = append(stops, func(context.Context) { _ = p.Close() })
		lis, err := net.Listen("tcp", c.ModuleProxyListen)
		if err != nil {
			return stop, fmt.Errorf("module proxy listen: %w", err)
		}
		url := c.ModuleProxyURL
		if url == "" {
			host, _, _ := net.SplitHostPort(c.ModuleProxyListen)
			if host == "" || net.ParseIP(host).IsUnspecified() {
				lis.Close()
				return stop, configError(errors.New("module-proxy-url: needed when module-proxy-listen names no host"))
			}
			url = "https://" + lis.Addr().String()
		}
		srv := &http.Server{Handler: p.Handler(), ReadHeaderTimeout: time.Minute}
		go func() {
			if err := srv.ServeTLS(lis, c.ModuleProxyTLSCert, c.ModuleProxyTLSKey); err != nil && !errors.Is(err, http.ErrServerClosed) {
				log.Error("module proxy", "err", err)
			}
		}()
		stops = append(stops, func(ctx context.Context) { _ = srv.Shutdown(ctx) })
		log.Info("module proxy listening", "address", lis.Addr().String(), "url", url)
		scfg.ModuleProxy, scfg.ModuleProxyURL = p, url
		scfg.CleanModuleProxy = func(ctx context.Context) (int64, int64, error) {
			r, err := p.Clean(ctx)
			return r.RemovedBytes, r.Bytes, err
		}
		scfg.GoProxy = "" // the builds' GOPROXY is the proxy
	}
	if c.BuildCacheRegistry != "" {
		kc, err := server.RegistryKeychain(cfg.Server.DockerConfigDir)
		if err != nil {
			return stop, configError(fmt.Errorf("build-cache-registry: %w", err))
		}
		st, err := ocistore.New(c.BuildCacheRegistry, remote.WithAuthFromKeychain(kc))
		if err != nil {
			return stop, configError(fmt.Errorf("build-cache-registry: %w", err))
		}
		log.Info("build-cache store in a registry", "repository", st.Repository())
		scfg.BuildCache = st
	} else if c.BuildCacheStore {
		st, err := buildcache.New(dirOr(c.BuildCacheDir, cfg.DataDir, "buildcache"))
		if err != nil {
			return stop, configError(fmt.Errorf("build-cache store: %w", err))
		}
		scfg.BuildCache = st
		scfg.CleanBuildCache = func(ctx context.Context) (int64, int64, error) {
			r, err := st.Clean(ctx, c.BuildCacheMaxSize, c.BuildCacheMaxAge)
			if err != nil {
				return r.Bytes, 0, err
			}
			size, err := st.DiskUsage(ctx)
			return r.Bytes, size, err
		}
	}
	if c.BuilderMode == builderEphemeral {
		l, err := buildkitd.NewLauncher(buildkitd.LauncherConfig{
			StateDir:       filepath.Join(cfg.DataDir, "builders"),
			Binary:         cfg.Managed.Binary,
			ConfigFile:     cfg.Managed.ConfigFile,
			SystemCABundle: cfg.Managed.CABundle,
			ReadyTimeout:   cfg.Managed.StartTimeout,
			// The running builds', the idle ones and those being
			// thrown away in the background.
			MaxInstances: 2*max(scfg.MaxConcurrent, server.DefaultMaxConcurrent) + c.IdleBuilders,
			Logger:       log.With("component", "ephemeral-buildkitd"),
		})
		if err != nil {
			return stop, configError(fmt.Errorf("ephemeral builders: %w", err))
		}
		stops = append(stops, func(ctx context.Context) {
			if err := l.Close(ctx); err != nil {
				log.Error("stopping ephemeral builders", "err", err)
			}
		})
		scfg.Builders = server.EphemeralBuilders(l, c.IdleBuilders)
	}
	return stop, nil
}

// dirOr is dir, or name under the data dir.
func dirOr(dir, dataDir, name string) string {
	if dir != "" {
		return dir
	}
	return filepath.Join(dataDir, name)
}
