package llb

import (
	"context"

	"fmt"

	bkllb "github.com/moby/buildkit/client/llb"
	"github.com/moby/buildkit/solver/pb"
)

// WarmDefinition is what every build with s's builder and base images
// starts from, for a new buildkitd to have in its cache before it is given
// a build: the builder image unpacked, its Go root as the compile step
// mounts it, and the base image's layers. Solving it runs `go version` in
// the builder with no network; nothing of a repository or a tenant is in
// it. Only s.Builder, s.Base, s.BuildPlatform and s.Platform are read.
func WarmDefinition(ctx context.Context, s Spec) (*bkllb.Definition, error) {
	if s.Builder.Ref == "" || s.Base.Ref == "" {
		return nil, fmt.Errorf("%w: warm definition: builder and base images are required", ErrInvalidSpec)
	}
	if s.BuildPlatform.OS == "" || s.BuildPlatform.Architecture == "" {
		return nil, fmt.Errorf("%w: warm definition: build platform is required", ErrInvalidSpec)
	}
	builder, err := parseImageConfig(s.Builder.Config)
	if err != nil {
		return nil, fmt.Errorf("%w: builder image config: %w", ErrInvalidSpec, err)
	}
	st, err := builderState(s, builder)
	if err != nil {
		return nil, err
	}
	platform := s.Platform
	if platform.OS == "" {
		platform = s.BuildPlatform
	}
	base := bkllb.Image(s.Base.Ref, bkllb.Platform(platform))
	const baseDir = "/buildsvc-warm/base"
	// The compile step's mounts that the Go root must not overlap.
	mounts := []string{SourceDir, GoModCachePath, GoCachePath, UserGoCachePath, downloadedDir, OutputDir, baseDir}
	run := st.Run(append([]bkllb.RunOption{
		bkllb.Args([]string{"go", "version"}),
		bkllb.Network(pb.NetMode_NONE),
		bkllb.AddMount(baseDir, base, bkllb.Readonly),
		bkllb.WithCustomName("warm the builder: " + s.Builder.Ref),
	}, goRootMount(st, builder, mounts)...)...)
	def, err := run.Root().Marshal(ctx, bkllb.Platform(s.BuildPlatform))
	if err != nil {
		return nil, fmt.Errorf("marshal warm definition: %w", err)
	}
	return def, nil
}
